"""An adversarial review of the execution life cycle: sequences that ended a run wrongly, each
played against the embedded control plane with the executor double. Sweeps run only when a test
calls them (this module's `cp`), so a sweep lands exactly where the sequence needs it."""
from __future__ import annotations

import time

import pytest

from controlplane import server
from controlplane.testing import running_controlplane
from executor.controlplane_client import ClaimDeferred

from .conftest import RECIPE


@pytest.fixture
def cp(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "SWEEP_INTERVAL_S", 3600.0)
    with running_controlplane(tmp_path / "cp") as handle:
        yield handle


def _delete_executor(cp, executor_id: str) -> int:
    return cp.http.post(f"{cp.gms_url}/entities?action=delete",
                        json={"urn": f"urn:li:dataHubRemoteExecutor:{executor_id}"}, timeout=10).status_code


def test_a_deleted_executor_that_comes_back_is_not_granted_a_run_the_next_sweep_aborts(cp, executor_double):
    """An admin deletes an executor that went quiet (allowed: not ONLINE, holding nothing). Its
    process was only cut off; back, its intake claims a message before its next heartbeat.
    Granted, the claim named a holder with no registered process, and the next sweep ended the
    run ABORTED (EXECUTOR_LOST) while the executor ran it. The claim is deferred instead (its
    message goes back), and granted once the process has heartbeaten again."""
    cp.create_pool("p", default=True)
    quiet = executor_double("p", "quiet", interval_s=0.2)
    quiet.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    time.sleep(1.5)  # six of its intervals: OFFLINE
    assert _delete_executor(cp, "quiet") == 200

    assert isinstance(quiet.claim(execution), ClaimDeferred), "deferred: its message goes back, kept"
    cp.cp.sweep()
    assert cp.execution(execution)["status"] == "PENDING"

    quiet.heartbeat()
    claimed = quiet.claim(execution, receive_count=2)
    cp.cp.sweep()
    assert cp.execution(execution)["status"] == "RUNNING"
    quiet.finish(claimed)
    assert cp.execution(execution)["status"] == "SUCCESS"


def test_a_forward_step_of_the_control_planes_wall_clock_aborts_no_live_executors_run(cp, executor_double,
                                                                                        monkeypatch):
    """Liveness is judged on the wall clock (last_seen is stored, and must outlive a restart). An
    NTP step forward, or the control plane's VM resumed from a pause, made every executor's
    last heartbeat look an hour old at once: the next sweep ended every run ABORTED
    (EXECUTOR_LOST) while the executors ran them, and their results were refused as final. A
    step is told from time passing by the monotonic clock, and judged as an outage of ours:
    executors are judged from the step at the earliest, as from our start."""
    cp.create_pool("p", default=True)
    live = executor_double("p", "live", interval_s=1.0)
    live.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    claimed = live.claim(execution)
    live.heartbeat(running=[execution])

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600.0)
    assert cp.cp.executions.abort_lost() == []
    cp.cp.sweep()
    assert cp.execution(execution)["status"] == "RUNNING"
    assert [e["status"] for e in cp.executors("p")] == ["ONLINE"]
    live.heartbeat(running=[execution])
    live.finish(claimed)
    assert cp.execution(execution)["status"] == "SUCCESS"


def test_an_executor_silent_across_a_wall_clock_step_is_still_judged_lost(cp, executor_double, monkeypatch):
    """The step moves when executors are judged from, not whether: one that never heartbeats
    again is OFFLINE six of its intervals after the step, and its run ends EXECUTOR_LOST."""
    cp.create_pool("p", default=True)
    gone = executor_double("p", "gone", interval_s=0.2)
    gone.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    gone.claim(execution)

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600.0)
    assert cp.cp.executions.abort_lost() == []
    assert cp.cp.executions.abort_lost(now=time.time() + 2.0) == [execution]
    assert (cp.execution(execution)["status"], cp.execution(execution)["reason"]) == ("ABORTED", "EXECUTOR_LOST")
