"""GMS's OpenAPI v3 batchGet (`POST /openapi/v3/entity/{entityName}/batchGet`) on the running
control plane, read with DataHub's own client (DataHubGraph.get_entities, which deserializes each
aspect into DataHub's schema classes) and, for what the client never sends, over plain HTTP."""
from __future__ import annotations

import datahub.metadata.schema_classes as model
import pytest
import requests
from datahub.emitter.mcp import MetadataChangeProposalWrapper

from controlplane import entities as E
from controlplane.gms_openapi import MAX_URNS

from .conftest import RECIPE
from .test_datahub_client import DATASET

OTHER_DATASET = "urn:li:dataset:(urn:li:dataPlatform:hive,db.none,PROD)"


def execution_request(graph, execution_id: str, *, killed: bool = False) -> str:
    urn = E.execution_urn(execution_id)
    aspects = [model.ExecutionRequestInputClass(task="RUN_INGEST", args={"recipe": RECIPE}, executorId="elsewhere",
                                                requestedAt=1_700_000_000_000,
                                                source=model.ExecutionRequestSourceClass(type="MANUAL_INGESTION_SOURCE"))]
    if killed:
        aspects.append(model.ExecutionRequestSignalClass(
            signal="KILL", createdAt=model.AuditStampClass(time=1_700_000_000_001, actor="urn:li:corpuser:datahub")))
    graph.emit_mcps([MetadataChangeProposalWrapper(entityUrn=urn, aspect=aspect) for aspect in aspects])
    return urn


def batch_get(cp, body, *, entity: str = "dataset", query: str = "", token: str | None = None) -> requests.Response:
    return requests.post(f"{cp.gms_url}/openapi/v3/entity/{entity}/batchGet{query}", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {token or cp.admin_token}"})


def test_datahubs_get_entities_reads_the_asked_aspects_of_many_entities_in_one_call(cp, graph):
    killed = [execution_request(graph, f"killed-{i}", killed=True) for i in range(3)]
    running = [execution_request(graph, f"running-{i}") for i in range(3)]
    unknown = E.execution_urn("never-made")

    found = graph.get_entities(E.EXECUTION, [*killed, *running, unknown], [E.EXECUTION_SIGNAL])
    assert set(found) == set(killed), "a urn whose asked aspect is not stored is left out, as GMS leaves it"
    for urn in killed:
        (signal, system_metadata), = found[urn].values()
        assert isinstance(signal, model.ExecutionRequestSignalClass) and signal.validate()
        assert signal.signal == "KILL" and system_metadata is None, "system metadata only when asked for"

    with_metadata = graph.get_entities(E.EXECUTION, running[:1], [E.EXECUTION_INPUT, E.EXECUTION_SIGNAL],
                                       with_system_metadata=True)
    (execution_input, system_metadata), = with_metadata[running[0]].values()
    assert execution_input.validate() and execution_input.executorId == "elsewhere"
    assert isinstance(system_metadata, model.SystemMetadataClass) and system_metadata.validate()


def test_an_entity_with_no_aspect_named_answers_all_it_has_its_key_among_them(cp, graph):
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=False)))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=True)))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.DatasetProfileClass(
        timestampMillis=1_700_000_000_000, rowCount=7)))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.DatasetProfileClass(
        timestampMillis=1_700_000_060_000, rowCount=9)))

    found = graph.get_entities("dataset", [DATASET, OTHER_DATASET], with_system_metadata=True)
    assert set(found) == {DATASET}, "an entity with nothing stored is not in the answer"
    aspects = {name: value for name, (value, _) in found[DATASET].items()}
    assert set(aspects) == {"datasetKey", "status", "datasetProfile"}
    assert all(value.validate() for value in aspects.values())
    assert aspects["status"] == model.StatusClass(removed=True), "the latest version"
    assert aspects["datasetProfile"].rowCount == 9, "a timeseries aspect's newest point"
    assert aspects["datasetKey"] == model.DatasetKeyClass(platform="urn:li:dataPlatform:hive", name="db.orders",
                                                          origin="PROD")


def test_batch_get_reads_its_request_as_gms_does(cp, graph):
    """What DataHub's client never sends but GMS's controller reads: repeats, versions, spellings,
    and an entityName in the path that it never looks at."""
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=False)))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=True)))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.SubTypesClass(typeNames=["Table"])))
    killed = execution_request(graph, "killed", killed=True)

    answer = batch_get(cp, [{"urn": killed, E.EXECUTION_SIGNAL: {}},
                            {"urn": DATASET, "status": {"headers": {"If-Version-Match": "1"}}},
                            {"urn": DATASET, "subtypes": {}},
                            {"urn": killed, "noSuchAspect": {}}], entity="corpuser")
    assert answer.status_code == 200, answer.text
    assert [entity["urn"] for entity in answer.json()] == [killed, DATASET], "in the order asked, each once"
    signal, dataset = answer.json()
    assert set(signal) == {"urn", E.EXECUTION_SIGNAL}, "an unknown name is ignored where another is known"
    assert dataset["status"] == {"value": {"removed": False}}, "If-Version-Match asks for a version"
    assert dataset["subTypes"] == {"value": {"typeNames": ["Table"]}}, "the lower-cased spelling finds its aspect"

    everything = batch_get(cp, [{"urn": DATASET, "noSuchAspect": {}}], query="?systemMetadata=true").json()
    assert set(everything[0]) == {"urn", "datasetKey", "status", "subTypes"}, "only unknown names: all aspects"
    status = everything[0]["status"]
    assert set(status) == {"value", "systemMetadata", "auditStamp"}
    assert model.SystemMetadataClass.from_obj(status["systemMetadata"]).validate()
    assert model.AuditStampClass.from_obj(status["auditStamp"]).validate()

    assert batch_get(cp, [{"urn": OTHER_DATASET}]).json() == [], "nothing stored: an empty list, not a 404"


@pytest.mark.parametrize("body", [
    {"urn": DATASET},  # not a list
    [DATASET],  # not objects
    [{"status": {}}],  # no urn
    [{"urn": "not a urn"}],
    [{"urn": "urn:li:noSuchEntity:x"}],
    [{"urn": DATASET, "status": {"headers": {"If-Version-Match": "latest"}}}],
    [{"urn": DATASET}] * (MAX_URNS + 1),
])
def test_a_request_gms_could_not_read_is_a_400(cp, body):
    answer = batch_get(cp, body)
    assert answer.status_code == 400, (answer.status_code, answer.text[:300])
    assert answer.json()["error"]


def test_batch_get_asks_for_a_token_that_may_read_every_urn_asked_about(cp, graph):
    cp.create_pool("mine", default=True)
    cp.create_pool("theirs")
    mine = cp.run_source(cp.create_source("a", RECIPE)["id"])["urn"]
    theirs = cp.run_source(cp.create_source("b", RECIPE, pool_id="theirs")["id"])["urn"]
    executor_token = cp.create_executor_token(["mine"])

    assert batch_get(cp, [{"urn": mine}], token="not-a-token").status_code == 401
    refused = batch_get(cp, [{"urn": mine}, {"urn": theirs}], token=executor_token, entity=E.EXECUTION)
    assert refused.status_code == 403, "one urn it may not read refuses the whole batch, as GMS does"
    assert refused.json()["error"]
    allowed = batch_get(cp, [{"urn": mine, E.EXECUTION_INPUT: {}}, {"urn": E.execution_urn("never-made")}],
                        token=executor_token, entity=E.EXECUTION)
    assert allowed.status_code == 200, allowed.text
    assert [entity["urn"] for entity in allowed.json()] == [mine]
    assert allowed.json()[0][E.EXECUTION_INPUT]["value"]["executorId"] == "mine"

