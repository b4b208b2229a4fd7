"""The ECS CloudFormation template: generated from one definition, linted by cfn-lint, its IAM
exactly as narrow as the issue asks, and created for real in moto's CloudFormation (with two
secrets and two environment variables) to check that the list expansion yields what it should.

moto differences, handled where they show: it leaves AWS::NoValue in lists as None (real
CloudFormation drops the item) and has no CloudFormation support for AWS::SecretsManager::Secret,
so the token's ValueFrom is checked on the template instead of on the created task definition.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import warnings
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws

from executor.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "deploy" / "cloudformation"
TEMPLATE = FOLDER / "datahub-executor.ecs.template.yaml"
CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:dhx-a1b2c3d4-remote"
SECRET_ARNS = {"DB_PASSWORD": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-pass-AbCdEf",
               "API_KEY": "arn:aws:secretsmanager:us-east-1:123456789012:secret:api-key-GhIjKl"}


def load() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CFN_LINT, str(path)], capture_output=True, text=True, timeout=180)


def test_the_committed_template_is_what_the_generator_writes():
    generated = subprocess.run([sys.executable, str(FOLDER / "generate.py")], capture_output=True, text=True,
                               check=True, timeout=60).stdout
    assert TEMPLATE.read_text() == generated, "run: python deploy/cloudformation/generate.py > " + str(TEMPLATE)


def test_cfn_lint_finds_nothing():
    result = lint(TEMPLATE)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout


def test_cfn_lint_really_checks_it(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("Ref: PoolQueueArn", "Ref: PoolQueueArnTypo"))
    result = lint(broken)
    assert result.returncode != 0 and "PoolQueueArnTypo" in result.stdout


def test_the_seeds_parameters_are_there_and_constrained():
    parameters = load()["Parameters"]
    for name in ("VPCID", "SubnetID", "DataHubAccessToken", "DataHubBaseUrl", "ExecutorPoolId", "ImageTag",
                 "SecretNames", "EnvironmentVariables", "PoolQueueArn"):
        assert name in parameters
    assert parameters["DataHubAccessToken"]["NoEcho"] is True
    assert parameters["ImageTag"]["Default"] == "latest"
    assert parameters["VPCID"]["Type"] == "AWS::EC2::VPC::Id"
    assert re.match(parameters["DataHubBaseUrl"]["AllowedPattern"], "https://acme.acryl.io/gms")
    assert not re.match(parameters["DataHubBaseUrl"]["AllowedPattern"], "https://acme.acryl.io")
    secrets = re.compile(parameters["SecretNames"]["AllowedPattern"])
    entries = [f"S{i}={SECRET_ARNS['API_KEY']}" for i in range(11)]
    assert secrets.match(",".join(entries[:10])) and secrets.match("")
    assert not secrets.match(",".join(entries)), "more than 10 secrets is refused"
    assert not secrets.match("../x=" + SECRET_ARNS["API_KEY"])


def test_the_task_role_may_do_exactly_what_the_executor_needs():
    template = load()
    role = template["Resources"]["TaskRole"]["Properties"]
    (policy,) = role["Policies"]
    sqs, secrets = policy["PolicyDocument"]["Statement"]
    assert sqs == {"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                                                 "sqs:ChangeMessageVisibility"], "Resource": {"Ref": "PoolQueueArn"}}
    condition, statement, otherwise = secrets["Fn::If"]
    assert otherwise == {"Ref": "AWS::NoValue"}, "no secrets named, no secrets statement"
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert "*" not in yaml.safe_dump(role), "no wildcard in the task role"
    assert "ManagedPolicyArns" not in role


def test_the_token_reaches_the_container_only_as_a_secret_and_only_settings_are_set():
    (container,) = load()["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert {"Name": "DATAHUB_GMS_TOKEN", "ValueFrom": {"Ref": "AccessTokenSecret"}} in container["Secrets"]
    plain = [e for e in container["Environment"] if "Name" in e]
    assert "DataHubAccessToken" not in yaml.safe_dump(container)
    known = {s.env for s in SETTINGS}
    assert {e["Name"] for e in plain} <= known
    drain = next(e["Value"] for e in plain if e["Name"] == "DATAHUB_EXECUTOR_DRAIN_TIMEOUT")
    assert int(drain) < container["StopTimeout"], "the drain ends before ECS kills the master"
    assert container["HealthCheck"]["Command"] == ["CMD", "datahub-executor", "healthcheck"]
    group = load()["Resources"]["SecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group, "outbound only"


@pytest.fixture
def aws():
    with mock_aws(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # moto: "AWS::SecretsManager::Secret not supported"
        yield


def create_stack(secret_names: str, environment: str) -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    parameters = {"VPCID": vpc, "SubnetID": subnet, "DataHubBaseUrl": "https://acme.acryl.io/gms",
                  "DataHubAccessToken": "not-a-real-token", "ExecutorPoolId": "remote", "PoolQueueArn": QUEUE_ARN,
                  "SecretNames": secret_names, "EnvironmentVariables": environment}
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(StackName="dhx", TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"],
                                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])


def created_container() -> dict:
    ecs = boto3.client("ecs", region_name="us-east-1")
    (arn,) = ecs.list_task_definitions()["taskDefinitionArns"]
    (container,) = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]["containerDefinitions"]
    return container


def role_policies() -> dict[str, dict]:
    iam = boto3.client("iam", region_name="us-east-1")
    policies = {}
    for role in iam.list_roles()["Roles"]:
        for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
            # moto hands the stored document back as the repr of a dict (None for AWS::NoValue)
            policies[role["RoleName"].split("-")[1]] = ast.literal_eval(document) if isinstance(document, str) else document
    return policies


def present(items: list) -> list:
    return [item for item in items if item is not None]  # moto keeps AWS::NoValue as None


def test_a_created_stack_carries_two_secrets_and_two_variables_exactly(aws):
    create_stack(",".join(f"{k}={v}" for k, v in SECRET_ARNS.items()), "DATAHUB_EXECUTOR_LOG_LEVEL=DEBUG,FOO=bar")
    container = created_container()
    secrets = {s["name"]: s.get("valueFrom") for s in present(container["secrets"])}
    assert secrets == {"DATAHUB_GMS_TOKEN": None, **SECRET_ARNS}
    environment = {e["name"]: e["value"] for e in present(container["environment"])}
    assert environment["DATAHUB_EXECUTOR_LOG_LEVEL"] == "DEBUG" and environment["FOO"] == "bar"
    assert environment["DATAHUB_EXECUTOR_POOL_ID"] == "remote"
    assert environment["DATAHUB_GMS_URL"] == "https://acme.acryl.io/gms"
    assert len(environment) == 7 + 2
    task_role = role_policies()["TaskRole"]["Statement"]
    assert task_role[0]["Resource"] == QUEUE_ARN
    assert present(task_role[1]["Resource"]) == list(SECRET_ARNS.values())


def test_a_created_stack_without_secrets_gives_the_task_role_only_the_queue(aws):
    create_stack("", "")
    container = created_container()
    assert [s["name"] for s in present(container["secrets"])] == ["DATAHUB_GMS_TOKEN"]
    assert len(present(container["environment"])) == 7
    (only,) = present(role_policies()["TaskRole"]["Statement"])
    assert only["Action"] == ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
