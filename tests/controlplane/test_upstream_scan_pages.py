"""Upstream discovery against the pages DataHub's listExecutionRequests really answers.

DataHub pages its search by offset, newest first, and then drops from each page the hits whose
entity no longer exists (ValidationUtils.validateSearchResult: a request deleted between the
index and the read, before the index catches up), while `total` still counts them. A page can
thus be shorter than asked for with more behind it. The stand-in GMS here answers DataHub's own
client so, with a list of hits some of which are such ghosts."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loguru import logger

from controlplane.testing import ControlPlaneHandle
from controlplane.upstream import sync as sync_module
from controlplane.upstream.sync import UpstreamConfig, UpstreamSync

from .stand_in_gms import StandInGms, ours  # noqa: F401 (fixture)

RECIPE = json.dumps({"source": {"type": "datahub-mock-data", "config": {}}})
MINUTE_MS = 60_000
GHOST = None  # a hit DataHub's search still counts whose entity is gone: left out of the page


def request(request_id: str, pool: str, requested_at_ms: int) -> dict:
    return {"urn": f"urn:li:dataHubExecutionRequest:{request_id}", "id": request_id, "result": None,
            "input": {"task": "RUN_INGEST", "executorId": pool, "requestedAt": requested_at_ms,
                      "actorUrn": None, "arguments": [{"key": "recipe", "value": RECIPE}],
                      "source": {"type": "MANUAL_INGESTION_SOURCE", "ingestionSource": None}}}


class SearchingDataHub(StandInGms):
    """listExecutionRequests over HITS (newest first; GHOST hits count in total and in the
    offsets, and are left out of the page), as DataHub answers it; no KILL signals."""

    def __init__(self) -> None:
        self.hits: list[dict | None] = []
        self.total: Callable[[], int] = lambda: len(self.hits)
        self.page_at: Callable[[int, int], list[dict | None]] = lambda start, count: self.hits[start:start + count]
        self.pages_read: list[int] = []
        super().__init__()

    def graphql(self, request: dict) -> dict:
        start, count = request["variables"]["start"], request["variables"]["count"]
        self.pages_read.append(start)
        page = [hit for hit in self.page_at(start, count) if hit is not GHOST]
        return {"listExecutionRequests": {"start": start, "count": count, "total": self.total(),
                                          "executionRequests": page}}


@pytest.fixture
def datahub() -> Iterator[SearchingDataHub]:
    server = SearchingDataHub()
    yield server
    server.close()


def sync_with(ours: ControlPlaneHandle, datahub: SearchingDataHub, tmp_path: Path) -> UpstreamSync:
    (tmp_path / "token").write_text("upstream-token-not-checked-here")
    (tmp_path / "ingest-token").write_text("ingest-token-not-checked-here")
    return UpstreamSync(ours.cp, UpstreamConfig(url=datahub.url, token_file=tmp_path / "token",
                                                ingest_token_file=tmp_path / "ingest-token"))


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_page_shortened_by_a_deleted_request_does_not_end_the_scan_before_the_requests_behind_it(
        ours, datahub, tmp_path):
    """One request of the first page deleted in DataHub (its hit still counted): the page came
    49 long, the scan took that for the end and moved the cursor to the newest request, and a
    request of ours behind it, older than the cursor less the index lag, was never taken."""
    ours.create_pool("short-page")
    t = now_ms()
    datahub.hits = [request("newest", "short-page", t),
                    *(request(f"other-{i}", "someone-else", t - MINUTE_MS - i) for i in range(sync_module.PAGE - 2)),
                    GHOST,
                    request("behind-the-short-page", "short-page", t - 20 * MINUTE_MS)]
    sync = sync_with(ours, datahub, tmp_path)
    taken = [execution_id for _ in range(3) for execution_id in sync.discover()]
    assert taken == ["newest", "behind-the-short-page"]
    assert ours.execution("behind-the-short-page")["pool_id"] == "short-page"


@pytest.mark.parametrize("tail", ["pages that never end", "empty pages to a total that never shrinks"])
def test_a_scan_over_a_datahub_whose_total_never_shrinks_ends_and_the_next_takes_new_requests(
        ours, datahub, tmp_path, monkeypatch, tail):
    """A short page no longer ends a scan, so something else must where DataHub's total never
    comes down: an empty page, and at the latest MAX_SCAN_PAGES pages; the cursor then moves and
    the next scan takes what came since."""
    monkeypatch.setattr(sync_module, "MAX_SCAN_PAGES", 6, raising=False)
    pool = "tail-" + tail.split()[0]
    ours.create_pool(pool)
    t = now_ms()
    top: list[dict | None] = []
    datahub.total = lambda: 10**9
    if tail == "pages that never end":  # every page one ghost short, each request newer than the floor
        datahub.page_at = lambda start, count: top[start:start + count] or [
            *(request(f"other-{start + i}", "someone-else", t - start - i) for i in range(count - 1)), GHOST]
    else:
        datahub.page_at = lambda start, count: top[start:start + count]
        top.extend(request(f"other-{i}", "someone-else", t - i) for i in range(sync_module.PAGE + 3))
    lines: list[str] = []
    sink = logger.add(lambda line: lines.append(str(line)), level="WARNING", format="{message}")
    try:
        sync = sync_with(ours, datahub, tmp_path)
        for _ in range(3):
            sync.discover()
            if sync._scan is None:
                break
        assert sync._scan is None, f"the scan read {len(datahub.pages_read)} pages and goes on"
        assert len(datahub.pages_read) <= 6
        top.insert(0, request(f"{pool}-made-since", pool, now_ms()))
        assert sync.discover() == [f"{pool}-made-since"]
    finally:
        logger.remove(sink)
    if tail == "pages that never end":
        assert any("pages" in line and "floor" in line for line in lines), lines


def test_requests_made_between_two_pages_of_a_scan_push_the_rest_down_and_each_is_taken_once(ours, datahub, tmp_path):
    """Newest first, a request made while a scan reads its pages moves every later hit one down:
    the next page reads again the last of the page before (the mirror table takes it once), and
    the new ones are the next scan's. Nothing is skipped and nothing is taken twice."""
    ours.create_pool("arriving")
    t = now_ms() - MINUTE_MS  # within the index lag of the cursor the module's earlier tests left
    datahub.hits = [request(f"arriving-{i}", "arriving", t - i * 100) for i in range(2 * sync_module.PAGE)]
    read = datahub.page_at

    def page_while_requests_arrive(start: int, count: int) -> list[dict | None]:
        if start > 0 and len(datahub.pages_read) == 2:  # between the first page and the second
            datahub.hits[:0] = [request(f"arriving-new-{i}", "arriving", now_ms()) for i in range(3)]
        return read(start, count)

    datahub.page_at = page_while_requests_arrive
    sync = sync_with(ours, datahub, tmp_path)
    taken = [execution_id for _ in range(3) for execution_id in sync.discover()]
    assert len(datahub.hits) == 2 * sync_module.PAGE + 3, "the requests arrived mid-scan"
    expected = {f"arriving-{i}" for i in range(2 * sync_module.PAGE)} | {f"arriving-new-{i}" for i in range(3)}
    assert len(taken) == len(set(taken)), "a request taken twice"
    assert set(taken) == expected
