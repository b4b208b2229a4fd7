"""Upstream mode, found by review: a DataHub request names its source by DataHub's urn, and a
source of ours can have the same urn (`datahub ingest deploy --name x` makes
urn:li:dataHubIngestionSource:x on whichever server it points at; a source copied from one to
the other keeps its urn). They are different sources in different DataHubs: a run of one must
not make a run of the other a DUPLICATE ("its source is already running"), whichever runs first.
Two of DataHub's requests of one source are still duplicates, as two runs of one source of ours
are. Nor is a run of one listed or resolved as a run of the other (our GraphQL, as DataHub's UI
and client query it, lists and resolves only runs of ours as our source's), and a KILL passed on
from DataHub names the pool DataHub routed its run to, not our source's executor. The stand-in GMS answers
DataHub's own client (test_upstream_hostile_pages.PageServer; test_upstream_sync's control plane
playing DataHub where a KILL must be read from it)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig
from datahub.metadata.schema_classes import (AuditStampClass, ExecutionRequestInputClass, ExecutionRequestSignalClass,
                                             ExecutionRequestSourceClass)

from controlplane import entities as E
from vocabulary import statuses as S

from .conftest import ExecutorDouble
from .test_upstream_hostile_pages import (RECIPE, PageServer, attached, ours, request,  # noqa: F401 - fixtures
                                          sync_with, upstream)
from .test_upstream_sync import POOL, now_ms, pair  # noqa: F401 - a fixture


def of_source(request_id: str, pool: str, source_urn: str) -> dict:
    """DataHub's request REQUEST_ID, a run of its source SOURCE_URN."""
    value = request(request_id, pool)
    value["input"]["source"] = {"type": "MANUAL_INGESTION_SOURCE", "ingestionSource": source_urn}
    return value


def offer(upstream: PageServer, *requests: dict) -> None:
    upstream.page = {"start": 0, "count": len(requests), "total": len(requests), "executionRequests": list(requests)}


@pytest.mark.parametrize("first", ["ours", "DataHub's"])
def test_runs_of_a_source_of_ours_and_of_datahubs_source_of_the_same_urn_are_not_duplicates(ours, upstream, tmp_path,
                                                                                             first):
    pool = {"ours": "urn-ours-first", "DataHub's": "urn-theirs-first"}[first]
    ours.create_pool(pool)
    mine = ours.create_source(f"mine-{pool}", RECIPE, pool_id=pool)
    executor = ExecutorDouble(ours, pool, f"{pool}-exec")
    executor.heartbeat()
    theirs_id = f"theirs-{pool}"
    offer(upstream, of_source(theirs_id, pool, mine["urn"]))
    with attached(sync_with(ours, upstream, tmp_path), ours) as sync:
        if first == "ours":
            run = ours.run_source(mine["id"])
            assert executor.claim(run["id"]) is not None
            assert sync.discover() == [theirs_id]
            second = theirs_id
        else:
            assert sync.discover() == [theirs_id]
            assert executor.claim(theirs_id) is not None
            second = ours.run_source(mine["id"])["id"]
        claimed = executor.claim(second)
        assert claimed is not None, (f"{second} is {ours.execution(second)['status']}: a run of one DataHub's source "
                                     "was judged a duplicate of a run of the other's")
        assert ours.execution(second)["status"] == S.RUNNING


def test_two_of_datahubs_requests_of_one_source_are_still_duplicates(ours, upstream, tmp_path):
    ours.create_pool("urn-twice")
    source_urn = "urn:li:dataHubIngestionSource:theirs-only"
    offer(upstream, of_source("twice-2", "urn-twice", source_urn), of_source("twice-1", "urn-twice", source_urn))
    executor = ExecutorDouble(ours, "urn-twice", "urn-twice-exec")
    executor.heartbeat()
    with attached(sync_with(ours, upstream, tmp_path), ours) as sync:
        assert sorted(sync.discover()) == ["twice-1", "twice-2"]
        assert executor.claim("twice-1") is not None
        assert executor.claim("twice-2") is None
        duplicate = ours.execution("twice-2")
        assert (duplicate["status"], duplicate["reason"]) == (S.DUPLICATE, S.SOURCE_ALREADY_RUNNING)


@pytest.fixture
def client(ours) -> Iterator[DataHubGraph]:
    """DataHub's own client, on our control plane, as DataHub's UI and CLI query it."""
    with DataHubGraph(DatahubClientConfig(server=ours.gms_url, token=ours.admin_token)) as graph:
        yield graph


def run_of_each(ours, upstream, tmp_path, name: str) -> tuple[dict, str, str]:
    """A source of ours (pool NAME-ours) and a run of it, and DataHub's request THEIRS of
    DataHub's source of the same urn (for pool NAME-theirs), taken: (the source, ours, theirs)."""
    ours.create_pool(f"{name}-ours")
    ours.create_pool(f"{name}-theirs")
    mine = ours.create_source(f"mine-{name}", RECIPE, pool_id=f"{name}-ours")
    local = ours.run_source(mine["id"])["id"]
    offer(upstream, of_source(f"theirs-{name}", f"{name}-theirs", mine["urn"]))
    assert sync_with(ours, upstream, tmp_path).discover() == [f"theirs-{name}"]
    return mine, local, f"theirs-{name}"


def test_a_source_of_ours_lists_its_own_runs_not_datahubs_runs_of_its_urn(ours, upstream, tmp_path, client):
    """DataHub's UI shows a source's last run (listIngestionSources' executions) and, in its run
    history, the runs its ingestionSource filter finds: DataHub's run of DataHub's source was
    shown as the last run of ours, and in its history."""
    mine, local, theirs = run_of_each(ours, upstream, tmp_path, "listed")
    executions = client.execute_graphql(
        "query($u: String!) { ingestionSource(urn: $u) { executions(start: 0, count: 10) { total "
        "executionRequests { id } } } }", variables={"u": mine["urn"]})["ingestionSource"]["executions"]
    assert ([r["id"] for r in executions["executionRequests"]], executions["total"]) == ([local], 1)
    history = client.execute_graphql(
        "query($u: String!) { listExecutionRequests(input: {start: 0, count: 10, filters: [{field: \"ingestionSource\", "
        "values: [$u]}]}) { total executionRequests { id } } }", variables={"u": mine["urn"]})["listExecutionRequests"]
    assert ([r["id"] for r in history["executionRequests"]], history["total"]) == ([local], 1)
    every = client.execute_graphql("{ listExecutionRequests(input: {start: 0, count: 1000}) { executionRequests { id } } }")
    assert {local, theirs} <= {r["id"] for r in every["listExecutionRequests"]["executionRequests"]}, \
        "DataHub's run is still listed among all runs"


def test_datahubs_run_of_its_source_resolves_to_no_source_of_ours(ours, upstream, tmp_path, client):
    """An upstream run's `source` is DataHub's source, which this control plane does not hold: none,
    as for an upstream run whose urn names no source here. Its input still names DataHub's urn."""
    mine, local, theirs = run_of_each(ours, upstream, tmp_path, "resolved")
    query = ("query($u: String!) { executionRequest(urn: $u) { source { urn name } "
             "input { executorId source { type ingestionSource } } } }")
    shown = client.execute_graphql(query, variables={"u": E.execution_urn(theirs)})["executionRequest"]
    assert shown["source"] is None, f"DataHub's run resolved to our source {shown['source']}"
    assert shown["input"] == {"executorId": "resolved-theirs",
                              "source": {"type": "MANUAL_INGESTION_SOURCE", "ingestionSource": mine["urn"]}}
    ours_shown = client.execute_graphql(query, variables={"u": E.execution_urn(local)})["executionRequest"]
    assert ours_shown["source"] == {"urn": mine["urn"], "name": mine["name"]}


@pytest.mark.parametrize("when", ["while it is ours", "before we took it"])
def test_datahubs_cancel_of_its_run_names_the_pool_datahub_routed_it_to(pair, when):
    """DataHub's UI cancels its run; the KILL this control plane writes for it, when it passes the
    cancel on, named the executor of our source of the same urn (another pool) instead, and no
    executor at all when DataHub's KILL was there before the request was taken."""
    pair.ours.create_pool("shared-ours")
    mine = pair.ours.create_source("mine-cancelled", RECIPE, pool_id="shared-ours")
    urn = E.execution_urn("theirs-cancelled")
    pair.graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=urn, aspect=ExecutionRequestInputClass(
        task="RUN_INGEST", args={"recipe": RECIPE}, executorId=POOL, requestedAt=now_ms(),
        source=ExecutionRequestSourceClass(type="MANUAL_INGESTION_SOURCE", ingestionSource=mine["urn"]))))
    kill = MetadataChangeProposalWrapper(entityUrn=urn, aspect=ExecutionRequestSignalClass(
        signal="KILL", createdAt=AuditStampClass(time=now_ms(), actor="urn:li:corpuser:datahub")))
    sync = pair.sync()
    if when == "before we took it":
        pair.graph.emit_mcp(kill)
        assert sync.discover() == ["theirs-cancelled"]
    else:
        assert sync.discover() == ["theirs-cancelled"]
        pair.graph.emit_mcp(kill)
        assert sync.pass_cancels() == ["theirs-cancelled"]
    assert pair.ours.execution("theirs-cancelled")["status"] == S.CANCELLED
    with DataHubGraph(DatahubClientConfig(server=pair.ours.gms_url, token=pair.ours.admin_token)) as graph:
        written = graph.get_aspect(urn, ExecutionRequestSignalClass)
    assert written is not None and written.signal == "KILL"
    assert written.executorId == POOL, f"the KILL for DataHub's run names executor {written.executorId}"


def test_our_cancel_of_datahubs_run_names_the_pool_datahub_routed_it_to(ours, upstream, tmp_path, client):
    """An operator cancels DataHub's run here (cancelIngestionExecutionRequest, as DataHub's UI
    sends it, or the admin CLI): the KILL named the executor of our source of the same urn."""
    mine, local, theirs = run_of_each(ours, upstream, tmp_path, "cancelled-here")
    cancel = ("mutation($s: String!, $e: String!) { cancelIngestionExecutionRequest(input: {ingestionSourceUrn: $s, "
              "executionRequestUrn: $e}) }")
    for run, pool in ((theirs, "cancelled-here-theirs"), (local, "cancelled-here-ours")):
        client.execute_graphql(cancel, variables={"s": mine["urn"], "e": E.execution_urn(run)})
        written = client.get_aspect(E.execution_urn(run), ExecutionRequestSignalClass)
        assert written is not None and written.signal == "KILL"
        assert written.executorId == pool, f"the KILL for {run} names executor {written.executorId}"
