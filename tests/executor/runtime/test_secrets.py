"""Secret stores against real files, a real environment mapping and a real Secrets Manager
protocol server (moto's, on 127.0.0.1)."""
from __future__ import annotations

import os

import boto3
import pytest
from moto.server import ThreadedMotoServer

from executor.runtime.secrets import (
    AwsSecretsManagerStore,
    ChainedSecretStore,
    EnvSecretStore,
    FileSecretStore,
    SecretNotFound,
    SecretRefused,
    find_secret_names,
)


@pytest.fixture
def secret_dir(tmp_path):
    base = tmp_path / "secrets"
    base.mkdir()
    (base / "DB_PASSWORD").write_text("from-file\n")
    return base


def test_names_are_found_once_each_in_order():
    recipe = "password: ${DB_PASSWORD}\nuser: ${DB_USER}\nagain: ${DB_PASSWORD} not: $PLAIN ${bad-name}"
    assert find_secret_names(recipe) == ["DB_PASSWORD", "DB_USER"]


@pytest.mark.parametrize("reference", ["${../../etc/shadow}", "${/etc/shadow}", "${a/b}", "${..}", "${}",
                                       "${../x:-default}"])
def test_references_that_name_no_variable_are_refused_naming_them(reference):
    with pytest.raises(SecretRefused, match="is refused") as refused:
        find_secret_names(f"source: {{type: file, config: {{password: '{reference}'}}}}")
    assert reference.split(":-")[0].rstrip("}") in str(refused.value)


def test_shell_style_defaults_are_not_secret_references():
    assert find_secret_names("a: ${HOST:-localhost}, b: ${PORT-5432}, c: ${PASSWORD}") == ["PASSWORD"]


def test_file_secrets_are_reread_on_every_lookup(secret_dir):
    store = FileSecretStore(str(secret_dir), 1 << 20)
    assert store.get("DB_PASSWORD") == "from-file"
    (secret_dir / "DB_PASSWORD").write_text("rotated")
    assert store.get("DB_PASSWORD") == "rotated"
    assert store.get("MISSING") is None


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "..", "x y"])
def test_names_that_could_escape_the_directory_are_refused(secret_dir, name):
    with pytest.raises(SecretRefused, match="refused"):
        FileSecretStore(str(secret_dir), 1 << 20).get(name)


def test_a_file_over_the_cap_is_refused_without_reading_it(secret_dir):
    with open(secret_dir / "HUGE", "wb") as f:
        f.truncate(2 << 20)  # sparse: costs no disk
    with pytest.raises(SecretRefused, match="over the 1048576-byte cap") as err:
        FileSecretStore(str(secret_dir), 1 << 20).get("HUGE")
    assert err.value.name == "HUGE"


def test_a_symlink_out_of_the_directory_is_refused(secret_dir):
    os.symlink("/etc/shadow", secret_dir / "SHADOW")
    with pytest.raises(SecretRefused, match="resolves outside"):
        FileSecretStore(str(secret_dir), 1 << 20).get("SHADOW")


def test_kubernetes_style_links_inside_the_directory_are_followed(secret_dir):
    data = secret_dir / "..2026_11_25"
    data.mkdir()
    (data / "TOKEN").write_text("k8s-value")
    os.symlink("..2026_11_25", secret_dir / "..data")
    os.symlink("..data/TOKEN", secret_dir / "TOKEN")
    assert FileSecretStore(str(secret_dir), 1 << 20).get("TOKEN") == "k8s-value"


def test_the_executors_own_credentials_are_not_recipe_secrets():
    store = EnvSecretStore({"DATAHUB_GMS_TOKEN": "x" * 10, "SNOWFLAKE_PASSWORD": "env-value"}, reserved={"DATAHUB_GMS_TOKEN"})
    assert store.get("SNOWFLAKE_PASSWORD") == "env-value"
    with pytest.raises(SecretRefused):
        store.get("DATAHUB_GMS_TOKEN")


@pytest.fixture
def secretsmanager():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        yield boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=endpoint,
                           aws_access_key_id="test", aws_secret_access_key="test")
    finally:
        server.stop()


def test_chain_resolves_files_then_environment_then_secrets_manager(secret_dir, secretsmanager):
    secretsmanager.create_secret(Name="DB_PASSWORD", SecretString="from-aws-shadowed")
    secretsmanager.create_secret(Name="API_KEY", SecretString="from-aws")
    chain = ChainedSecretStore([
        FileSecretStore(str(secret_dir), 1 << 20),
        EnvSecretStore({"DB_USER": "from-env"}),
        AwsSecretsManagerStore(secretsmanager),
    ])
    assert chain.resolve(["DB_PASSWORD", "DB_USER", "API_KEY"]) == {
        "DB_PASSWORD": "from-file", "DB_USER": "from-env", "API_KEY": "from-aws",
    }


def test_a_missing_secret_names_the_secret_and_the_stores_searched(secret_dir, secretsmanager):
    chain = ChainedSecretStore([FileSecretStore(str(secret_dir), 1 << 20), AwsSecretsManagerStore(secretsmanager)])
    with pytest.raises(SecretNotFound) as err:
        chain.resolve(["DB_PASSWORD", "NOPE"])
    assert err.value.name == "NOPE"
    assert err.value.reason == "SECRET_NOT_FOUND"
    assert "from-file" not in str(err.value)
    assert "AWS Secrets Manager" in str(err.value)
