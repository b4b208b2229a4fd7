"""Upstream mode when DataHub deletes a request we hold: its cleanup of old requests
(datahub/ingestion/source/gc/execution_request_cleanup.py) hard-deletes RUNNING and PENDING ones
over a month old too, and a user may delete one. Every result written for it afterwards brought
the request back in DataHub, a result without an input. The stand-in DataHub and the proxy in
front of it are test_upstream_sync's: a control plane of ours, whose batchGet answers as GMS's.
Where GMS takes a result for a deleted request (and so makes it again), the stand-in refuses it,
so these tests count the writes that reach it after the deletion: there must be none."""
from __future__ import annotations

import pytest
from loguru import logger
from datahub.metadata.schema_classes import ExecutionRequestInputClass, ExecutionRequestResultClass

from controlplane import entities as E
from controlplane.metadata import aspect_store
from controlplane.upstream.gms import UpstreamUnreachable
from vocabulary import statuses as S

from .test_upstream_sync import RECIPE, Pair, kill_in_datahub, pair, proxy, taken  # noqa: F401 (fixtures)


def hard_delete_in_datahub(pair: Pair, execution_id: str) -> None:
    """What DataHub's cleanup does (DataHubGraph.delete_entity(urn, hard=True)): every aspect of
    the request gone. The stand-in, a control plane of ours, refuses to delete a run of its own
    that has not ended (DataHub's GMS does not), so its rows are removed as GMS removes them."""
    with pair.datahub.cp.store.transaction() as tx:
        tx.execute("DELETE FROM executions WHERE id=?", (execution_id,))
        aspect_store.delete_entity(tx, E.execution_urn(execution_id))


def shown_in_datahub(pair: Pair, execution_id: str) -> tuple[object, object]:
    urn = E.execution_urn(execution_id)
    return pair.graph.get_aspect(urn, ExecutionRequestInputClass), pair.graph.get_aspect(urn, ExecutionRequestResultClass)


def running(pair: Pair, sync, execution_id: str):
    """A request of DataHub's, taken and claimed here, its progress written back to DataHub."""
    executor = taken(pair, sync, execution_id, RECIPE, attached=False)
    claimed = executor.claim(execution_id)
    assert claimed is not None
    executor.progress(claimed, "line 1")
    sync.tick()
    _, result = shown_in_datahub(pair, execution_id)
    assert result is not None and result.status == S.RUNNING
    return executor, claimed


def test_a_run_deleted_in_datahub_is_cancelled_here_and_never_written_back(pair, proxy):
    """Deleted in DataHub while it ran here: the next progress report, and the run's end, were
    written to the deleted request, which came back in DataHub with a result and no input (its
    cleanup, which looks for requests by their input, never removed it again). It is cancelled
    here as a KILL would cancel it, its mirror row closed, nothing more written, said once."""
    sync = pair.sync(url=proxy.url)
    executor, claimed = running(pair, sync, "deleted-while-running")
    hard_delete_in_datahub(pair, "deleted-while-running")
    writes = proxy.watch("POST", "/aspects")
    lines: list[str] = []
    sink = logger.add(lambda line: lines.append(str(line)), level="INFO", format="{message}")
    try:
        executor.progress(claimed, "line 2")
        sync.tick()
        executor.finish(claimed, "CANCELLED")
        sync.tick()
        sync.tick()
    finally:
        logger.remove(sink)
    assert writes.hits == 0, "results were written to the deleted request"
    assert shown_in_datahub(pair, "deleted-while-running") == (None, None), "the request came back in DataHub"
    with pair.ours.cp.store.read() as db:
        signal = aspect_store.get(db, E.execution_urn("deleted-while-running"), E.EXECUTION_SIGNAL)
    assert signal is not None and signal.value["signal"] == "KILL", "the run was not cancelled here"
    assert sync.mirror.open_requests() == []
    said = [line for line in lines if "deleted-while-running" in line]
    assert len(said) == 1 and "no longer has" in said[0], said


def test_a_request_deleted_in_datahub_before_it_was_claimed_never_runs(pair, proxy):
    """Deleted in DataHub while queued here: cancelled before any executor claims it, and its
    CANCELLED end is not written to DataHub."""
    sync = pair.sync(url=proxy.url)
    executor = taken(pair, sync, "deleted-while-queued", RECIPE, attached=False)
    hard_delete_in_datahub(pair, "deleted-while-queued")
    assert sync.pass_cancels() == ["deleted-while-queued"]
    assert pair.ours.execution("deleted-while-queued")["status"] == S.CANCELLED
    assert executor.claim("deleted-while-queued") is None
    writes = proxy.watch("POST", "/aspects")
    sync.tick()
    assert writes.hits == 0, "the end was written to the deleted request"
    assert shown_in_datahub(pair, "deleted-while-queued") == (None, None)


def test_an_end_datahub_failed_to_take_is_not_written_once_datahub_deleted_the_request(pair, proxy):
    """A run ended here whose result DataHub failed to take (500): tried again at each tick, it
    was written once DataHub answered, whether or not the request still existed there."""
    sync = pair.sync(url=proxy.url)
    executor, claimed = running(pair, sync, "ended-then-deleted")
    executor.finish(claimed, "SUCCESS")
    failing = proxy.break_("POST", "/aspects", status=500, body=b'{"message": "boom"}')
    sync.tick()
    assert failing.hits >= 1
    hard_delete_in_datahub(pair, "ended-then-deleted")
    proxy.heal()
    writes = proxy.watch("POST", "/aspects")
    sync.tick()
    sync.tick()
    assert writes.hits == 0, "the end was written to the deleted request"
    assert shown_in_datahub(pair, "ended-then-deleted") == (None, None), "the request came back in DataHub"
    assert sync.mirror.open_requests() == []


@pytest.mark.parametrize("failure", ["batchGet answering 500", "batchGet refusing the batch (400)"])
def test_a_datahub_that_fails_the_batch_read_is_not_taken_to_have_deleted_anything(pair, proxy, failure):
    """Only DataHub's clear answer that a request has no input says it is gone: a failed batch
    read raises (the step is retried), and requests then read one at a time (their signal only)
    are not judged at all."""
    sync = pair.sync(url=proxy.url)
    executor, claimed = running(pair, sync, "still-there")
    status = 500 if "500" in failure else 400
    proxy.break_("POST", "/openapi/v3/entity/", status=status, body=b'{"error": "boom"}')
    if status == 500:
        with pytest.raises(UpstreamUnreachable):
            sync.pass_cancels()
    else:
        assert sync.pass_cancels() == []
    sync.tick()
    assert pair.ours.execution("still-there")["status"] == S.RUNNING
    assert [request.execution_id for request in sync.mirror.open_requests()] == ["still-there"]
    proxy.heal()
    executor.finish(claimed, "SUCCESS")
    sync.tick()
    _, result = shown_in_datahub(pair, "still-there")
    assert result is not None and result.status == "SUCCESS"


def test_a_run_cancelled_then_deleted_in_datahub_is_not_written_back_as_it_stops(pair, proxy):
    """DataHub's user cancels a run, then deletes the request: the run here still reports until
    its executor stops it, and its progress and CANCELLED end brought the request back."""
    sync = pair.sync(url=proxy.url)
    executor, claimed = running(pair, sync, "cancelled-then-deleted")
    kill_in_datahub(pair, "cancelled-then-deleted")
    assert sync.pass_cancels() == ["cancelled-then-deleted"]
    hard_delete_in_datahub(pair, "cancelled-then-deleted")
    writes = proxy.watch("POST", "/aspects")
    executor.progress(claimed, "stopping")
    sync.tick()
    executor.finish(claimed, "CANCELLED")
    sync.tick()
    assert writes.hits == 0, "results were written to the deleted request"
    assert shown_in_datahub(pair, "cancelled-then-deleted") == (None, None)
    assert sync.mirror.open_requests() == []
