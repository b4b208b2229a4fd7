"""DATAHUB_EXECUTOR_AWS_SECRETS as a setting, and `datahub-executor check` probing the secret
stores it is configured with: the real command, against moto's Secrets Manager (and IAM, for a
role without the permission) on 127.0.0.1. DataHub and the package index are left unreachable
here: only the `secret stores` line is under test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from executor.runtime.secrets import aws_problem
from executor.settings import SettingsError, load_settings

EXECUTOR = str(Path(sys.executable).parent / "datahub-executor")
BASE = {"DATAHUB_GMS_URL": "https://acme.acryl.io/gms", "DATAHUB_GMS_TOKEN": "tok-123456",
        "DATAHUB_EXECUTOR_POOL_ID": "remote"}
ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"
DOCUMENT = json.dumps({"username": "app-user-7", "password": "pw-from-json-7"})
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def test_the_setting_is_parsed_at_start():
    settings = load_settings({**BASE, "DATAHUB_EXECUTOR_AWS_SECRETS": f"DB_PASSWORD={ARN}:password::,API_KEY={ARN}"})
    (password, api_key) = settings.aws_secrets
    assert (password.name, password.arn, password.json_key) == ("DB_PASSWORD", ARN, "password")
    assert (api_key.name, api_key.json_key) == ("API_KEY", None)
    assert load_settings(BASE).aws_secrets is None


@pytest.mark.parametrize("value, says", [
    (f"DB_PASSWORD={ARN}:password", "entry 1 (DB_PASSWORD): "),
    (f"DB_PASSWORD={ARN},API_KEY=my-secret-name", "entry 2 (API_KEY): 'my-secret-name' is not a full"),
    (f"DATAHUB_GMS_TOKEN={ARN}", "DATAHUB_GMS_TOKEN is the executor's own setting"),
])
def test_a_bad_entry_stops_the_start_on_one_line_naming_the_setting_and_the_entry(value, says):
    with pytest.raises(SettingsError) as err:
        load_settings({**BASE, "DATAHUB_EXECUTOR_AWS_SECRETS": value})
    message = str(err.value)
    assert message.startswith("DATAHUB_EXECUTOR_AWS_SECRETS is invalid: ") and says in message
    assert "\n" not in message


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "not shown"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetSecretValue")


@pytest.mark.parametrize("code, status, says", [
    ("AccessDeniedException", 400, "AccessDeniedException reading the secret: grant the executor's role "
                                   f"secretsmanager:GetSecretValue on {ARN}"),
    ("403", 403, f"denied (HTTP 403) reading the secret: grant the executor's role secretsmanager:GetSecretValue "
                 f"on {ARN}"),
    ("DecryptionFailure", 400, "grant kms:Decrypt"),
    ("UnrecognizedClientException", 400, "AWS refused the executor's credentials"),
    ("ResourceNotFoundException", 400, "does not exist, or has no such version"),
])
def test_what_secrets_manager_answers_becomes_the_fix_never_its_own_message(code, status, says):
    _, problem = aws_problem(client_error(code, status), "the secret", ARN)
    assert says in problem and "not shown" not in problem


@pytest.fixture
def moto_endpoint():
    """moto's server on 127.0.0.1; its state (and IAM enforcement) lives in this process, so both
    are reset after each test."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    try:
        yield endpoint
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()


def aws(service: str, endpoint: str, key: str = "test", secret: str = "test"):
    return boto3.client(service, region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id=key,
                        aws_secret_access_key=secret)


def run_check(tmp_path: Path, endpoint: str, **settings: str) -> tuple[str, str]:
    """`datahub-executor check` with the given settings; its `secret stores` line, and all it printed."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATAHUB_", "AWS_")) and k.lower() not in PROXY_VARIABLES}
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir(exist_ok=True)
    env.update({
        "DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "tok-not-used-here",
        "DATAHUB_EXECUTOR_POOL_ID": "remote", "PIP_INDEX_URL": "http://127.0.0.1:9/simple/",
        "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(secret_dir), "DATAHUB_EXECUTOR_SANDBOX_MODE": "none",
        "DATAHUB_EXECUTOR_CGROUP_ROOT": f"test-check-{uuid.uuid4().hex[:8]}", "DATAHUB_EXECUTOR_TASK_USER": "none",
        "DATAHUB_EXECUTOR_TASK_PRIVATE_TMP": "false",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
    })
    env.update(settings)
    done = subprocess.run([EXECUTOR, "check"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, "DataHub is unreachable here, so check always fails overall"
    (line,) = [line for line in done.stdout.splitlines() if line[6:].startswith("secret stores:")]
    return line, done.stdout + done.stderr


def test_check_reads_each_named_secret_and_passes_when_all_are_there(tmp_path, moto_endpoint):
    secrets = aws("secretsmanager", moto_endpoint)
    db = secrets.create_secret(Name="prod/db", SecretString=DOCUMENT)["ARN"]
    api = secrets.create_secret(Name="api-key", SecretString="plain-api-key-7")["ARN"]
    line, printed = run_check(tmp_path, moto_endpoint,
                              DATAHUB_EXECUTOR_AWS_SECRETS=f"DB_PASSWORD={db}:password::,API_KEY={api}")
    assert line.startswith("PASS  secret stores: ")
    assert "2 secret(s) of DATAHUB_EXECUTOR_AWS_SECRETS readable (DB_PASSWORD, API_KEY)" in line
    for value in ("pw-from-json-7", "app-user-7", "plain-api-key-7"):
        assert value not in printed


def test_check_fails_naming_each_secret_that_is_missing_or_lacks_its_key_and_no_value(tmp_path, moto_endpoint):
    secrets = aws("secretsmanager", moto_endpoint)
    db = secrets.create_secret(Name="prod/db", SecretString=DOCUMENT)["ARN"]
    gone = "arn:aws:secretsmanager:us-east-1:123456789012:secret:deleted-XyZ123"
    line, printed = run_check(tmp_path, moto_endpoint, DATAHUB_EXECUTOR_AWS_SECRETS=(
        f"DB_PASSWORD={db}:password::,DB_HOST={db}:host::,OLD_TOKEN={gone}"))
    assert line.startswith("FAIL  secret stores: ")
    assert f"secret DB_HOST: {db} has no JSON key host" in line
    assert f"secret OLD_TOKEN: {gone} does not exist, or has no such version: fix DATAHUB_EXECUTOR_AWS_SECRETS" in line
    assert "DB_PASSWORD" not in line, "the readable one is not blamed"
    for value in ("pw-from-json-7", "app-user-7"):
        assert value not in printed


def least_privilege_user(endpoint: str, actions: list[str]) -> dict[str, str]:
    """An IAM user of moto's allowed ACTIONS on secrets and nothing else; its keys as AWS_* variables."""
    iam = aws("iam", endpoint)
    name = f"executor-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="secrets", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_check_reads_with_get_secret_value_which_is_all_a_least_privilege_role_has(tmp_path, moto_endpoint):
    """moto enforces IAM once told to (reset-auth): a role allowed GetSecretValue alone passes, as
    its tasks would work; a role allowed only DescribeSecret fails, naming the secret and the
    permission to grant. (moto answers a denial with HTTP 403 and no Secrets Manager code; AWS
    says AccessDeniedException: both name the permission, see the test of aws_problem above.)"""
    db = aws("secretsmanager", moto_endpoint).create_secret(Name="prod/db", SecretString=DOCUMENT)["ARN"]
    reader = least_privilege_user(moto_endpoint, ["secretsmanager:GetSecretValue"])
    describer = least_privilege_user(moto_endpoint, ["secretsmanager:DescribeSecret"])
    requests.post(f"{moto_endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    named = {"DATAHUB_EXECUTOR_AWS_SECRETS": f"DB_PASSWORD={db}:password::"}
    line, _ = run_check(tmp_path, moto_endpoint, **named, **reader)
    assert line.startswith("PASS  secret stores: ") and "(DB_PASSWORD)" in line
    line, printed = run_check(tmp_path, moto_endpoint, **named, **describer)
    assert line.startswith("FAIL  secret stores: secret DB_PASSWORD: denied (HTTP 403) reading ")
    assert f"grant the executor's role secretsmanager:GetSecretValue on {db}" in line
    assert "pw-from-json-7" not in printed


def test_check_fails_naming_the_secret_and_the_network_when_secrets_manager_is_out_of_reach(tmp_path, moto_endpoint):
    line, _ = run_check(tmp_path, "http://127.0.0.1:9", DATAHUB_EXECUTOR_AWS_SECRETS=f"DB_PASSWORD={ARN}:password::")
    assert line.startswith("FAIL  secret stores: secret DB_PASSWORD: AWS Secrets Manager unreachable reading "
                           f"{ARN} (JSON key password) (EndpointConnectionError): allow outbound HTTPS to "
                           "http://127.0.0.1:9")


def test_check_probes_the_lookup_by_name_for_reachability_and_credentials(tmp_path, moto_endpoint):
    line, _ = run_check(tmp_path, moto_endpoint, DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER="true",
                        AWS_DEFAULT_REGION="us-east-1")
    assert line.startswith("PASS  secret stores: ")
    assert f"by name: {moto_endpoint} reachable, credentials accepted" in line
    line, _ = run_check(tmp_path, moto_endpoint, DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER="true")
    assert "DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER=true needs an AWS region (NoRegionError): set AWS_DEFAULT_REGION" in line


def test_the_masters_store_resolves_named_arns_with_keys_and_names_by_lookup(tmp_path, moto_endpoint, monkeypatch):
    """Master._secret_store, as the running executor builds it from its settings and environment."""
    from types import SimpleNamespace

    from executor.master import Master

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in {"AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_endpoint, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
        monkeypatch.setenv(name, value)
    secrets = aws("secretsmanager", moto_endpoint)
    db = secrets.create_secret(Name="prod/db", SecretString=DOCUMENT)["ARN"]
    secrets.create_secret(Name="BY_NAME", SecretString="by-name-7")
    settings = load_settings({**BASE, "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(tmp_path),
                              "DATAHUB_EXECUTOR_AWS_SECRETS": f"DB_PASSWORD={db}:password::",
                              "DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER": "true"})
    store = Master._secret_store(SimpleNamespace(settings=settings))
    assert store.resolve(["DB_PASSWORD", "BY_NAME"]) == {"DB_PASSWORD": "pw-from-json-7", "BY_NAME": "by-name-7"}
