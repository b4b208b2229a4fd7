"""Upstream mode's results and cancels written back to DataHub: what DataHub is left showing when
it refuses a result, and when its user cancelled a request that could not have run. The stand-in
DataHub and the proxy in front of it are test_upstream_sync's."""
from __future__ import annotations

import pytest
from loguru import logger
from datahub.metadata.schema_classes import ExecutionRequestResultClass

from controlplane import entities as E
from controlplane.upstream import sync as sync_module

from .test_upstream_sync import RECIPE, Pair, kill_in_datahub, now_ms, pair, proxy, taken  # noqa: F401 (fixtures)

MARKER = "WHOLE-REPORT-ONLY"  # in the whole result's structured report only: the proxy refuses what holds it


def finished_with_a_long_report(pair: Pair, sync: sync_module.UpstreamSync, execution_id: str) -> None:
    executor = taken(pair, sync, execution_id, RECIPE, attached=False)
    claimed = executor.claim(execution_id)
    assert claimed is not None
    executor.finish(claimed, "SUCCESS", ingestion_report={"warnings": [f"{MARKER} {i}" for i in range(2000)]})


def shown(pair: Pair, execution_id: str) -> ExecutionRequestResultClass | None:
    return pair.graph.get_aspect(E.execution_urn(execution_id), ExecutionRequestResultClass)


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_result_datahub_refuses_for_good_is_written_shortened_at_once_and_said_once(pair, proxy, status):
    """A final result DataHub refuses (400: an aspect it finds invalid; 413: a proxy's body limit;
    422) was tried again as it was every 60 s, for ever, and DataHub showed the run open for good.
    It is written again at once, its report cut and its structured report down to the executor
    section, with a note; the status is the run's, and the whole form is not sent again."""
    sync = pair.sync(url=proxy.url)
    finished_with_a_long_report(pair, sync, "too-long")
    refused = proxy.break_("POST", "ingestProposal", status=status, body=b'{"message": "refused"}',
                           body_has=(MARKER.encode(),))
    lines: list[str] = []
    sink = logger.add(lambda line: lines.append(str(line)), level="WARNING", format="{message}")
    try:
        for _ in range(3):
            sync.tick()
    finally:
        logger.remove(sink)
    result = shown(pair, "too-long")
    assert result is not None and result.status == "SUCCESS", f"DataHub shows {result.status if result else None}"
    assert f"DataHub refused this result whole (HTTP {status})" in (result.report or "")
    assert result.structuredReport is not None and MARKER not in result.structuredReport.serializedValue
    assert refused.hits == 1, "the refused form was sent again"
    said = [line for line in lines if "too-long" in line]
    assert len(said) == 1 and "shortened" in said[0], said
    assert sync.mirror.open_requests() == [], "the request is closed here"


def test_a_result_datahub_refuses_even_shortened_is_written_minimal(pair, proxy):
    """DataHub refusing the shortened form too (a proxy's limit below it, a validator that finds
    the structured report invalid) gets the status and times with a note saying the result could
    not be written: DataHub shows how the run ended, not a run open for good."""
    sync = pair.sync(url=proxy.url)
    finished_with_a_long_report(pair, sync, "refused-twice")
    whole = proxy.break_("POST", "ingestProposal", status=413, body=b"too large", body_has=(MARKER.encode(),))
    shortened = proxy.break_("POST", "ingestProposal", status=400, body=b'{"message": "invalid"}',
                             body_has=(b"refused this result whole",))
    sync.tick()
    sync.tick()
    result = shown(pair, "refused-twice")
    assert result is not None and result.status == "SUCCESS"
    assert "could not be written to DataHub" in (result.report or "") and result.structuredReport is None
    assert (whole.hits, shortened.hits) == (1, 1)


def test_a_request_cancelled_in_datahub_that_could_not_have_run_ends_cancelled_not_failed(pair):
    """A request DataHub's user cancelled before we took it ends CANCELLED in DataHub when it
    could have run; one that could not (an unknown task here) was refused and ended FAILURE
    instead, as if it had run and failed. The cancel wins, and the report still says why it
    could not have run."""
    invalid = pair.request("cancelled-and-invalid", now_ms())
    invalid.aspect.task = "NOT_A_TASK"
    pair.create(invalid)
    kill_in_datahub(pair, "cancelled-and-invalid")
    sync = pair.sync()
    assert sync.discover() == ["cancelled-and-invalid"]
    assert "cancelled-and-invalid" not in pair.local_ids(), "nothing to run here"
    sync.push()
    result = shown(pair, "cancelled-and-invalid")
    assert result is not None and result.status == "CANCELLED", f"DataHub shows {result.status if result else None}"
    assert "UNKNOWN_TASK" in (result.report or "")
    assert sync.mirror.open_requests() == []


def test_a_request_whose_kill_signal_datahub_refuses_to_show_holds_back_no_other(pair, proxy):
    """GMS refusing the read of one request's signal (400: an urn its parser rejects) failed the
    whole batch: the page holding that request was never taken, at any scan, nor any request
    behind it, and once taken, no cancel among the open requests reached its run. The batch is
    read one request at a time then, the refused one taken as not cancelled."""
    pair.create(pair.request("unreadable", now_ms()), pair.request("killed-before", now_ms() - 1),
                pair.request("killed-later", now_ms() - 2))
    kill_in_datahub(pair, "killed-before")
    proxy.break_("POST", "/openapi/v3/entity/", status=400, body=b'{"error": "bad urn"}', body_has=(b"unreadable",))
    proxy.break_("GET", "unreadable", status=400, body=b'{"error": "bad urn"}')
    sync = pair.sync(url=proxy.url)
    assert sorted(sync.discover()) == ["killed-before", "killed-later", "unreadable"]
    assert pair.ours.execution("killed-before")["status"] == "CANCELLED"
    kill_in_datahub(pair, "killed-later")
    assert sync.pass_cancels() == ["killed-later"]
    assert pair.ours.execution("unreadable")["status"] == "PENDING"
