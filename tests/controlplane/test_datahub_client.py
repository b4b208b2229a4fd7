"""DataHub's own client and CLI (acryl-datahub, which nobody on this team wrote) against the
running control plane: ingest and read back, GraphQL, and the answers GMS gives to bad input.
Every aspect the control plane stores or serves is checked with DataHub's schema classes
(acryl-datahub-cloud's for the remote-executor entities)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import acryl_datahub_cloud.metadata.schema_classes as cloud_model
import pytest
import requests
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.emitter.rest_emitter import DatahubRestEmitter
from datahub.emitter.serialization_helper import post_json_transform
from datahub.configuration.common import GraphError, OperationalError
import datahub.metadata.schema_classes as model

from controlplane.testing import running_controlplane

from .conftest import RECIPE

DATASET = "urn:li:dataset:(urn:li:dataPlatform:hive,db.orders,PROD)"
DATAHUB_CLI = str(Path(sys.executable).parent / "datahub")


def stored_aspects(cp) -> list[tuple[str, str, dict]]:
    rows = cp.cp.store.query("SELECT urn, aspect, metadata FROM aspects")
    rows += cp.cp.store.query("SELECT urn, aspect, metadata FROM timeseries_aspects")
    return [(r["urn"], r["aspect"], json.loads(r["metadata"])) for r in rows]


def assert_valid_for_datahub(cp) -> int:
    """Every stored aspect instantiates and validates as DataHub's (Cloud) generated class."""
    checked = 0
    for urn, aspect, value in stored_aspects(cp):
        aspect_class = cloud_model.ASPECT_NAME_MAP[aspect]
        assert aspect_class.from_obj(post_json_transform(value)).validate(), (urn, aspect, value)
        checked += 1
    return checked


def test_an_emitted_aspect_reads_back_through_datahubs_client_with_versions(cp, graph):
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=False)))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.DatasetPropertiesClass(
        description="orders", customProperties={"team": "sales"})))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=True)))
    assert graph.get_aspect(DATASET, model.StatusClass) == model.StatusClass(removed=True)
    assert graph.get_aspect(DATASET, model.StatusClass, version=1) == model.StatusClass(removed=False), "history kept"
    assert graph.get_aspect(DATASET, model.DatasetPropertiesClass).customProperties == {"team": "sales"}
    assert graph.exists(DATASET) and not graph.exists("urn:li:dataset:(urn:li:dataPlatform:hive,db.none,PROD)")
    raw = graph.get_entity_raw(DATASET, ["status"])
    assert raw["aspects"]["status"]["value"] == {"removed": True}
    assert assert_valid_for_datahub(cp) == 3


def test_a_batch_goes_in_whole_and_survives_a_restart(tmp_path):
    with running_controlplane(tmp_path / "cp") as cp:
        emitter = DatahubRestEmitter(cp.gms_url, token=cp.admin_token)
        urns = [f"urn:li:dataset:(urn:li:dataPlatform:hive,db.t{i},PROD)" for i in range(300)]
        emitter.emit_mcps([MetadataChangeProposalWrapper(entityUrn=u, aspect=model.SubTypesClass(typeNames=["Table"]))
                           for u in urns])
        cp.stop()
        cp.start()
        from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig

        graph = DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=cp.admin_token))
        assert all(graph.get_aspect(u, model.SubTypesClass).typeNames == ["Table"] for u in urns[::37])
        assert cp.cp.store.one("SELECT COUNT(*) AS n FROM aspects WHERE aspect='subTypes'")["n"] == 300


def test_datahubs_remote_executor_writes_its_status_the_way_datahub_does(cp, graph):
    """DataHub's own executor heartbeats with an entityKeyAspect MCP and async_flag=False."""
    cp.create_pool("remote", default=True)
    status = cloud_model.RemoteExecutorStatusClass(executorPoolId="remote", executorReleaseVersion="v0.3.9",
                                                   executorAddress="10.0.0.9", executorHostname="worker-7",
                                                   executorUptime=12.5, reportedAt=1)
    mcp = MetadataChangeProposalWrapper(entityType="dataHubRemoteExecutor",
                                        entityKeyAspect=cloud_model.RemoteExecutorKeyClass(id="worker-7-abc"), aspect=status)
    token = cp.create_executor_token(["remote"])
    DatahubRestEmitter(cp.gms_url, token=token).emit_mcp(mcp, async_flag=False)
    assert graph.get_aspect("urn:li:dataHubRemoteExecutor:worker-7-abc", cloud_model.RemoteExecutorStatusClass) == status
    answer = graph.execute_graphql('{ getRemoteExecutor(urn: "urn:li:dataHubRemoteExecutor:worker-7-abc") '
                                   '{ executorPoolId executorHostname executorExpired type } }')
    assert answer["getRemoteExecutor"] == {"executorPoolId": "remote", "executorHostname": "worker-7",
                                           "executorExpired": False, "type": "REMOTE_EXECUTOR"}


GRAPHQL_SOURCE = """mutation($input: UpdateIngestionSourceInput!) { createIngestionSource(input: $input) }"""


def test_the_graphql_operations_remote_execution_needs(cp, graph):
    pool_urn = graph.execute_graphql('mutation { createRemoteExecutorPool(input: {executorPoolId: "remote", '
                                     'description: "vpc-a", isDefault: true}) }')["createRemoteExecutorPool"]
    assert pool_urn == "urn:li:dataHubRemoteExecutorPool:remote"
    graph.execute_graphql('mutation { createRemoteExecutorPool(input: {executorPoolId: "other", isDefault: false}) }')
    assert graph.execute_graphql('mutation { updateRemoteExecutorPool(input: {urn: "urn:li:dataHubRemoteExecutorPool:other", '
                                 'description: "second"}) }') == {"updateRemoteExecutorPool": True}
    pools = graph.execute_graphql("{ listRemoteExecutorPools(input: {start: 0, count: 10}) { total remoteExecutorPools "
                                  "{ urn executorPoolId description isDefault createdAt } } }")["listRemoteExecutorPools"]
    assert pools["total"] == 2
    assert {p["executorPoolId"]: (p["description"], p["isDefault"]) for p in pools["remoteExecutorPools"]} == {
        "remote": ("vpc-a", True), "other": ("second", False)}
    recipe = json.dumps({"source": {"type": "datahub-mock-data", "config": {}}})
    source_urn = graph.execute_graphql(GRAPHQL_SOURCE, variables={"input": {
        "name": "mock", "type": "datahub-mock-data", "schedule": {"interval": "0 * * * *", "timezone": "UTC"},
        "config": {"recipe": recipe, "executorId": "remote", "version": "1.7.0.17", "debugMode": False,
                   "extraArgs": [{"key": "extra_env_vars", "value": '{"EXECUTOR_TASK_WEIGHT": "1/3"}'}]}}})["createIngestionSource"]
    graph.execute_graphql("mutation($urn: String!, $input: UpdateIngestionSourceInput!) { updateIngestionSource(urn: $urn, "
                          "input: $input) }", variables={"urn": source_urn, "input": {
                              "name": "mock", "type": "datahub-mock-data", "config": {"recipe": recipe, "executorId": "other"}}})
    source = graph.execute_graphql("query($urn: String!) { ingestionSource(urn: $urn) { name type config "
                                   "{ executorId recipe } } }", variables={"urn": source_urn})["ingestionSource"]
    assert source == {"name": "mock", "type": "datahub-mock-data", "config": {"executorId": "other", "recipe": recipe}}
    run_urn = graph.execute_graphql("mutation($u: String!) { createIngestionExecutionRequest(input: {ingestionSourceUrn: $u}) }",
                                    variables={"u": source_urn})["createIngestionExecutionRequest"]
    test_urn = graph.execute_graphql("mutation($r: String!) { createTestConnectionRequest(input: {recipe: $r}) }",
                                     variables={"r": recipe})["createTestConnectionRequest"]
    listed = graph.execute_graphql("{ listIngestionSources(input: {start: 0, count: 5}) { total ingestionSources { urn "
                                   "executions(start: 0, count: 5) { total executionRequests { urn id input { task executorId "
                                   "source { type ingestionSource } arguments { key value } } result { status } } } } } }")
    (listed_source,) = listed["listIngestionSources"]["ingestionSources"]
    (run,) = listed_source["executions"]["executionRequests"]
    assert run["urn"] == run_urn and run["input"]["task"] == "RUN_INGEST" and run["input"]["executorId"] == "other"
    assert run["input"]["source"] == {"type": "MANUAL_INGESTION_SOURCE", "ingestionSource": source_urn}
    arguments = {a["key"]: a["value"] for a in run["input"]["arguments"]}
    assert arguments["recipe"] == json.dumps({**json.loads(recipe), "pipeline_name": source_urn}) and run["result"] is None
    requests_page = graph.execute_graphql('{ listExecutionRequests(input: {start: 0, count: 10, filters: [{field: '
                                          '"ingestionSource", values: ["%s"]}]}) { total executionRequests { urn } } }'
                                          % source_urn)["listExecutionRequests"]
    assert [r["urn"] for r in requests_page["executionRequests"]] == [run_urn]
    # A system source (DataHub's own internal kind) and its run: listed only when asked for.
    system_urn = graph.execute_graphql(GRAPHQL_SOURCE, variables={"input": {
        "name": "indexing", "type": "datahub-mock-data", "source": {"type": "SYSTEM"},
        "config": {"recipe": recipe, "executorId": "remote"}}})["createIngestionSource"]
    system_run = graph.execute_graphql("mutation($u: String!) { createIngestionExecutionRequest(input: {ingestionSourceUrn: $u}) }",
                                       variables={"u": system_urn})["createIngestionExecutionRequest"]
    assert graph.get_aspect(system_urn, model.DataHubIngestionSourceInfoClass).source.type == "SYSTEM"

    def runs_listed(system_sources: str) -> set[str]:
        page = graph.execute_graphql("{ listExecutionRequests(input: {start: 0, count: 10%s}) { executionRequests { urn } } }"
                                     % system_sources)["listExecutionRequests"]
        return {r["urn"] for r in page["executionRequests"]}

    assert runs_listed(", systemSources: true") == {system_run}
    assert runs_listed(", systemSources: false") == {run_urn, test_urn}
    assert runs_listed("") == {run_urn, test_urn, system_run}
    graph.execute_graphql("mutation($u: String!) { deleteIngestionSource(urn: $u) }", variables={"u": system_urn})
    tested = graph.execute_graphql("query($u: String!) { executionRequest(urn: $u) { input { task executorId source { type } } "
                                   "source { urn } } }", variables={"u": test_urn})["executionRequest"]
    # DataHub's createTestConnectionRequest names its request's source MANUAL_TEST_CONNECTION.
    assert tested == {"input": {"task": "TEST_CONNECTION", "executorId": "remote", "source": {"type": "MANUAL_TEST_CONNECTION"}},
                      "source": None}, "default pool"
    assert graph.get_aspect(test_urn, model.ExecutionRequestInputClass).source.type == "MANUAL_TEST_CONNECTION"
    cancelled = graph.execute_graphql("mutation($i: CancelIngestionExecutionRequestInput!) { cancelIngestionExecutionRequest("
                                      "input: $i) }", variables={"i": {"ingestionSourceUrn": source_urn,
                                                                       "executionRequestUrn": run_urn}})
    assert cancelled["cancelIngestionExecutionRequest"] == run_urn
    status = graph.execute_graphql("query($u: String!) { executionRequest(urn: $u) { result { status } } }",
                                   variables={"u": run_urn})["executionRequest"]["result"]["status"]
    assert status == "CANCELLED"
    assert graph.execute_graphql('mutation { updateDefaultRemoteExecutorPool(urn: "urn:li:dataHubRemoteExecutorPool:other") }')
    default = graph.execute_graphql("{ defaultRemoteExecutorPool { pool { executorPoolId isDefault } } }")
    assert default == {"defaultRemoteExecutorPool": {"pool": {"executorPoolId": "other", "isDefault": True}}}
    assert graph.execute_graphql("mutation($u: String!) { deleteIngestionSource(urn: $u) }", variables={"u": source_urn})
    assert graph.execute_graphql("query($u: String!) { ingestionSource(urn: $u) { urn } }",
                                 variables={"u": source_urn}) == {"ingestionSource": None}
    assert assert_valid_for_datahub(cp) > 8
    info = graph.get_aspect(pool_urn, cloud_model.RemoteExecutorPoolInfoClass)
    assert info.description == "vpc-a" and info.queueUrl.endswith("-remote") and info.state.status == "READY"
    config = graph.get_aspect("urn:li:dataHubRemoteExecutorGlobalConfig:primary", cloud_model.RemoteExecutorPoolGlobalConfigClass)
    assert config.defaultExecutorPoolId == "other"


@pytest.mark.parametrize("proposal, says", [
    ({"entityType": "dataset", "entityUrn": DATASET, "changeType": "UPSERT", "aspectName": "noSuchAspect",
      "aspect": {"value": "{}", "contentType": "application/json"}}, "Unknown aspect noSuchAspect for entity dataset"),
    ({"entityType": "dataset", "entityUrn": DATASET, "changeType": "UPSERT", "aspectName": "status",
      "aspect": {"value": '{"removed": "yes"}', "contentType": "application/json"}}, "/removed"),
    ({"entityType": "dataset", "entityUrn": DATASET, "changeType": "UPSERT", "aspectName": "status",
      "aspect": {"value": '{"removed": false, "colour": "red"}', "contentType": "application/json"}},
     "unrecognized field found but not allowed"),
    ({"entityType": "dataset", "entityUrn": "urn:li:dataset:(urn:li:dataPlatform:hive,only-two)", "changeType": "UPSERT",
      "aspectName": "status", "aspect": {"value": "{}", "contentType": "application/json"}}, "Invalid urn"),
    ({"entityType": "noSuchEntity", "entityUrn": "urn:li:noSuchEntity:x", "changeType": "UPSERT", "aspectName": "status",
      "aspect": {"value": "{}", "contentType": "application/json"}}, "Unknown entity type"),
    ({"entityType": "dataset", "entityUrn": DATASET, "changeType": "PATCH", "aspectName": "status",
      "aspect": {"value": "[]", "contentType": "application/json-patch+json"}}, "PATCH is not supported"),
])
def test_bad_proposals_are_refused_as_gms_refuses_them_and_nothing_is_stored(cp, graph, proposal, says):
    response = requests.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": proposal},
                             headers={"Authorization": f"Bearer {cp.admin_token}"}, timeout=10)
    assert response.status_code == 400 and says in response.json()["message"]
    good = MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=False))
    bad = MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=False))
    bad_obj = bad.to_obj()
    batch = {"proposals": [good.to_obj(), {**bad_obj, "aspectName": "noSuchAspect"}]}
    assert requests.post(f"{cp.gms_url}/aspects?action=ingestProposalBatch", json=batch,
                         headers={"Authorization": f"Bearer {cp.admin_token}"}, timeout=10).status_code == 400
    assert stored_aspects(cp) == [], "a refused batch stores none of it"
    with pytest.raises(OperationalError) as refused:
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=False)),
                       async_flag=False) if False else DatahubRestEmitter(cp.gms_url, token="dhx_wrong").emit_mcp(good)
    assert refused.value.info.get("status") == 401
    graph.emit_mcp(good)  # and the service goes on
    assert graph.get_aspect(DATASET, model.StatusClass) == model.StatusClass(removed=False)


def test_bad_graphql_gets_graphql_errors_and_the_service_goes_on(cp, graph):
    with pytest.raises(GraphError, match="Syntax Error"):
        graph.execute_graphql("{ listIngestionSources(input: {start: 0 ")
    with pytest.raises(GraphError, match="Cannot query field 'nope'"):
        graph.execute_graphql("{ nope }")
    with pytest.raises(GraphError, match="pool id"):
        graph.execute_graphql('mutation { createRemoteExecutorPool(input: {executorPoolId: "no/slash", isDefault: true}) }')
    response = requests.post(f"{cp.gms_url}/api/graphql", data=b"not json",
                             headers={"Authorization": f"Bearer {cp.admin_token}"}, timeout=10)
    assert response.status_code == 400
    assert graph.execute_graphql("{ listRemoteExecutorPools(input: {start: 0, count: 1}) { total } }") == {
        "listRemoteExecutorPools": {"total": 0}}


def test_unstorable_text_is_refused_and_nothing_breaks(cp, graph):
    """A lone surrogate used to be stored, then every list answered 500 for good."""
    cp.create_pool("p", default=True)
    body = ('{"query": "mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }", "variables": '
            '{"i": {"name": "s", "type": "datahub-mock-data", "config": {"executorId": "p", "recipe": '
            '"source: {type: datahub-mock-data}", "extraArgs": [{"key": "extra_env_vars", "value": '
            '"{\\"X\\": \\"\\\\ud800\\"}"}]}}}}')
    response = requests.post(f"{cp.gms_url}/api/graphql", data=body.encode(),
                             headers={"Authorization": f"Bearer {cp.admin_token}", "Content-Type": "application/json"},
                             timeout=10)
    assert response.status_code == 200 and response.json().get("errors"), response.text
    assert "surrogate" in response.json()["errors"][0]["message"]
    direct = '{"proposal": {"entityType": "dataset", "entityUrn": "%s", "changeType": "UPSERT", "aspectName": "status", ' \
             '"aspect": {"value": "{\\"removed\\": false}", "contentType": "application/json"}, ' \
             '"systemMetadata": {"runId": "\\ud800"}}}' % DATASET
    response = requests.post(f"{cp.gms_url}/aspects?action=ingestProposal", data=direct.encode(),
                             headers={"Authorization": f"Bearer {cp.admin_token}"}, timeout=10)
    assert response.status_code == 400 and "surrogate" in response.json()["message"]
    assert graph.execute_graphql("{ listIngestionSources(input: {start: 0, count: 5}) { total } }") == {
        "listIngestionSources": {"total": 0}}
    assert stored_aspects(cp) and all(a != "status" for _, a, _ in stored_aspects(cp))


def test_a_source_whose_extra_pip_requirements_are_pip_options_is_refused_when_saved(cp, graph):
    """DataHub's client gets a GraphQL error naming the entry, and nothing is stored; a
    requirement in any PEP 508 form is taken."""
    cp.create_pool("p", default=True)

    def create(requirements: list[str]) -> str:
        return graph.execute_graphql(GRAPHQL_SOURCE, variables={"input": {
            "name": "s", "type": "datahub-mock-data", "config": {
                "recipe": "source: {type: datahub-mock-data}", "executorId": "p",
                "extraArgs": [{"key": "extra_pip_requirements", "value": json.dumps(requirements)}]}}})["createIngestionSource"]

    with pytest.raises(GraphError) as refused:
        create(["--python", "/usr/bin/python3", "six"])
    assert "'--python' is a pip option, not a requirement" in str(refused.value)
    assert graph.execute_graphql("{ listIngestionSources(input: {start: 0, count: 5}) { total } }") == {
        "listIngestionSources": {"total": 0}}
    assert create(["six @ https://127.0.0.1:9/six-1.16.0-py2.py3-none-any.whl", "tomli>=2"]).startswith("urn:li:")


@pytest.mark.parametrize("key, value", [("version", "not a version!"), ("recipe", "::: not yaml"), ("debug_mode", "true")])
def test_an_extra_argument_that_would_replace_a_checked_config_value_is_refused_when_saved(cp, graph, key, value):
    """A run's arguments take the source's extraArgs last (as DataHub's resolver merges them): an
    entry named version or recipe replaced the checked config value in every run, unchecked (a
    version the save refuses in config.version ran; a recipe that is no YAML failed every run)."""
    cp.create_pool("p", default=True)
    with pytest.raises(GraphError) as refused:
        graph.execute_graphql(GRAPHQL_SOURCE, variables={"input": {
            "name": "s", "type": "datahub-mock-data", "config": {
                "recipe": "source: {type: datahub-mock-data}", "executorId": "p",
                "extraArgs": [{"key": key, "value": value}]}}})
    assert f"extraArgs may not set {key}" in str(refused.value)


@pytest.mark.parametrize("recipe, said", [
    ({"source": {"type": ""}}, "the recipe's source type must be a plugin name such as mysql"),
    ({"source": {"type": 5}}, "the recipe's source type must be a plugin name such as mysql"),
    ({"source": {"type": "datahub-mock-data"}, "sink": {"type": ""}}, "the recipe's sink type must be a plugin name"),
    ({"source": {"type": "datahub-mock-data"}, "sink": {"type": 5}}, "the recipe's sink type must be a plugin name"),
    ({"source": {"type": "datahub-mock-data"}, "sink": "foo"}, "the recipe's sink section must be a mapping"),
])
def test_a_recipe_whose_sink_or_types_the_executor_refuses_is_refused_when_saved(cp, graph, recipe, said):
    """The executor refuses these at run time (INVALID_RECIPE): they were saved and failed every
    run, and `sink: foo` failed the save with an internal error (AttributeError). DataHub's client
    now gets the refusal through GraphQL and through ingestProposal, and nothing is stored."""
    cp.create_pool("p", default=True)
    kind = recipe["source"]["type"] if isinstance(recipe["source"]["type"], str) else "x"
    with pytest.raises(GraphError) as refused:
        graph.execute_graphql(GRAPHQL_SOURCE, variables={"input": {
            "name": "s", "type": kind, "config": {"recipe": json.dumps(recipe), "executorId": "p"}}})
    assert said in str(refused.value) and "internal" not in str(refused.value).lower()
    with pytest.raises(OperationalError) as refused:
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn="urn:li:dataHubIngestionSource:s", aspect=(
            model.DataHubIngestionSourceInfoClass(name="s", type=kind, config=model.DataHubIngestionSourceConfigClass(
                recipe=json.dumps(recipe), executorId="p")))))
    assert said in str(refused.value)
    assert graph.execute_graphql("{ listIngestionSources(input: {start: 0, count: 5}) { total } }") == {
        "listIngestionSources": {"total": 0}}


def test_a_source_whose_cli_version_or_plugin_no_venv_could_install_is_refused_when_saved(cp, graph):
    """The executor refused these only when the run started (UNKNOWN_VERSION, INVALID_RECIPE):
    the user saving the source heard nothing until then. DataHub's client gets a GraphQL error
    saying what a version may be, nothing is stored, and what the executor takes is taken."""
    cp.create_pool("p", default=True)

    def create(kind: str, version: str | None = None, requirements: list[str] | None = None) -> str:
        config: dict = {"recipe": json.dumps({"source": {"type": kind}}), "executorId": "p"}
        if version is not None:
            config["version"] = version
        if requirements is not None:
            config["extraArgs"] = [{"key": "extra_pip_requirements", "value": json.dumps(requirements)}]
        return graph.execute_graphql(GRAPHQL_SOURCE, variables={"input": {
            "name": "s", "type": kind, "config": config}})["createIngestionSource"]

    mock = "datahub-mock-data"
    refused = {
        "a version no index has": (mock, "banana", None, "version 'banana' is not latest, native, a version such as"),
        "requirement text as version": (mock, "1.0 ; python_version>'0' or acryl-datahub @ file:///srv", None,
                                        "is not latest, native"),
        "a wheel URL and more": (mock, "https://127.0.0.1:9/a.whl x", None, "or a wheel URL"),
        "native with extra requirements": (mock, "native", ["six"], "version native cannot take extra pip requirements"),
        "requirement text as a source type": ("x] @ file:///srv/project#", "1.7.0.17", None,
                                              "is neither a plugin name"),
    }
    for case, (kind, version, requirements, said) in refused.items():
        with pytest.raises(GraphError) as error:
            create(kind, version, requirements)
        assert said in str(error.value), case
    assert graph.execute_graphql("{ listIngestionSources(input: {start: 0, count: 5}) { total } }") == {
        "listIngestionSources": {"total": 0}}
    for kind, version in ((mock, None), (mock, "latest"), (mock, "native"), ("mysql", "1.2.0.4"),
                          ("my.pkg.Source", "https://127.0.0.1:9/acryl_datahub-1.0-py3-none-any.whl")):
        assert create(kind, version).startswith("urn:li:dataHubIngestionSource:")


def test_what_is_not_implemented_answers_as_gms_does(cp):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {cp.admin_token}"
    assert session.post(f"{cp.gms_url}/aspects?action=getCount", json={"aspect": "status"}, timeout=5).status_code == 404
    assert session.get(f"{cp.gms_url}/openapi/v3/entity/dataset", timeout=5).status_code == 404
    assert session.post(f"{cp.gms_url}/usageStats?action=batchIngest", json={}, timeout=5).status_code == 404
    assert requests.get(f"{cp.gms_url}/config", timeout=5).json()["noCode"] == "true", "public, as GMS's"


def datahub_cli(cp, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}
    env.update({"DATAHUB_GMS_URL": cp.gms_url, "DATAHUB_GMS_TOKEN": token or cp.admin_token,
                "DATAHUB_TELEMETRY_ENABLED": "false", "DATAHUB_SKIP_CONFIG": "true"})
    return subprocess.run([DATAHUB_CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def test_datahubs_cli_deploys_a_source_and_lists_its_runs(cp, tmp_path):
    cp.create_pool("remote", default=True)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(RECIPE)
    deployed = datahub_cli(cp, "ingest", "deploy", "--name", "from-the-cli", "-c", str(recipe), "--executor-id", "remote")
    assert deployed.returncode == 0, deployed.stderr + deployed.stdout
    source = cp.cp.sources.get("from-the-cli")
    assert source["info"]["config"]["executorId"] == "remote"
    redeployed = datahub_cli(cp, "ingest", "deploy", "--name", "from-the-cli", "-c", str(recipe), "--executor-id", "remote")
    assert redeployed.returncode == 0 and len(cp.cp.sources.list()) == 1, "deploy is an upsert"
    execution = cp.run_source(source["id"])
    listed = datahub_cli(cp, "ingest", "list-source-runs", "--source", "from-the-cli")
    assert listed.returncode == 0 and execution["id"] in listed.stdout and "from-the-cli" in listed.stdout, listed.stdout


def test_datahubs_cli_shows_what_a_run_wrote(cp, executor_double):
    cp.create_pool("remote", default=True)
    executor = executor_double("remote", "e1")
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    claimed = executor.claim(execution["id"])
    DatahubRestEmitter(cp.gms_url, token=claimed.ingest_token).emit_mcps(
        [MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=False))])
    shown = datahub_cli(cp, "ingest", "show", "--run-id", execution["id"])
    assert shown.returncode == 0 and DATASET in shown.stdout and "status" in shown.stdout, shown.stdout + shown.stderr
    runs = datahub_cli(cp, "ingest", "list-runs")
    assert runs.returncode == 0 and execution["id"] in runs.stdout, runs.stdout + runs.stderr


def test_deleting_a_source_deletes_the_source_its_reference_found(cp, graph):
    # Sources are found by urn, id or name (createIngestionExecutionRequest takes all three); a
    # delete by name answered done and deleted urn:li:dataHubIngestionSource:<the name>, nothing.
    cp.create_pool("remote", default=True)
    kept = cp.create_source("kept", RECIPE)
    cp.create_source("orders", RECIPE)
    delete = "mutation($u: String!) { deleteIngestionSource(urn: $u) }"
    assert graph.execute_graphql(delete, variables={"u": "orders"}) == {"deleteIngestionSource": "orders"}
    assert [s["name"] for s in cp.cp.sources.list()] == ["kept"]
    graph.execute_graphql(delete, variables={"u": kept["urn"]})
    assert cp.cp.sources.list() == []


def test_deleting_a_source_that_is_not_there_answers_its_urn_as_datahub_does(cp, graph):
    # DataHub's DeleteIngestionSourceResolver deletes the urn without looking it up first: a
    # retried delete, or one of a source deleted meanwhile, is done, not a 404 (as deleteSecret).
    cp.create_pool("remote", default=True)
    kept = cp.create_source("kept", RECIPE)
    gone = cp.create_source("gone", RECIPE)
    delete = "mutation($u: String!) { deleteIngestionSource(urn: $u) }"
    for _ in range(2):
        assert graph.execute_graphql(delete, variables={"u": gone["urn"]}) == {"deleteIngestionSource": gone["urn"]}
    never = "urn:li:dataHubIngestionSource:never-was"
    assert graph.execute_graphql(delete, variables={"u": never}) == {"deleteIngestionSource": never}
    assert [s["urn"] for s in cp.cp.sources.list()] == [kept["urn"]]


def test_listings_are_sorted_on_the_field_and_in_the_order_the_sort_names(cp, graph):
    # DataHub's list resolvers hand the SortCriterion to their search index; the sort was ignored
    # for sources, and for runs ASCENDING reversed the listing whatever the field.
    cp.create_pool("remote", default=True)
    sources = {name: cp.create_source(name, RECIPE) for name in ("bravo", "Alpha", "charlie")}
    runs = [cp.run_source(sources[name]["id"])["id"] for name in ("charlie", "Alpha", "bravo", "Alpha")]
    listed_sources = ("query($i: ListIngestionSourcesInput!) { listIngestionSources(input: $i) "
                      "{ total ingestionSources { name } } }")
    listed_runs = ("query($i: ListExecutionRequestsInput!) { listExecutionRequests(input: $i) "
                   "{ total executionRequests { id source { name } } } }")

    def names(field: str, order: str) -> list[str]:
        page = graph.execute_graphql(listed_sources, variables={"i": {"sort": {"field": field, "sortOrder": order}}})
        return [s["name"] for s in page["listIngestionSources"]["ingestionSources"]]

    def run_page(field: str | None = None, order: str | None = None) -> list[tuple[str, str]]:
        sort = {"sort": {"field": field, "sortOrder": order}} if field else {}
        page = graph.execute_graphql(listed_runs, variables={"i": {"count": 10, **sort}})
        return [(r["id"], r["source"]["name"]) for r in page["listExecutionRequests"]["executionRequests"]]

    assert names("name", "ASCENDING") == ["Alpha", "bravo", "charlie"], "without regard to case"
    assert names("name", "DESCENDING") == ["charlie", "bravo", "Alpha"]
    assert [run for run, _ in run_page()] == runs[::-1], "newest first by default"
    assert [run for run, _ in run_page("requestTimeMs", "DESCENDING")] == runs[::-1]
    assert [run for run, _ in run_page("requestTimeMs", "ASCENDING")] == runs
    by_source = run_page("ingestionSource", "ASCENDING")
    assert [name for _, name in by_source] == sorted((name for _, name in by_source),
                                                     key=lambda name: sources[name]["urn"].lower())
    with pytest.raises(GraphError, match="cannot sort on 'lastRun'"):
        names("lastRun", "ASCENDING")
