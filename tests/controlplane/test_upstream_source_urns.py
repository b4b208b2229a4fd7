"""Upstream mode, found by review: a DataHub request names its source by DataHub's urn, and a
source of ours can have the same urn (`datahub ingest deploy --name x` makes
urn:li:dataHubIngestionSource:x on whichever server it points at; a source copied from one to
the other keeps its urn). They are different sources in different DataHubs: a run of one must
not make a run of the other a DUPLICATE ("its source is already running"), whichever runs first.
Two of DataHub's requests of one source are still duplicates, as two runs of one source of ours
are. The stand-in GMS answers DataHub's own client (test_upstream_hostile_pages.PageServer)."""
from __future__ import annotations

import pytest

from vocabulary import statuses as S

from .conftest import ExecutorDouble
from .test_upstream_hostile_pages import (RECIPE, PageServer, attached, ours, request,  # noqa: F401 - fixtures
                                          sync_with, upstream)


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
