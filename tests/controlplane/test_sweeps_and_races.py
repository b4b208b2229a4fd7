"""The control plane's own sweeps against requests that land while they run: every sweep judges
what it ends again inside the transaction that ends it. Sweeps run by hand here
(this module's `cp`), and a request is slipped in between a sweep's look and its write."""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from controlplane import entities as E
from controlplane import server
from controlplane.metadata import aspect_store
from controlplane.testing import running_controlplane
from executor import datahub_aspects
from executor.controlplane_client import ControlPlaneError

from .conftest import RECIPE


@pytest.fixture
def cp(tmp_path, monkeypatch):
    """A control plane whose sweeps run only when the test calls them (the executor doubles use it)."""
    monkeypatch.setattr(server, "SWEEP_INTERVAL_S", 3600.0)
    with running_controlplane(tmp_path / "cp") as handle:
        yield handle


def _between_look_and_write(monkeypatch, store, request) -> list:
    """Run REQUEST once, right after the next read this thread (the sweep's) makes outside a
    transaction; the server's own reads, REQUEST's among them, pass untouched."""
    look = store.query
    sweeping = threading.get_ident()
    done: list = []

    def look_then_request(sql: str, params: tuple = ()) -> list:
        rows = look(sql, params)
        if not done and threading.get_ident() == sweeping:
            done.append(request())
        return rows

    monkeypatch.setattr(store, "query", look_then_request)
    return done


def test_a_sweep_does_not_abort_what_a_live_executor_claimed_after_the_sweep_looked(cp, executor_double, monkeypatch):
    cp.create_pool("p", default=True)
    lost, live = executor_double("p", "lost", interval_s=0.2), executor_double("p", "live", interval_s=30)
    lost.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    lost.claim(execution)
    time.sleep(1.5)  # more than six of its intervals: OFFLINE
    live.heartbeat()
    claims = _between_look_and_write(monkeypatch, cp.cp.executions.store,
                                     lambda: live.claim(execution, receive_count=2))
    assert cp.cp.executions.abort_lost() == []
    assert claims and claims[0] is not None, "the message came back and the live executor claimed it"
    shown = cp.execution(execution)
    assert (shown["status"], shown["executor_id"], shown["lease_epoch"]) == ("RUNNING", "live", 2)
    live.progress(claims[0], "the live executor's run goes on")


def test_a_sweep_does_not_abort_what_its_holder_heartbeats_for_after_the_sweep_looked(cp, executor_double, monkeypatch):
    cp.create_pool("p", default=True)
    paused = executor_double("p", "paused", interval_s=0.2)
    paused.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    claimed = paused.claim(execution)
    time.sleep(1.5)
    _between_look_and_write(monkeypatch, cp.cp.executions.store, lambda: paused.heartbeat(running=[execution]))
    assert cp.cp.executions.abort_lost() == []
    assert cp.execution(execution)["status"] == "RUNNING"
    paused.progress(claimed, "back from a pause")


def test_an_execution_held_by_a_process_its_executor_id_no_longer_names_is_lost(cp, executor_double):
    """Rows a claim from a replaced process left behind (accepted before claims were checked):
    no heartbeat will ever list them, so the sweep ends them."""
    cp.create_pool("p", default=True)
    current = executor_double("p", "e", interval_s=30)
    current.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    current.claim(execution)
    with cp.cp.store.transaction() as tx:
        tx.execute("UPDATE executions SET executor_instance='replaced-process' WHERE id=?", (execution,))
    assert cp.cp.executions.abort_lost() == [execution]
    shown = cp.execution(execution)
    assert (shown["status"], shown["reason"]) == ("ABORTED", "EXECUTOR_LOST")


def _heartbeat_snapshot(executor, running: list[str]) -> tuple[dict, dict]:
    """A heartbeat as the executor's heartbeat thread builds it: status (reportedAt now) and properties."""
    status = datahub_aspects.executor_status(pool_id=executor.pool_id, version="0.1.0", address="10.0.0.1",
                                             hostname="host-1", uptime_s=1.0, stopped=False, log_delivery=False)
    return status, {"instanceId": executor.instance_id, "heartbeatIntervalSeconds": str(executor.interval_s),
                    "state": "ACTIVE", "runningExecutions": json.dumps(running)}


def test_a_heartbeat_sent_twice_counts_as_one_unlisted_heartbeat(cp, executor_double):
    """The executor's HTTP layer sends a heartbeat again when its answer is lost: the same body."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e", interval_s=15)
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    executor.claim(execution)
    time.sleep(0.05)
    status, properties = _heartbeat_snapshot(executor, [])
    for _ in ("sent", "sent again"):
        executor.client.heartbeat("e", status, properties)
    assert cp.execution(execution)["status"] == "RUNNING", "one heartbeat without it, not two"
    time.sleep(0.05)
    executor.heartbeat(running=[])
    assert cp.execution(execution)["status"] == "PENDING", "a second, distinct heartbeat without it: queued again"


def test_heartbeats_that_arrive_as_copies_keep_their_executor_online(cp, executor_double):
    """A copy is not reconciled again, but it proves its process is there: an executor whose
    beats keep arriving as copies (its HTTP layer re-sending one whose answers time out, or its
    clock stepped back) stays ONLINE and keeps its run. Copies refreshed nothing before: it went
    OFFLINE and the sweep ended its run EXECUTOR_LOST while its requests were landing."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e", interval_s=0.2)
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    assert executor.claim(execution) is not None
    beat = _heartbeat_snapshot(executor, [execution])
    began = time.monotonic()
    while time.monotonic() - began < 1.6:  # eight of its intervals, the same beat every 0.15 s
        executor.client.heartbeat("e", *beat)
        time.sleep(0.15)
    assert [e["status"] for e in cp.executors("p")] == ["ONLINE"]
    cp.cp.sweep()
    assert cp.execution(execution)["status"] == "RUNNING"


def test_a_heartbeat_reported_before_the_claim_is_no_miss(cp, executor_double):
    """A heartbeat built just before a claim and delivered just after it could not list it."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e", interval_s=15)
    executor.heartbeat()
    _claim_between_a_beat_built_before_it_and_its_delivery(cp, executor)


def _claim_between_a_beat_built_before_it_and_its_delivery(cp, executor) -> None:
    """A run claimed between a heartbeat's making and its delivery: that heartbeat is no miss,
    one more after the claim without the run may be a race, the second re-queues it."""
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    time.sleep(0.2)
    built_before = _heartbeat_snapshot(executor, [])
    time.sleep(0.3)
    executor.claim(execution)
    claimed_at = cp.cp.store.one("SELECT claimed_at_executor_ms FROM executions WHERE id=?", (execution,))
    assert built_before[0]["reportedAt"] <= claimed_at["claimed_at_executor_ms"], "the claim came after it was built"
    executor.client.heartbeat("e", *built_before)
    time.sleep(0.05)
    executor.heartbeat(running=[])
    assert cp.execution(execution)["status"] == "RUNNING", "one heartbeat after the claim without it may be a race"
    time.sleep(0.05)
    executor.heartbeat(running=[])
    assert cp.execution(execution)["status"] == "PENDING"


def test_a_heartbeat_reported_before_the_claim_is_no_miss_after_a_late_copy_of_the_last_one(cp, executor_double):
    """A copy of the last heartbeat (re-sent by the executor's HTTP layer, its answer lost)
    refreshes liveness only. The claim's time on the executor's clock still counts from when the
    copied heartbeat itself arrived: counted from the copy, it came out early by the copy's delay,
    the heartbeat built before the claim was taken for a miss, and one more beat without the run
    queued it again while it ran (its holder then fenced off, 409, and killing it)."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e", interval_s=15)
    first = _heartbeat_snapshot(executor, [])
    executor.client.heartbeat("e", *first)
    time.sleep(1.0)
    executor.client.heartbeat("e", *first)  # the copy, a second late
    _claim_between_a_beat_built_before_it_and_its_delivery(cp, executor)


def test_an_executor_that_heartbeats_after_the_expiry_sweep_looked_is_not_marked_expired(cp, executor_double, monkeypatch):
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e", interval_s=0.2)
    executor.heartbeat()
    time.sleep(1.5)  # OFFLINE
    _between_look_and_write(monkeypatch, cp.cp.executors.store, lambda: executor.heartbeat(interval_s=30))
    assert cp.cp.executors.expire_offline() == []
    with cp.cp.store.read() as db:
        status = aspect_store.get(db, "urn:li:dataHubRemoteExecutor:e", "dataHubRemoteExecutorStatus")
    assert status.value["executorExpired"] is False
    assert cp.executors("p")[0]["status"] == "ONLINE"


def test_a_heartbeat_overtaken_by_the_final_stopped_one_does_not_bring_the_executor_back(cp, executor_double):
    """A DRAINING beat retried by the executor's HTTP layer can arrive after its STOPPED beat;
    the last write won, and a stopped executor showed ACTIVE or DRAINING and ONLINE again."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e", interval_s=15)
    executor.heartbeat()
    status, properties = _heartbeat_snapshot(executor, [])
    draining = ({**status, "reportedAt": status["reportedAt"] + 1}, {**properties, "state": "DRAINING"})
    time.sleep(0.05)
    executor.heartbeat(state="STOPPED")
    executor.client.heartbeat("e", *draining)  # the late one
    (shown,) = cp.executors("p")
    assert (shown["state"], shown["status"]) == ("STOPPED", "OFFLINE")


def test_a_running_execution_with_no_holder_is_lost_and_does_not_stop_the_sweep(cp, executor_double):
    """A run an executor outside this control plane reported RUNNING (an admin's write: no
    holder), whose executor id then became a pool here, has no process to judge. It is lost,
    and the run of an executor that went OFFLINE beside it is still judged (the sweep raised
    TypeError on the first and never reached the second, every round)."""
    cp.create_pool("p", default=True)
    reported = str(uuid.uuid4())
    urn = E.execution_urn(reported)
    cp.ingest(urn, E.EXECUTION_INPUT, {"task": "RUN_INGEST", "args": {"recipe": RECIPE}, "executorId": "elsewhere",
                                       "source": {"type": "MANUAL_INGESTION_SOURCE"},
                                       "requestedAt": int(time.time() * 1000)})
    cp.ingest(urn, E.EXECUTION_RESULT, {"status": "RUNNING", "startTimeMs": int(time.time() * 1000)})
    cp.create_pool("elsewhere")
    gone = executor_double("p", "gone", interval_s=0.2)
    gone.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    assert gone.claim(execution) is not None
    time.sleep(1.5)  # more than six of its intervals: OFFLINE
    cp.cp.sweep()
    for ended in (reported, execution):
        shown = cp.execution(ended)
        assert (shown["status"], shown["reason"]) == ("ABORTED", "EXECUTOR_LOST"), (ended, shown)


def test_a_reported_at_no_clock_reads_is_refused_and_claims_go_on(cp, executor_double):
    """2**63 - 1 is a valid Long: stored, it overflowed the claim's time on the executor's clock,
    and every claim of that process failed with 500 until its next heartbeat."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e", interval_s=30)
    executor.heartbeat()
    status, properties = _heartbeat_snapshot(executor, [])
    with pytest.raises(ControlPlaneError) as refused:
        executor.client.heartbeat("e", {**status, "reportedAt": (1 << 63) - 1}, properties)
    assert refused.value.status == 400
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    assert executor.claim(execution) is not None


def test_a_run_its_holder_stopped_listing_is_queued_again_after_the_holders_clock_was_set_back(cp, executor_double):
    """An executor's clock an hour ahead, corrected (NTP) after it claimed a run whose answer it
    never got: its heartbeats, an hour earlier by its clock than the claim's time counted on it,
    were each taken as built before the claim, and the run stayed RUNNING for that hour on an
    executor that did not hold it. A heartbeat that sets its clock back is taken as new (it is
    no copy), and the claims timed on the clock before it are no longer compared with it."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e", interval_s=15)
    ahead_ms = 3600 * 1000
    status, properties = _heartbeat_snapshot(executor, [])
    executor.client.heartbeat("e", {**status, "reportedAt": status["reportedAt"] + ahead_ms}, properties)
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    assert executor.claim(execution) is not None  # its answer lost: the executor never holds it
    for _ in range(2):
        time.sleep(0.05)
        executor.heartbeat(running=[])  # the clock corrected: an hour earlier
    assert cp.execution(execution)["status"] == "PENDING", "not listed in two heartbeats: queued again"


def test_a_heartbeat_built_before_a_claim_retried_is_no_miss(cp, executor_double):
    """An executor gave up a claim (its answer lost) and left the run out of a heartbeat; it
    then received the message again and claimed it anew, granted as its own claim repeated. A
    heartbeat built before that claim and delivered after it was counted as the second miss,
    from the first claim's time: the run was queued again as it started, and its executor fenced
    off (409) and killing it. The claim granted again counts from its own time, as a first one."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e", interval_s=15)
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    first = executor.claim(execution)  # its answer lost: the executor gives the claim up
    time.sleep(0.05)
    executor.heartbeat(running=[])
    assert cp.execution(execution)["status"] == "RUNNING", "one heartbeat without it"
    time.sleep(0.2)
    built_before = _heartbeat_snapshot(executor, [])
    time.sleep(0.3)
    again = executor.claim(execution)
    assert again is not None and again.lease == first.lease, "the same claim, granted again"
    executor.client.heartbeat("e", *built_before)
    assert cp.execution(execution)["status"] == "RUNNING", "a heartbeat built before the claim is no miss"
    time.sleep(0.05)
    executor.heartbeat(running=[execution])
    executor.finish(again)
    assert cp.execution(execution)["status"] == "SUCCESS"
