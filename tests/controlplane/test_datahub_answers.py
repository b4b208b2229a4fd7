"""Answers DataHub's own client reads the way GMS gives them: an entity's key aspect in every
EntityResponse (GMS's EntityV2Resource adds it, asked for or not, stored or not), GMS's
GraphQL limits (graphql-java's parser tokens, DataHub's query depth and complexity), which
refuse a query built to pin the CPU before any of it runs, and the create-if-not-exists change
types (CREATE, CREATE_ENTITY), which never overwrite."""
from __future__ import annotations

import time
from urllib.parse import quote

import datahub.metadata.schema_classes as model
import pytest
from datahub.configuration.common import GraphError, OperationalError
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from graphql import parse

from controlplane import entities as E
from controlplane import graphql_limits
from controlplane.executions import input_for_source

from .conftest import RECIPE, raw
from .test_datahub_client import DATASET

MISSING = "urn:li:dataset:(urn:li:dataPlatform:hive,db.none,PROD)"


def dataset_key(name: str) -> model.DatasetKeyClass:
    return model.DatasetKeyClass(platform="urn:li:dataPlatform:hive", name=name, origin="PROD")


def test_every_entity_response_carries_the_key_aspect_as_gms_adds_it(cp, graph):
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=False)))
    # DataHub's client promises the key aspect in a full entity ("will always be present").
    assert graph.get_entity_semityped(DATASET) == {"status": model.StatusClass(removed=False),
                                                   "datasetKey": dataset_key("db.orders")}
    # Asked for other aspects only, GMS still adds the key, built from the urn by its system actor.
    asked = graph.get_entity_raw(DATASET, ["status"])
    assert set(asked["aspects"]) == {"status", "datasetKey"}
    key = asked["aspects"]["datasetKey"]
    assert (key["name"], key["version"], key["type"], key["created"]["actor"]) == (
        "datasetKey", 0, "VERSIONED", "urn:li:corpuser:__datahub_system")
    # An entity that is not stored answers with its key alone, never a 404: the client reads it
    # as "no aspects", and tells existence through the key aspect's own endpoint.
    assert graph.get_aspects_for_entity(MISSING, ["status"], [model.StatusClass]) == {"status": None}
    assert graph.get_entity_semityped(MISSING) == {"datasetKey": dataset_key("db.none")}
    assert not graph.exists(MISSING) and graph.exists(DATASET)
    # Our own entities get theirs the same way.
    cp.create_pool("remote", default=True)
    source = cp.create_source("mock", RECIPE)
    assert graph.get_entity_semityped(source["urn"])["dataHubIngestionSourceKey"] == \
        model.DataHubIngestionSourceKeyClass(id=source["id"])

    session = raw(cp, cp.admin_token)
    ids = ",".join(quote(urn, safe="") for urn in (DATASET, MISSING))
    batch = session.get(f"{cp.gms_url}/entitiesV2?ids=List({ids})&aspects=List(status)", timeout=10)
    assert batch.status_code == 200, batch.text[:300]
    assert batch.json()["errors"] == {}
    results = batch.json()["results"]
    assert {urn: set(entity["aspects"]) for urn, entity in results.items()} == {
        DATASET: {"status", "datasetKey"}, MISSING: {"datasetKey"}}
    assert model.DatasetKeyClass.from_obj(results[MISSING]["aspects"]["datasetKey"]["value"]) == dataset_key("db.none")
    # GMS's alwaysIncludeKeyAspect=false leaves it out (and answers 200 with what is stored).
    single = f"{cp.gms_url}/entitiesV2/{quote(DATASET, safe='')}?aspects=List(status)"
    assert set(session.get(f"{single}&alwaysIncludeKeyAspect=false", timeout=10).json()["aspects"]) == {"status"}
    assert session.get(f"{single}&alwaysIncludeKeyAspect=maybe", timeout=10).status_code == 400


def test_create_and_create_entity_write_only_what_is_not_there_yet(cp, graph):
    def emit(change_type: str, aspect, urn: str = DATASET) -> None:
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=urn, aspect=aspect, changeType=change_type))

    emit(model.ChangeTypeClass.CREATE, model.StatusClass(removed=False))
    assert graph.get_aspect(DATASET, model.StatusClass) == model.StatusClass(removed=False)
    with pytest.raises(OperationalError, match="CREATE: status of .* already exists"):
        emit(model.ChangeTypeClass.CREATE, model.StatusClass(removed=True))
    emit(model.ChangeTypeClass.CREATE, model.SubTypesClass(typeNames=["Table"]))  # another aspect: not there yet
    with pytest.raises(OperationalError, match="CREATE_ENTITY: .* already exists"):
        emit(model.ChangeTypeClass.CREATE_ENTITY, model.DatasetPropertiesClass(description="second"))
    emit(model.ChangeTypeClass.CREATE_ENTITY, model.StatusClass(removed=False), MISSING)
    assert graph.get_aspect(DATASET, model.StatusClass) == model.StatusClass(removed=False), "never overwritten"
    assert graph.get_aspect(DATASET, model.StatusClass, version=1) is None, "and no version written"
    assert graph.get_aspect(DATASET, model.DatasetPropertiesClass) is None
    assert graph.get_aspect(DATASET, model.SubTypesClass) == model.SubTypesClass(typeNames=["Table"])
    assert graph.exists(MISSING)
    emit(model.ChangeTypeClass.UPSERT, model.StatusClass(removed=True))  # UPSERT is the one that overwrites
    assert graph.get_aspect(DATASET, model.StatusClass) == model.StatusClass(removed=True)


def runs_nested(source_urn: str, cycles: int) -> str:
    """A source's runs, each run's source, its runs, ... CYCLES times: each cycle is three levels
    deeper and multiplies the work by the number of runs (the schema's own cycle, DataHub's too)."""
    inner = "urn"
    for _ in range(cycles):
        inner = f"source {{ executions {{ executionRequests {{ {inner} }} }} }}"
    return f'{{ ingestionSource(urn: "{source_urn}") {{ executions {{ executionRequests {{ {inner} }} }} }} }}'


def test_a_query_past_datahubs_depth_complexity_or_token_limits_is_refused_before_it_runs(cp, graph):
    cp.create_pool("remote", default=True)
    source = cp.create_source("mock", RECIPE)
    for _ in range(3):
        cp.ingest(E.execution_urn(cp.cp.executions.new_id()), E.EXECUTION_INPUT,
                  input_for_source(cp.cp.sources.get(source["urn"]), "RUN_INGEST"))
    # Depth 52: 3^16 run lists to resolve if it ran (9 cycles alone took ~17 s here); run, it
    # ends in the client's read timeout, not this refusal. No clock is read: a loaded machine
    # made a 10 s bound fail once.
    with pytest.raises(GraphError, match=r"maximum query depth exceeded 52 > 50"):
        graph.execute_graphql(runs_nested(source["urn"], 16))

    # 667 aliased fields of complexity 3: 2001 > 2000.
    wide = "{ " + " ".join(f"a{i}: defaultRemoteExecutorPool {{ pool {{ urn }} }}" for i in range(667)) + " }"
    with pytest.raises(GraphError, match=r"maximum query complexity exceeded 2001 > 2000"):
        graph.execute_graphql(wide)
    # 12,000 aliased run lists fit in the 1 MiB body; parsing alone took seconds of CPU.
    huge = "{ " + " ".join(f"a{i}: listExecutionRequests(input: {{start: 0, count: 1000}}) {{ total }}"
                           for i in range(12000)) + " }"
    with pytest.raises(GraphError, match="more than 15000 tokens"):
        graph.execute_graphql(huge)

    # Queries within the limits run as before.
    assert len(graph.execute_graphql(runs_nested(source["urn"], 1))["ingestionSource"]["executions"][
        "executionRequests"]) == 3
    assert graph.execute_graphql(wide.replace("a666: defaultRemoteExecutorPool { pool { urn } }", ""))["a0"] == {
        "pool": {"urn": "urn:li:dataHubRemoteExecutorPool:remote"}}


def fields_nested(depth: int) -> str:
    return "{ " + "a { " * (depth - 1) + "b" + " }" * (depth - 1) + " }"


@pytest.mark.parametrize("document, refusal", [
    (fields_nested(50), None),
    (fields_nested(51), "maximum query depth exceeded 51 > 50"),
    ("{ " + "a " * 2000 + "}", None),
    ("{ " + "a " * 2001 + "}", "maximum query complexity exceeded 2001 > 2000"),
    # fragments and inline fragments add no depth of their own; a fragment counts where it is spread
    ("{ x { ...F ... on T { y { z } } } } fragment F on T { p { q } }", None),
    ("{ ...F ...F } fragment F on Query { " + "a " * 1000 + "}", None),
    ("{ ...F ...F } fragment F on Query { " + "a " * 1001 + "}", "maximum query complexity exceeded 2002 > 2000"),
    ("{ x { ...F } } fragment F on T { " + "a { " * 49 + "b" + " }" * 49 + " }",
     "maximum query depth exceeded 51 > 50"),
])
def test_depth_and_complexity_are_measured_as_graphql_java_measures_them(document, refusal):
    errors = graphql_limits.check(parse(document), None)
    assert [e.message for e in errors] == ([refusal] if refusal else [])
    assert all(e.extensions == {"classification": "ExecutionAborted"} for e in errors)


def test_a_chain_of_fragments_each_spread_twice_is_measured_without_expanding_it():
    # 2^400 fields once expanded; measured in one pass over the fragments.
    chain = " ".join(f"fragment F{i} on T {{ a: x {{ ...F{i + 1} }} b: x {{ ...F{i + 1} }} }}" for i in range(400))
    started = time.monotonic()
    errors = graphql_limits.check(parse("{ ...F0 } " + chain + " fragment F400 on T { leaf }"), None)
    assert time.monotonic() - started < 5
    assert [e.message for e in errors] == ["maximum query depth exceeded 401 > 50"]
    shallow = " ".join(f"fragment G{i} on T {{ a: x ...G{i + 1} b: y ...G{i + 1} }}" for i in range(400))
    errors = graphql_limits.check(parse("{ ...G0 } " + shallow + " fragment G400 on T { leaf }"), None)
    assert [e.message for e in errors] == [f"maximum query complexity exceeded {(1 << 31) - 1} > 2000"]


def test_nested_lists_within_datahubs_limits_are_stopped_by_the_rows_they_look_at(cp, graph, monkeypatch):
    """DataHub's limits count fields, not list items: 15 cycles of a source's runs' source's runs
    pass them (depth 47) and would resolve 4^15 run lists. The rows a request's lists look at are
    budgeted (graphql_api.WORK_LIMIT; lowered here so the refusal comes in milliseconds)."""
    from controlplane import graphql_api

    monkeypatch.setattr(graphql_api, "WORK_LIMIT", 2_000)
    cp.create_pool("remote", default=True)
    source = cp.create_source("mock", RECIPE)
    for _ in range(4):
        cp.ingest(E.execution_urn(cp.cp.executions.new_id()), E.EXECUTION_INPUT,
                  input_for_source(cp.cp.sources.get(source["urn"]), "RUN_INGEST"))
    with pytest.raises(GraphError, match="more than 2000 rows"):
        graph.execute_graphql(runs_nested(source["urn"], 15))
    aliased = "{ " + " ".join(f"a{i}: listExecutionRequests(input: {{count: 1}}) {{ total }}" for i in range(600)) + " }"
    with pytest.raises(GraphError, match="more than 2000 rows"):
        graph.execute_graphql(aliased)
    assert len(graph.execute_graphql(runs_nested(source["urn"], 2))["ingestionSource"]["executions"][
        "executionRequests"]) == 4, "an ordinary nesting still answers"


def test_runs_are_listed_filtered_and_counted_past_the_newest_thousand(cp, graph):
    """The listing looked at the newest 1000 runs only: an older source's runs filtered to none,
    the total stopped at 1000, and the oldest run was never first in ascending order."""
    cp.create_pool("remote", default=True)
    old, busy = cp.create_source("old", RECIPE), cp.create_source("busy", RECIPE)
    first = [cp.run_source(old["id"])["id"] for _ in range(3)]
    with cp.cp.store.transaction() as tx:  # 1000 newer runs of another source, written in one go
        for index in range(1000):
            tx.execute("INSERT INTO executions (id, pool_id, task, source_urn, status, created_at, finished_at) "
                       "VALUES (?,?,?,?,?,?,?)", (f"bulk-{index:04d}", "remote", "RUN_INGEST", busy["urn"], "SUCCESS",
                                                  time.time() + 1 + index, time.time() + 2 + index))
    listing = graph.execute_graphql("""query($source: String!) {
      of: listExecutionRequests(input: {filters: [{field: "ingestionSource", values: [$source]}]}) { total }
      all: listExecutionRequests(input: {count: 1}) { total }
      oldest: listExecutionRequests(input: {count: 1, sort: {field: "requestTimeMs", sortOrder: ASCENDING}}) {
        executionRequests { id } } }""", variables={"source": old["urn"]})
    assert listing["of"]["total"] == 3
    assert listing["all"]["total"] == 1003
    assert listing["oldest"]["executionRequests"][0]["id"] == first[0]


def test_a_source_without_a_pool_named_lists_with_the_default_and_runs_hide_system_ones(cp, graph):
    """executorId is optional in DataHub's model (the default pool) but String! in its schema: one
    such source nulled the whole listIngestionSources, and with it the web page's refresh."""
    cp.create_pool("remote", default=True)
    cp.create_source("made-by-the-ui", RECIPE)
    cp.ingest("urn:li:dataHubIngestionSource:cli-made", "dataHubIngestionSourceInfo",
              {"name": "cli-made", "type": "datahub-mock-data", "config": {"recipe": RECIPE}})
    cp.ingest("urn:li:dataHubIngestionSource:system-one", "dataHubIngestionSourceInfo",
              {"name": "system-one", "type": "datahub-mock-data", "config": {"recipe": RECIPE, "executorId": "remote"},
               "source": {"type": "SYSTEM"}})
    listed = graph.execute_graphql("{ listIngestionSources(input: {count: 10}) { ingestionSources { name config { executorId } } } }")
    assert {s["name"]: s["config"]["executorId"] for s in listed["listIngestionSources"]["ingestionSources"]} == {
        "made-by-the-ui": "default", "cli-made": "default", "system-one": "remote"}
    pools = graph.execute_graphql("""{ listRemoteExecutorPools(input: {start: 0, count: 10}) { remoteExecutorPools {
        ingestionSources(input: {start: 0, count: 10, hideSystemSources: true}) { ingestionSources { name } } } } }""")
    (pool,) = pools["listRemoteExecutorPools"]["remoteExecutorPools"]
    assert sorted(s["name"] for s in pool["ingestionSources"]["ingestionSources"]) == ["cli-made", "made-by-the-ui"]


def test_a_conditional_write_from_datahubs_client_holds_only_at_the_version_it_read(cp, graph):
    """DataHub's client sends If-Version-Match in an MCP's headers; the version is the one the
    entity's read shows in systemMetadata. A write naming an older one is refused as GMS's
    Rest.li refuses it (422, "Expected version N, actual version M") and stores nothing."""
    def version() -> str:
        raw = graph.get_entity_raw(DATASET, aspects=["status"])
        return str(raw["aspects"]["status"]["systemMetadata"]["version"])

    def emit(removed: bool, at: str) -> None:
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=removed),
                                                     headers={"If-Version-Match": at}))

    emit(False, "-1")  # not there yet
    read = version()
    emit(True, read)
    assert version() != read
    with pytest.raises(OperationalError, match="Expected version .*, actual version") as refused:
        emit(False, read)
    assert refused.value.info.get("status") == 422, refused.value.info
    assert graph.get_aspect(DATASET, model.StatusClass) == model.StatusClass(removed=True)
