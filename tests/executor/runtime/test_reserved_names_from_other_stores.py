"""A name the executor reserves (its own settings, its AWS credentials) is never served from the
executor's environment, but another store's secret of that name is a recipe's secret like any
other: ${AWS_ACCESS_KEY_ID} / ${AWS_SECRET_ACCESS_KEY} are what S3, Glue and Athena recipes name,
kept in DataHub's secret store or in DATAHUB_EXECUTOR_AWS_SECRETS. Only a reserved name that no
other store has is refused, with the reason. All values here are fake."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from executor.runtime import network_env
from executor.runtime.rejection import TaskRejected
from executor.runtime.secrets import (AwsSecretArnStore, ChainedSecretStore, EnvSecretStore, FileSecretStore,
                                      ProvidedSecretStore, parse_aws_secrets)
from executor.runtime.tasks import prepare_task
from executor.runtime.venvs import VenvCache
from executor.settings import SETTINGS

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:s3-keys-AbCdEf"
CLAIMED = {"AWS_ACCESS_KEY_ID": "AKIAFAKECLAIMED00000", "AWS_SECRET_ACCESS_KEY": "fake-claimed-secret-key"}
# The executor's own environment: on some hosts it holds keys of its own, which no recipe gets.
EXECUTOR_ENVIRON = {"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "fake-executor-token",
                    "AWS_ACCESS_KEY_ID": "AKIAFAKEEXECUTOR0000", "AWS_SECRET_ACCESS_KEY": "fake-executor-secret"}
S3_RECIPE = json.dumps({"source": {"type": "file", "config": {"path": "/nonexistent", "aws_config": {
    "aws_access_key_id": "${AWS_ACCESS_KEY_ID}", "aws_secret_access_key": "${AWS_SECRET_ACCESS_KEY}"}}}})


def base_stores(tmp_path: Path, environ: dict[str, str]) -> list:
    """The executor's own stores as master._secret_store makes them: files, then the environment."""
    (tmp_path / "secrets").mkdir(exist_ok=True)
    reserved = {setting.env for setting in SETTINGS} | set(network_env.PACKAGE_INDEX)
    return [FileSecretStore(str(tmp_path / "secrets"), 1 << 20), EnvSecretStore(environ, reserved)]


def prepared_secrets(tmp_path: Path, recipe: str, stores: list) -> dict[str, str]:
    prepared = prepare_task("RUN_INGEST", {"recipe": recipe, "version": "native"}, execution_id="exe_reserved",
                            secrets=ChainedSecretStore(stores), venvs=VenvCache(str(tmp_path / "venvs")),
                            work_root=str(tmp_path / "work"), default_version="native",
                            gms_url="http://127.0.0.1:9/gms", ingest_token="dhx_fake_reserved")
    try:
        return json.loads(prepared.stdin_bytes)["__secrets__"]
    finally:
        prepared.cleanup()


@pytest.mark.parametrize("environ", [{}, EXECUTOR_ENVIRON], ids=["environment-without-keys", "environment-with-keys"])
def test_aws_credential_names_are_served_from_datahubs_secret_store(tmp_path, environ):
    stores = [*base_stores(tmp_path, environ), ProvidedSecretStore(CLAIMED)]  # as master.prepare chains them
    assert prepared_secrets(tmp_path, S3_RECIPE, stores) == CLAIMED


def test_aws_credential_names_are_served_from_datahub_executor_aws_secrets(tmp_path):
    class Client:
        meta = SimpleNamespace(endpoint_url="https://127.0.0.1:9")

        def get_secret_value(self, SecretId):
            assert SecretId == ARN
            return {"SecretString": json.dumps({"id": "AKIAFAKEARNSTORE0000", "key": "fake-arn-store-key"})}

    references = parse_aws_secrets(f"AWS_ACCESS_KEY_ID={ARN}:id::,AWS_SECRET_ACCESS_KEY={ARN}:key::")
    stores = [*base_stores(tmp_path, EXECUTOR_ENVIRON), AwsSecretArnStore(references, lambda region: Client())]
    assert prepared_secrets(tmp_path, S3_RECIPE, stores) == {"AWS_ACCESS_KEY_ID": "AKIAFAKEARNSTORE0000",
                                                            "AWS_SECRET_ACCESS_KEY": "fake-arn-store-key"}


def test_a_defaulted_aws_credential_name_is_the_stores_secret_not_the_default(tmp_path):
    recipe = json.dumps({"source": {"type": "file", "config": {"path": "${AWS_ACCESS_KEY_ID:-default-key}"}}})
    stores = [*base_stores(tmp_path, EXECUTOR_ENVIRON), ProvidedSecretStore(CLAIMED)]
    assert prepared_secrets(tmp_path, recipe, stores) == {"AWS_ACCESS_KEY_ID": CLAIMED["AWS_ACCESS_KEY_ID"]}


def test_a_reserved_name_only_the_executors_environment_holds_is_refused_saying_why(tmp_path):
    stores = [*base_stores(tmp_path, EXECUTOR_ENVIRON), ProvidedSecretStore({})]
    with pytest.raises(TaskRejected) as err:
        prepared_secrets(tmp_path, S3_RECIPE, stores)
    assert err.value.reason == "SECRET_REFUSED"
    assert "AWS_ACCESS_KEY_ID is the executor's own setting" in str(err.value)
    assert "AKIAFAKEEXECUTOR0000" not in str(err.value)


def test_a_defaulted_reserved_name_only_the_environment_holds_is_left_to_the_default(tmp_path):
    recipe = json.dumps({"source": {"type": "file", "config": {"path": "${AWS_ACCESS_KEY_ID:-default-key}"}}})
    assert prepared_secrets(tmp_path, recipe, base_stores(tmp_path, EXECUTOR_ENVIRON)) == {}
