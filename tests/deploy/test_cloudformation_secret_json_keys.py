"""SecretNames entries in ECS's valueFrom form, ARN:JSON_KEY:VERSION_STAGE:VERSION_ID: accepted by
the template's AllowedPattern (run through Python's re and java.util.regex) exactly where the
executor's DATAHUB_EXECUTOR_AWS_SECRETS accepts them, handed to ECS whole as ValueFrom, and
granted to both roles as the secret's own ARN, in a stack created in moto's CloudFormation.
The helpers (stack creation, moto's role policies, the JVM) are test_cloudformation.py's."""
from __future__ import annotations

import re

import pytest

from executor.runtime.secrets import parse_aws_secrets
from tests.deploy.test_cloudformation import (
    TEMPLATE,
    aws,  # noqa: F401  (the fixture: moto's AWS for the stack tests)
    container,
    create_stack,
    created_task_definition,
    java_matches,
    load,
    present,
    role_policies,
)

DB = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"
API = "arn:aws:secretsmanager:eu-west-1:210987654321:secret:api.key-GhIjKl"
VERSION_ID = "b656766c-f156-4c26-b089-9fedae9b2e8b"
# (SecretNames, accepted): every one also goes through the executor's parser, which must agree.
CASES = [
    (f"DB_PASSWORD={DB}:password::", True),
    (f"DB_PASSWORD={DB}:password::,DB_USER={DB}:username::,API_KEY={API}", True),
    (f"DB_PASSWORD={DB}::AWSPREVIOUS:", True),
    (f"DB_PASSWORD={DB}:::{VERSION_ID}", True),
    (f"DB_PASSWORD={DB}:password:AWSPENDING:", True),
    (f"DB_PASSWORD={DB}:password::{VERSION_ID}", True),
    (f"DB_PASSWORD={DB}:db.password-2::", True),
    (",".join(f"S{i}={DB}:key{i}::" for i in range(10)), True),
    (",".join(f"S{i}={DB}:key{i}::" for i in range(11)), False),
    (f"DB_PASSWORD={DB}:password", False),  # ECS wants all three colons
    (f"DB_PASSWORD={DB}:password:", False),
    (f"DB_PASSWORD={DB}:password:AWSCURRENT:{VERSION_ID}", False),  # a stage or an id, not both
    (f"DB_PASSWORD={DB}:pass=word::", False),
    (f"DB_PASSWORD={DB}:pass,word::", False),
    (f"DB_PASSWORD={DB}:pass word::", False),
    (f"DB_PASSWORD={DB}:::1234", False),
    ("DB_PASSWORD=arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db:password::", False),  # no suffix
    ("DB_PASSWORD=arn:aws:secretsmanager:us-east-1:123456789012:secret:*:password::", False),
]


def executor_accepts(value: str) -> bool:
    try:
        parse_aws_secrets(value)
    except ValueError:
        return False
    return True


def test_the_template_and_the_executor_accept_the_same_entries(tmp_path):
    pattern = load()["Parameters"]["SecretNames"]["AllowedPattern"]
    expected = [accepted for _, accepted in CASES]
    assert [re.fullmatch(pattern, value) is not None for value, _ in CASES] == expected
    # One grammar (executor/runtime/secrets.py); only the count of ten is the template's own.
    assert [executor_accepts(value) for value, _ in CASES] == [accepted or value.count(",") == 10
                                                               for value, accepted in CASES]
    in_java = java_matches(tmp_path, [(pattern, value) for value, _ in CASES])
    if in_java is None:
        pytest.skip("no java here: the pattern was checked with Python's re only")
    assert in_java == expected, [case for case, ok in zip(CASES, in_java) if ok != case[1]]


def test_the_template_fits_the_template_body_that_create_stack_accepts():
    assert len(TEMPLATE.read_bytes()) < 51_200, "aws cloudformation create-stack --template-body takes 51,200 bytes"


def test_ten_slots_each_pass_valuefrom_whole_and_grant_the_secrets_own_arn():
    template = load()
    secrets = container(template)["Secrets"][1:]
    assert len(secrets) == 10 and all(set(slot) == {"Fn::If"} for slot in secrets)
    execution = template["Resources"]["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    (statement,) = execution["Statement"]
    assert len(statement["Resource"]) == 11, "the token and ten slots"
    for slot in statement["Resource"][1:]:
        condition, arn, otherwise = slot["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"} and set(arn) == {"Fn::Join"}


def test_a_created_stack_hands_ecs_the_json_key_and_grants_the_secret_itself(aws):  # noqa: F811
    entries = {"DB_PASSWORD": f"{DB}:password::", "DB_USER": f"{DB}:username:AWSPREVIOUS:",
               "API_KEY": API, "API_KEY_PINNED": f"{API}:::{VERSION_ID}"}
    create_stack(",".join(f"{name}={value_from}" for name, value_from in entries.items()), "")
    (executor,) = created_task_definition()["containerDefinitions"]
    injected = {s["name"]: s.get("valueFrom") for s in present(executor["secrets"])}
    assert injected == {"DATAHUB_GMS_TOKEN": None, **entries}, "ECS gets each valueFrom whole"
    policies = role_policies()
    _, task_secrets = present(policies["TaskRole"]["Statement"])
    assert task_secrets["Action"] == "secretsmanager:GetSecretValue"
    assert present(task_secrets["Resource"]) == [DB, DB, API, API], "the secrets' own ARNs, no key, no version"
    (injection,) = policies["ExecutionRole"]["Statement"]
    assert present(injection["Resource"]) == [DB, DB, API, API]


def test_ten_secrets_with_json_keys_fill_all_ten_slots(aws):  # noqa: F811
    arns = [f"arn:aws:secretsmanager:us-east-1:123456789012:secret:s{i}-AbCd{i:02d}" for i in range(10)]
    create_stack(",".join(f"S{i}={arn}:key{i}::" for i, arn in enumerate(arns)), "")
    (executor,) = created_task_definition()["containerDefinitions"]
    value_froms = [s.get("valueFrom") for s in present(executor["secrets"])]
    assert value_froms[1:] == [f"{arn}:key{i}::" for i, arn in enumerate(arns)]
    _, task_secrets = present(role_policies()["TaskRole"]["Statement"])
    assert present(task_secrets["Resource"]) == arns
