"""Secret stores against real files, a real environment mapping and a real Secrets Manager
protocol server (moto's, on 127.0.0.1)."""
from __future__ import annotations

import json
import os

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from executor.runtime.secrets import (
    AwsSecretArnStore,
    AwsSecretReference,
    AwsSecretsManagerStore,
    ChainedSecretStore,
    EnvSecretStore,
    FileSecretStore,
    SecretError,
    SecretNotFound,
    SecretRefused,
    SecretsManagerClients,
    find_secret_names,
    json_key_value,
    parse_aws_secrets,
)


@pytest.fixture
def secret_dir(tmp_path):
    base = tmp_path / "secrets"
    base.mkdir()
    (base / "DB_PASSWORD").write_text("from-file\n")
    return base


@pytest.mark.parametrize("written", ["pw\n", "pw\r\n", "pw \t\n", "pw  ", "pw\n\n"])
def test_a_secret_file_gives_its_value_without_trailing_whitespace_as_datahubs_store_does(tmp_path, written):
    """DataHub's FileSecretStore returns the file's text `.rstrip()`ped; a file whose value ends
    in spaces or a tab before its newline gave those on ours, and the source's login failed."""
    (tmp_path / "PW").write_text(written)
    assert FileSecretStore(str(tmp_path), 1024).get("PW") == "pw"
    (tmp_path / "INNER").write_text("p w\tx\n")
    assert FileSecretStore(str(tmp_path), 1024).get("INNER") == "p w\tx", "only the end is stripped"


def test_names_are_found_once_each_in_order():
    """A bare $NAME is a reference only in a value the CLI expands (one holding a ${...})."""
    recipe = "password: ${DB_PASSWORD}\nuser: ${DB_USER}\nagain: ${DB_PASSWORD} ${bad-name}\nnot: $PLAIN"
    assert find_secret_names(recipe) == ["DB_PASSWORD", "DB_USER"]


@pytest.mark.parametrize("reference", ["${../../etc/shadow}", "${/etc/shadow}", "${a/b}", "${..}", "${}",
                                       "${../x:-default}"])
def test_references_that_name_no_variable_are_refused_naming_them(reference):
    with pytest.raises(SecretRefused, match="is refused") as refused:
        find_secret_names(f"source: {{type: file, config: {{password: '{reference}'}}}}")
    assert reference.split(":-")[0].rstrip("}") in str(refused.value)


def test_what_datahub_never_expands_is_not_refused_comments_keys_and_braces_across_values():
    """Only string values are expanded; the check ran over the whole text, so a comment naming a
    vault path, a key that looks like a reference, or a '${' in one value closed by a '}' in a
    later one failed a recipe DataHub's executor runs."""
    recipe = ("# the password lives at ${vault.db/password}\n"
              "source:\n  type: postgres\n  config:\n    password: '${DB_PASSWORD}'\n"
              "    '${not.a.name}': 1\n    prefix: 'costs ${'\n    suffix: '} each'\n")
    assert find_secret_names(recipe) == ["DB_PASSWORD"]
    with pytest.raises(SecretRefused, match="is refused"):
        find_secret_names(recipe + "    bad: '${vault.db/password}'\n")


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


@pytest.mark.parametrize("cap", ["1T", str((1 << 63) - 1)])
def test_a_cap_larger_than_memory_reads_a_small_file(secret_dir, cap):
    """DATAHUB_EXECUTOR_FILE_SECRET_MAXLEN is accepted up to the largest size (sandbox.sizes), and
    the file was read with one os.read of the cap plus a byte, which allocates that much first:
    MemoryError (1T) or OverflowError (the largest), and the runner of every task with a file
    secret failed with a traceback (given back failed; EXECUTOR_ERROR the third time)."""
    from executor.settings import load_settings

    settings = load_settings({"DATAHUB_GMS_URL": "https://acme.acryl.io/gms", "DATAHUB_GMS_TOKEN": "tok-123456",
                              "DATAHUB_EXECUTOR_POOL_ID": "remote", "DATAHUB_EXECUTOR_FILE_SECRET_MAXLEN": cap})
    assert FileSecretStore(str(secret_dir), settings.file_secret_maxlen).get("DB_PASSWORD") == "from-file"


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
    assert store.get("DATAHUB_GMS_TOKEN") is None, "never the executor's own value"
    with pytest.raises(SecretRefused):
        ChainedSecretStore([store]).resolve(["DATAHUB_GMS_TOKEN"])


@pytest.mark.parametrize("name", ["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                  "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                                  "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_SECRET_ACCESS_KEY"])
def test_where_the_executors_aws_role_credentials_come_from_is_no_recipe_secret(name):
    """On ECS the relative URI is all a process needs to fetch the executor's role credentials
    from 169.254.170.2 (tasks reach the network the executor reaches): ${AWS_CONTAINER_...} in a
    recipe handed it to the task, whatever the master named as reserved."""
    store = EnvSecretStore({name: "/v2/credentials/fake-0000-guid"}, reserved={"DATAHUB_GMS_TOKEN"})
    assert store.get(name) is None, "never the executor's own value"
    with pytest.raises(SecretRefused):
        ChainedSecretStore([store]).resolve([name])


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


ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"
VERSION_ID = "b656766c-f156-4c26-b089-9fedae9b2e8b"


@pytest.mark.parametrize("entry, expected", [
    (f"DB={ARN}", AwsSecretReference("DB", ARN)),
    (f"DB={ARN}:password::", AwsSecretReference("DB", ARN, json_key="password")),
    (f"DB={ARN}::AWSPREVIOUS:", AwsSecretReference("DB", ARN, version_stage="AWSPREVIOUS")),
    (f"DB={ARN}:::{VERSION_ID}", AwsSecretReference("DB", ARN, version_id=VERSION_ID)),
    (f"DB={ARN}:password:AWSPENDING:", AwsSecretReference("DB", ARN, "password", "AWSPENDING")),
    (f"DB={ARN}:password::{VERSION_ID}", AwsSecretReference("DB", ARN, "password", None, VERSION_ID)),
    (f"DB={ARN}:::", AwsSecretReference("DB", ARN)),
    (f"  DB = {ARN}:password::  ", AwsSecretReference("DB", ARN, json_key="password")),
])
def test_entries_take_the_arn_in_the_form_ecs_takes_as_value_from(entry, expected):
    assert parse_aws_secrets(entry) == (expected,)


def test_entries_are_comma_separated_and_keep_their_order():
    parsed = parse_aws_secrets(f"B={ARN}:user::,A={ARN}:password::")
    assert [(r.name, r.json_key) for r in parsed] == [("B", "user"), ("A", "password")]
    assert {r.arn for r in parsed} == {ARN}, "the secret's own ARN, what IAM grants on"
    assert parsed[0].region == "us-east-1"


@pytest.mark.parametrize("text, says", [
    (f"DB={ARN}:password", "with all three colons"),
    (f"DB={ARN}:password:", "with all three colons"),
    (f"DB={ARN}:password:AWSCURRENT:{VERSION_ID}", "with all three colons"),  # a stage or an id, as ECS
    (f"DB={ARN}:pass word::", "with all three colons"),
    (f"DB={ARN}:::not-a-version-id", "with all three colons"),
    ("DB=arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db", "not a full Secrets Manager ARN"),
    ("DB=arn:aws:secretsmanager:us-east-1:123456789012:secret:*", "not a full Secrets Manager ARN"),
    ("DB=prod/db", "not a full Secrets Manager ARN"),
    (f"DB={ARN},DB={ARN}:password::", "DB is named twice"),
    (f"1DB={ARN}", "entry 1 ('1DB="),
    (f"DB-PASSWORD={ARN}", "is not NAME=ARN"),
    (f"DB={ARN},", "entry 2 (empty)"),
    (f"DB {ARN}", "is not NAME=ARN"),
])
def test_malformed_entries_are_refused_saying_which_and_why(text, says):
    with pytest.raises(ValueError) as refused:
        parse_aws_secrets(text)
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


DOCUMENT = json.dumps({"username": "app", "password": "pw-from-json", "port": 5432, "options": {"ssl": True},
                       "hosts": ["a", "b"], "empty": None})


@pytest.mark.parametrize("key, value", [("password", "pw-from-json"), ("port", "5432"), ("options", '{"ssl":true}'),
                                        ("hosts", '["a","b"]'), ("empty", "null")])
def test_a_json_key_gives_a_string_as_it_is_and_anything_else_as_its_json_text(key, value):
    assert json_key_value("DB", ARN, DOCUMENT, key) == value


@pytest.mark.parametrize("text", [DOCUMENT, "plain-text-credential-42", '["pw-in-a-list"]', '"pw-in-a-string"', "{"])
def test_a_missing_key_or_a_secret_that_is_no_json_object_is_refused_naming_secret_and_key_never_the_text(text):
    with pytest.raises(SecretRefused) as refused:
        json_key_value("DB_PASSWORD", ARN, text, "nokey")
    message = str(refused.value)
    assert refused.value.reason == "SECRET_REFUSED" and refused.value.name == "DB_PASSWORD"
    assert "DB_PASSWORD" in message and "nokey" in message and ARN in message
    for value in ("pw-from-json", "plain-text-credential-42", "pw-in-a-list", "pw-in-a-string", "app"):
        assert value not in message


@pytest.fixture
def moto_endpoint():
    """moto's server on 127.0.0.1; its state lives in this process, so it is emptied after each test."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    try:
        yield endpoint
    finally:
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch):
    """The executor's own AWS configuration, pointed at moto: what SecretsManagerClients reads."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return moto_endpoint


def admin(endpoint: str, region: str = "us-east-1"):
    return boto3.client("secretsmanager", region_name=region, endpoint_url=endpoint,
                        aws_access_key_id="test", aws_secret_access_key="test")


def test_arns_with_json_keys_resolve_to_the_keys_values_each_from_its_own_region(aws_env):
    east, west = admin(aws_env), admin(aws_env, "eu-west-1")
    db = east.create_secret(Name="prod/db", SecretString=DOCUMENT)["ARN"]
    api = east.create_secret(Name="api-key", SecretString="plain-api-key")["ARN"]
    eu = west.create_secret(Name="eu/token", SecretString="token-from-eu-west-1")["ARN"]
    assert ":eu-west-1:" in eu
    references = parse_aws_secrets(f"DB_PASSWORD={db}:password::,DB_PORT={db}:port::,DB_OPTIONS={db}:options::,"
                                   f"DB_WHOLE={db},API_KEY={api},EU_TOKEN={eu}")
    store = AwsSecretArnStore(references, SecretsManagerClients())
    chain = ChainedSecretStore([store])
    assert chain.resolve(["DB_PASSWORD", "DB_PORT", "DB_OPTIONS", "DB_WHOLE", "API_KEY", "EU_TOKEN"]) == {
        "DB_PASSWORD": "pw-from-json", "DB_PORT": "5432", "DB_OPTIONS": '{"ssl":true}', "DB_WHOLE": DOCUMENT,
        "API_KEY": "plain-api-key", "EU_TOKEN": "token-from-eu-west-1"}
    assert store.get("NOT_NAMED_THERE") is None, "names it does not map are left to the next store"


def test_version_stage_and_version_id_choose_the_version_read(aws_env):
    client = admin(aws_env)
    first = client.create_secret(Name="rotating", SecretString=json.dumps({"password": "first-pw"}))
    client.put_secret_value(SecretId=first["ARN"], SecretString=json.dumps({"password": "second-pw"}))
    arn = first["ARN"]
    store = AwsSecretArnStore(parse_aws_secrets(
        f"NOW={arn}:password::,BEFORE={arn}:password:AWSPREVIOUS:,PINNED={arn}:password::{first['VersionId']},"
        f"WHOLE_BEFORE={arn}::AWSPREVIOUS:"), SecretsManagerClients())
    assert store.get("NOW") == "second-pw"
    assert store.get("BEFORE") == "first-pw"
    assert store.get("PINNED") == "first-pw"
    assert store.get("WHOLE_BEFORE") == json.dumps({"password": "first-pw"})


def test_a_key_the_secret_lacks_is_refused_naming_the_secret_and_the_key(aws_env):
    db = admin(aws_env).create_secret(Name="prod/db", SecretString=DOCUMENT)["ARN"]
    plain = admin(aws_env).create_secret(Name="plain", SecretString="plain-text-credential-42")["ARN"]
    store = AwsSecretArnStore(parse_aws_secrets(f"DB_HOST={db}:host::,PLAIN_USER={plain}:user::"),
                              SecretsManagerClients())
    for name, key in (("DB_HOST", "host"), ("PLAIN_USER", "user")):
        with pytest.raises(SecretRefused) as refused:
            ChainedSecretStore([store]).resolve([name])
        assert refused.value.reason == "SECRET_REFUSED" and refused.value.name == name
        assert f"secret {name}:" in str(refused.value) and f"key {key}" in str(refused.value)
        assert "pw-from-json" not in str(refused.value) and "plain-text-credential-42" not in str(refused.value)


def test_a_named_secret_that_does_not_exist_fails_the_task_as_not_found_naming_it(aws_env):
    gone = "arn:aws:secretsmanager:us-east-1:123456789012:secret:deleted-XyZ123"
    store = AwsSecretArnStore(parse_aws_secrets(f"OLD_PASSWORD={gone}:password::"), SecretsManagerClients())
    with pytest.raises(SecretError) as err:
        ChainedSecretStore([store]).resolve(["OLD_PASSWORD"])
    assert err.value.reason == "SECRET_NOT_FOUND" and err.value.name == "OLD_PASSWORD"
    assert gone in str(err.value) and "DATAHUB_EXECUTOR_AWS_SECRETS" in str(err.value)


def test_secrets_manager_out_of_reach_fails_naming_the_secret_and_the_network(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:9")  # nothing listens there
    store = AwsSecretArnStore(parse_aws_secrets(f"DB_PASSWORD={ARN}:password::"), SecretsManagerClients())
    with pytest.raises(SecretError) as err:
        store.get("DB_PASSWORD")
    assert err.value.reason == "SECRET_ERROR"
    assert str(err.value).startswith("secret DB_PASSWORD: AWS Secrets Manager unreachable")
    assert "HTTPS_PROXY" in str(err.value)


def test_the_chain_asks_files_environment_named_arns_then_secrets_manager_by_name(secret_dir, aws_env):
    client = admin(aws_env)
    mapped = client.create_secret(Name="mapped", SecretString=json.dumps({"password": "from-arn"}))["ARN"]
    client.create_secret(Name="BY_NAME", SecretString="from-name")
    client.create_secret(Name="DB_USER", SecretString="by-name-shadowed")
    chain = ChainedSecretStore([
        FileSecretStore(str(secret_dir), 1 << 20),
        EnvSecretStore({"DB_USER": "from-env"}),
        AwsSecretArnStore(parse_aws_secrets(f"DB_PASSWORD={mapped}:password::,MAPPED={mapped}:password::"),
                          SecretsManagerClients()),
        AwsSecretsManagerStore(client),
    ])
    assert chain.resolve(["DB_PASSWORD", "DB_USER", "MAPPED", "BY_NAME"]) == {
        "DB_PASSWORD": "from-file", "DB_USER": "from-env", "MAPPED": "from-arn", "BY_NAME": "from-name"}
    assert "DATAHUB_EXECUTOR_AWS_SECRETS" in chain.description


@pytest.mark.parametrize("name", ["UV_EXTRA_INDEX_URL", "PIP_INDEX_URL"])
def test_the_executors_package_index_settings_are_no_recipe_secret(tmp_path, monkeypatch, name):
    """Their URLs carry the index's credentials: ${UV_EXTRA_INDEX_URL} in a recipe handed them to
    the task through the executor's environment store."""
    from executor.master import Master
    from executor.settings import load_settings

    monkeypatch.setenv(name, "https://user:fake-index-password@index.example/simple")
    master = Master(load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "unused",
                                   "DATAHUB_EXECUTOR_POOL_ID": "pool", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)}))
    with pytest.raises(SecretRefused):
        master._secret_store().resolve([name])
