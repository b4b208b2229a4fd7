"""DataHub's secret store, through DataHub's own client (acryl-datahub's DataHubGraph) against a
running control plane: the GraphQL operations DataHub publishes for secrets, the aspect as
DataHub's schema class reads it, and what nobody may see: the plaintext on disk, in an error, in
the log, or through a token that is not an admin's."""
from __future__ import annotations

import json
import os
import stat

import datahub.metadata.schema_classes as model
import pytest
from datahub.configuration.common import GraphError, OperationalError
from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig
from hypothesis import given, strategies as st
from requests import HTTPError

from controlplane.secret_cipher import KEY_FILE, SecretCipher
from controlplane.errors import Invalid, Unavailable
from controlplane.graphql_api import SCHEMA_PATH
from executor.runtime.secrets import find_secret_names
from vocabulary import ids

from .conftest import RECIPE, raw

CREATE = "mutation($input: CreateSecretInput!) { createSecret(input: $input) }"
UPDATE = "mutation($input: UpdateSecretInput!) { updateSecret(input: $input) }"
DELETE = "mutation($urn: String!) { deleteSecret(urn: $urn) }"
LIST = ("query($input: ListSecretsInput!) { listSecrets(input: $input) { start count total "
        "secrets { urn name description } } }")
VALUES = "query($input: GetSecretValuesInput!) { getSecretValues(input: $input) { name value } }"
# Values no other part of a test writes, so finding one anywhere means it leaked.
PASSWORD = "pw-7c1f0e9a-plaintext-Ω"
ROTATED = "pw-55d2b8e4-rotated"


def create(graph, name: str, value: str, description: str | None = None) -> str:
    return graph.execute_graphql(CREATE, variables={"input": {"name": name, "value": value,
                                                              "description": description}})["createSecret"]


def values(graph, *names: str) -> dict[str, str]:
    answer = graph.execute_graphql(VALUES, variables={"input": {"secrets": list(names)}})["getSecretValues"]
    return {item["name"]: item["value"] for item in answer}


def listed(graph, **input) -> dict:
    return graph.execute_graphql(LIST, variables={"input": {"start": 0, "count": 20, **input}})["listSecrets"]


def state_files(cp) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in cp.server.state_dir.iterdir() if path.is_file()}


def test_a_secret_is_created_listed_read_updated_and_deleted_through_datahubs_client(cp, graph):
    urn = create(graph, "SNOWFLAKE_PASSWORD", PASSWORD, "the ingestion user's")
    assert urn == "urn:li:dataHubSecret:SNOWFLAKE_PASSWORD", "keyed by its name, as DataHub keys it"
    create(graph, "TOKEN_2", "second")
    assert listed(graph) == {"start": 0, "count": 2, "total": 2, "secrets": [
        {"urn": "urn:li:dataHubSecret:TOKEN_2", "name": "TOKEN_2", "description": None},
        {"urn": urn, "name": "SNOWFLAKE_PASSWORD", "description": "the ingestion user's"}]}, "the newest first"
    assert [s["name"] for s in listed(graph, query="snow")["secrets"]] == ["SNOWFLAKE_PASSWORD"]
    assert listed(graph, start=1, count=1)["secrets"][0]["name"] == "SNOWFLAKE_PASSWORD"

    assert values(graph, "SNOWFLAKE_PASSWORD", "NOT_THERE", "TOKEN_2") == {"SNOWFLAKE_PASSWORD": PASSWORD,
                                                                            "TOKEN_2": "second"}, \
        "only the names that exist, as DataHub answers"

    assert graph.execute_graphql(UPDATE, variables={"input": {"urn": urn, "name": "SNOWFLAKE_PASSWORD",
                                                              "value": ROTATED}}) == {"updateSecret": urn}
    assert values(graph, "SNOWFLAKE_PASSWORD") == {"SNOWFLAKE_PASSWORD": ROTATED}
    assert listed(graph, query="SNOWFLAKE")["secrets"][0]["description"] is None, "the description is replaced too"

    assert graph.execute_graphql(DELETE, variables={"urn": urn}) == {"deleteSecret": urn}
    assert values(graph, "SNOWFLAKE_PASSWORD") == {}
    assert [s["name"] for s in listed(graph)["secrets"]] == ["TOKEN_2"]
    assert not graph.exists(urn)
    assert graph.execute_graphql(DELETE, variables={"urn": urn}) == {"deleteSecret": urn}, "as DataHub: no error"


def test_creating_a_name_that_exists_is_refused_and_the_first_value_stays(cp, graph):
    create(graph, "API_KEY", PASSWORD)
    with pytest.raises(GraphError, match="secret API_KEY already exists"):
        create(graph, "API_KEY", ROTATED)
    assert values(graph, "API_KEY") == {"API_KEY": PASSWORD}


def test_updating_a_secret_that_is_not_there_or_renaming_one_is_refused(cp, graph):
    with pytest.raises(GraphError, match="secret NOPE not found"):
        graph.execute_graphql(UPDATE, variables={"input": {"urn": "urn:li:dataHubSecret:NOPE", "name": "NOPE",
                                                           "value": "x"}})
    urn = create(graph, "KEPT", PASSWORD)
    with pytest.raises(GraphError, match="keeps its name"):
        graph.execute_graphql(UPDATE, variables={"input": {"urn": urn, "name": "RENAMED", "value": "x"}})
    with pytest.raises(GraphError, match="not a secret urn"):
        graph.execute_graphql(DELETE, variables={"urn": "urn:li:dataHubIngestionSource:abc"})
    assert values(graph, "KEPT") == {"KEPT": PASSWORD}


@pytest.mark.parametrize("name", ["with-dash", "has space", "${NAME}", "", "../etc/shadow", "dotted.name",
                                  "line\nbreak", "trailing\n", "x" * 129])
def test_a_name_a_recipe_could_not_reference_is_refused(cp, graph, name):
    with pytest.raises(GraphError, match="a secret name is 1-128 letters, digits or '_'"):
        create(graph, name, PASSWORD)
    assert listed(graph)["total"] == 0


@given(st.text(min_size=1, max_size=130))
def test_every_name_the_store_accepts_is_one_the_executor_substitutes(name):
    """One rule: a stored secret is always reachable as ${NAME} in a recipe."""
    try:
        ids.secret_name(name)
    except ids.InvalidId:
        return
    assert find_secret_names(f"password: ${{{name}}}") == [name]


def test_an_ingest_token_and_an_executor_token_may_neither_read_nor_write_secrets(cp, graph, executor_double):
    urn = create(graph, "DB_PASSWORD", PASSWORD)
    cp.create_pool("remote", default=True)
    executor = executor_double("remote", "e1")
    executor.heartbeat()
    claimed = executor.claim(cp.run_source(cp.create_source("s", RECIPE)["id"])["id"])
    proposal = {"entityType": "dataHubSecret", "entityUrn": urn, "changeType": "UPSERT",
                "aspectName": "dataHubSecretValue",
                "aspect": {"value": '{"name": "DB_PASSWORD", "value": "overwritten"}', "contentType": "application/json"}}
    for token in (claimed.ingest_token, executor.token):
        client = DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=token))
        with pytest.raises(OperationalError) as refused:
            client.execute_graphql(VALUES, variables={"input": {"secrets": ["DB_PASSWORD"]}})
        assert refused.value.info.get("errors"), "GraphQL is for admin tokens"
        with pytest.raises(HTTPError) as refused:
            client.get_aspect(urn, model.DataHubSecretValueClass)
        assert refused.value.response.status_code == 403
        session = raw(cp, token)
        assert session.get(f"{cp.gms_url}/entitiesV2/{urn}", timeout=10).status_code == 403
        answer = session.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": proposal}, timeout=10)
        assert answer.status_code == 403, answer.text
    assert values(graph, "DB_PASSWORD") == {"DB_PASSWORD": PASSWORD}


def test_the_stored_aspect_is_datahubs_with_the_value_encrypted(cp, graph):
    urn = create(graph, "S3_SECRET_KEY", PASSWORD, "backups")
    stored = graph.get_aspect(urn, model.DataHubSecretValueClass)
    assert stored.validate() and isinstance(stored, model.DataHubSecretValueClass)
    assert (stored.name, stored.description) == ("S3_SECRET_KEY", "backups")
    assert stored.created.actor.startswith("urn:li:corpuser:") and stored.created.time > 0
    assert PASSWORD not in stored.value and stored.value, "GET /aspects shows it encrypted, as DataHub does"
    entity = graph.get_entity_raw(urn, ["dataHubSecretValue"])
    assert PASSWORD not in str(entity)
    row = cp.cp.store.one("SELECT metadata FROM aspects WHERE urn=? AND version=0", (urn,))
    assert model.DataHubSecretValueClass.from_obj(json.loads(row["metadata"])).validate()


def test_the_plaintext_is_in_no_file_of_the_state_directory(cp, graph):
    urn = create(graph, "WAREHOUSE_PASSWORD", PASSWORD)
    graph.execute_graphql(UPDATE, variables={"input": {"urn": urn, "name": "WAREHOUSE_PASSWORD", "value": ROTATED}})
    create(graph, "OTHER", PASSWORD + "-other")
    graph.execute_graphql(DELETE, variables={"urn": "urn:li:dataHubSecret:OTHER"})
    files = state_files(cp)
    assert "controlplane.sqlite3" in files
    cp.cp.store.query("PRAGMA wal_checkpoint(FULL)")
    files.update(state_files(cp))  # the database before and after the log was written back
    for name, content in files.items():
        for plaintext in (PASSWORD, ROTATED, PASSWORD + "-other"):
            assert plaintext.encode() not in content, f"{plaintext!r} found in {name}"
    assert values(graph, "WAREHOUSE_PASSWORD") == {"WAREHOUSE_PASSWORD": ROTATED}


def test_the_key_is_made_on_first_use_mode_0600_and_outlives_a_restart(cp, graph):
    key = cp.server.state_dir / KEY_FILE
    assert not key.exists()
    assert values(graph, "ANY") == {}, "reading nothing needs no key"
    create(graph, "KEPT_ACROSS_RESTARTS", PASSWORD)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cp.stop()
    cp.start()
    graph = DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=cp.admin_token))
    assert values(graph, "KEPT_ACROSS_RESTARTS") == {"KEPT_ACROSS_RESTARTS": PASSWORD}


def test_a_secret_written_through_ingest_must_be_encrypted_with_our_key(cp, graph):
    """DataHub would store whatever came; a plaintext would then sit in the database."""
    session = raw(cp, cp.admin_token)
    proposal = {"entityType": "dataHubSecret", "entityUrn": "urn:li:dataHubSecret:RAW", "changeType": "UPSERT",
                "aspectName": "dataHubSecretValue",
                "aspect": {"value": '{"name": "RAW", "value": "%s"}' % PASSWORD, "contentType": "application/json"}}
    answer = session.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": proposal}, timeout=10)
    assert answer.status_code == 400 and "createSecret" in answer.text and PASSWORD not in answer.text
    urn = create(graph, "COPIED", PASSWORD)
    backup = session.get(f"{cp.gms_url}/aspects/{urn}?aspect=dataHubSecretValue", timeout=10).json()
    graph.execute_graphql(DELETE, variables={"urn": urn})
    restored = {**proposal, "entityUrn": urn,
                "aspect": {"value": json.dumps(backup["aspect"]["com.linkedin.secret.DataHubSecretValue"]),
                           "contentType": "application/json"}}
    assert session.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": restored},
                        timeout=10).status_code == 200, "an aspect read back from this control plane restores"
    assert values(graph, "COPIED", "RAW") == {"COPIED": PASSWORD}


def test_a_malformed_request_carrying_a_secret_neither_echoes_nor_logs_it(cp, graph, capfd, caplog):
    with pytest.raises(GraphError) as refused:
        graph.execute_graphql(CREATE, variables={"input": {"name": "X", "value": PASSWORD, "colour": "red"}})
    assert "colour" in str(refused.value) and PASSWORD not in str(refused.value)
    with pytest.raises(GraphError) as refused:
        graph.execute_graphql('mutation { createSecret(input: {name: "X", value: "%s", colour: 1}) }' % PASSWORD)
    assert "colour" in str(refused.value) and PASSWORD not in str(refused.value)
    with pytest.raises(GraphError) as refused:
        graph.execute_graphql(CREATE, variables={"input": {"name": "bad-name", "value": PASSWORD}})
    assert PASSWORD not in str(refused.value)
    captured = capfd.readouterr()
    assert PASSWORD not in captured.out + captured.err + caplog.text
    assert listed(graph)["total"] == 0


def test_a_secret_of_digits_sent_unquoted_is_not_echoed_in_the_error(cp, graph):
    pin = 73914682051
    with pytest.raises(GraphError) as refused:
        graph.execute_graphql(CREATE, variables={"input": {"name": "PIN", "value": pin}})
    assert "String cannot represent" in str(refused.value) and str(pin) not in str(refused.value)
    with pytest.raises(GraphError) as refused:
        graph.execute_graphql('mutation { createSecret(input: {name: "PIN", value: %d}) }' % pin)
    assert "String cannot represent" in str(refused.value) and str(pin) not in str(refused.value)
    with pytest.raises(GraphError) as refused:
        graph.execute_graphql("mutation($v: String!) { createSecret(input: {name: \"PIN\", value: $v}) }",
                              variables={"v": [PASSWORD, 2.5e-3]})
    assert PASSWORD not in str(refused.value) and "0.0025" not in str(refused.value)
    with pytest.raises(GraphError) as refused:  # a bare word: an enum literal where a string belongs
        graph.execute_graphql('mutation { createSecret(input: {name: "WORD", value: S3cr3tValue}) }')
    assert "String cannot represent" in str(refused.value) and "S3cr3tValue" not in str(refused.value)
    assert listed(graph)["total"] == 0


def test_the_cipher_refuses_a_key_others_may_read_and_tokens_of_another_key(tmp_path):
    cipher = SecretCipher(tmp_path / KEY_FILE)
    token = cipher.encrypt(PASSWORD)
    assert PASSWORD not in token and cipher.decrypt(token, "X") == PASSWORD
    other = SecretCipher(tmp_path / "other" / KEY_FILE)
    (tmp_path / "other").mkdir()
    other.encrypt("another key made")
    with pytest.raises(Invalid, match="not encrypted with this control plane's key"):
        other.check(token, "X")
    with pytest.raises(Unavailable, match="encrypted with another key"):
        other.decrypt(token, "X")
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(Unavailable, match=f"chmod 600 {tmp_path / KEY_FILE}"):
        SecretCipher(tmp_path / KEY_FILE).decrypt(token, "X")


def test_a_key_file_that_cannot_be_read_is_refused_saying_which_and_why(tmp_path):
    """A directory where the key belongs (a volume mounted on the file's path): a bare
    IsADirectoryError reached the API as an internal error naming neither."""
    (tmp_path / KEY_FILE).mkdir()
    with pytest.raises(Unavailable, match=f"the secret key {tmp_path / KEY_FILE} is not a regular file"):
        SecretCipher(tmp_path / KEY_FILE).encrypt("x")


def test_a_lost_key_is_not_silently_replaced_while_its_secrets_remain(cp, graph):
    create(graph, "ORPHANED", PASSWORD)
    cp.stop()
    (cp.server.state_dir / KEY_FILE).unlink()
    cp.start()
    graph = DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=cp.admin_token))
    with pytest.raises(GraphError, match="is missing"):
        values(graph, "ORPHANED")
    with pytest.raises(GraphError, match="delete those secrets"):
        create(graph, "NEW", "x")
    graph.execute_graphql(DELETE, variables={"urn": "urn:li:dataHubSecret:ORPHANED"})
    create(graph, "NEW", "x")
    assert values(graph, "NEW") == {"NEW": "x"}


def test_the_schema_serves_datahubs_secret_operations():
    from graphql import build_schema

    schema = build_schema(SCHEMA_PATH.read_text())
    assert {"listSecrets", "getSecretValues"} <= set(schema.query_type.fields)
    assert {"createSecret", "updateSecret", "deleteSecret"} <= set(schema.mutation_type.fields)


def test_graphql_logs_only_our_own_failures_and_never_the_request():
    from graphql import GraphQLError
    from loguru import logger

    from controlplane.graphql_api import _OUR_FAILURES

    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR", format="{message}")
    try:
        _OUR_FAILURES.error(GraphQLError(f"found: {{'value': '{PASSWORD}'}}"))
        _OUR_FAILURES.error(GraphQLError("refused", original_error=Invalid("secret X already exists")))
        try:
            raise RuntimeError("a bug of ours")
        except RuntimeError as exc:
            _OUR_FAILURES.error(GraphQLError("a bug of ours", path=["createSecret"], original_error=exc))
    finally:
        logger.remove(sink)
    assert len(lines) == 1 and "GraphQL createSecret failed" in lines[0] and "RuntimeError: a bug of ours" in lines[0]
