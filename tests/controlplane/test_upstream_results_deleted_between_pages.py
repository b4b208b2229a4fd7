"""Upstream discovery when DataHub deletes requests while a scan reads its pages (decision 100's
open case), against the stand-in that pages as DataHub's listExecutionRequests does."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.testing import ControlPlaneHandle, running_controlplane
from controlplane.upstream import sync as sync_module

from .test_upstream_scan_pages import MINUTE_MS, datahub, now_ms, request, sync_with  # noqa: F401 (fixture)


@pytest.fixture
def ours(tmp_path) -> Iterator[ControlPlaneHandle]:
    with running_controlplane(tmp_path / "ours") as handle:
        yield handle


@pytest.mark.parametrize("deleted", [1, 3])
def test_requests_deleted_between_two_pages_do_not_hide_the_first_request_of_the_next_page(
        ours, datahub, tmp_path: Path, deleted):
    """Requests of the first page deleted in DataHub (index caught up: gone from total too) after
    that page was read move every later hit up: the first request of the next page then sat at
    the end of the page already read, and the scan, reading on from offset PAGE, never saw it.
    Older than the next scan's floor (the newest less the index lag), it was lost for good."""
    ours.create_pool("deleted-between")
    t = now_ms()
    datahub.hits = [request("newest", "deleted-between", t),
                    *(request(f"other-{i}", "someone-else", t - MINUTE_MS - i) for i in range(sync_module.PAGE - 1)),
                    request("first-of-the-second-page", "deleted-between", t - 20 * MINUTE_MS),
                    *(request(f"older-{i}", "someone-else", t - 21 * MINUTE_MS - i) for i in range(sync_module.PAGE))]
    to_delete = {f"other-{i}" for i in range(sync_module.PAGE - 1 - deleted, sync_module.PAGE - 1)}
    read = datahub.page_at

    def page_after_deletions(start: int, count: int) -> list:
        if start > 0:  # the first page has been read: DataHub's user deletes requests on it
            datahub.hits = [hit for hit in datahub.hits if hit["id"] not in to_delete]
        return read(start, count)

    datahub.page_at = page_after_deletions
    sync = sync_with(ours, datahub, Path(tmp_path))
    taken = [execution_id for _ in range(3) for execution_id in sync.discover()]
    assert taken == ["newest", "first-of-the-second-page"], f"pages read at {datahub.pages_read}"
    assert sync_module.PAGE in datahub.pages_read, "the requests were deleted between two pages of the scan"
    assert ours.execution("first-of-the-second-page")["pool_id"] == "deleted-between"


def test_a_backlog_read_with_overlapping_pages_takes_each_request_once_and_reaches_its_end(ours, datahub, tmp_path):
    """The overlap re-reads a few requests at each page boundary: each is taken once, and a scan
    over several pages still reaches its end and moves the cursor."""
    ours.create_pool("overlapping")
    t = now_ms() - MINUTE_MS
    datahub.hits = [request(f"overlapping-{i}", "overlapping", t - i) for i in range(3 * sync_module.PAGE + 7)]
    sync = sync_with(ours, datahub, Path(tmp_path))
    taken = sync.discover()
    assert sync._scan is None, "the scan reached DataHub's total"
    assert sorted(taken) == sorted(hit["id"] for hit in datahub.hits) and len(taken) == len(set(taken))
    assert datahub.pages_read == list(range(0, len(datahub.hits), sync_module.PAGE)), "pages PAGE apart, as before"
    assert sync.discover() == []
