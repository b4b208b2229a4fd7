"""Master.health with the master's real loop threads: a loop that died fails /health whether the
executor is serving or draining; a loop that ended because it was told to does not."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from executor.master import Master
from executor.services import Loop
from executor.settings import load_settings


class Killed(BaseException):
    """What the loops do not catch (they survive every Exception)."""


def ended(loop: Loop) -> Loop:
    loop.start()
    loop.join(timeout=10)
    assert not loop.is_alive()
    return loop


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("state", ["ACTIVE", "DRAINING"])
def test_a_loop_thread_that_died_fails_health_while_serving_and_while_draining(tmp_path, state):
    """Health looked at the threads only while ACTIVE: during a drain (up to the drain timeout)
    a dead visibility extender or acknowledger went unreported, while running tasks' messages
    lapsed or stayed undeleted."""
    master = Master(load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "unused",
                                   "DATAHUB_EXECUTOR_POOL_ID": "pool", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)}))
    master.state = state
    if state == "DRAINING":
        master.stopping.set()
    stop_loops = threading.Event()

    def dies() -> float:
        raise Killed()

    intake = Loop("intake-ingestion", lambda: 0.01, master.stopping)
    master._threads = [intake, ended(Loop("visibility", dies, stop_loops))]
    intake.start()
    if state == "DRAINING":
        intake.join(timeout=10)  # the intakes end at the drain, as told
    ok, reason = master.health()
    stop_loops.set()
    master.stopping.set()
    intake.join(timeout=10)
    assert not ok and "visibility" in reason and "intake" not in reason, reason


def test_a_start_waiting_on_the_control_plane_says_so_and_stops_at_once_on_sigterm(tmp_path):
    """/health fails until the loop turns: its 200 during a young start (before the executor had
    reached DataHub) passed the chart's startup and readiness probes at once, so a rollout stopped
    the old executor before the new one took work, and the liveness probe, not the startup
    probe's 5 minutes, then judged the start. A start that never ends fails it on purpose (it rolls
    a deployment back), named for what it waits on: the reason read "main loop stalled", which
    sends an operator after a hang that is not there. A SIGTERM then waited for the next attempt,
    each with the HTTP layer's own retries: 15 s."""
    master = Master(load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "unused",
                                   "DATAHUB_EXECUTOR_POOL_ID": "pool", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path),
                                   "DATAHUB_EXECUTOR_SANDBOX_MODE": "none", "DATAHUB_EXECUTOR_TASK_USER": "none",
                                   "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0"}))
    ended_with: list[BaseException] = []

    def start() -> None:
        try:
            master._start()
        except BaseException as exc:  # SystemExit(0): stopped before the control plane came back
            ended_with.append(exc)

    starting = threading.Thread(target=start)
    starting.start()
    try:
        deadline = time.monotonic() + 20
        while "control plane" not in master._start_step and not ended_with:
            assert time.monotonic() < deadline, master._start_step
            time.sleep(0.05)
        ok, reason = master.health()
        assert not ok and reason.startswith("still starting after "), "healthy before the executor takes work"
        master._last_loop -= 61  # as if the control plane had been unreachable for a minute
        ok, reason = master.health()
        assert not ok and reason == "still starting after 61s: waiting for the control plane (pool lookup)", reason
    finally:
        signalled = time.monotonic()
        master._on_signal(signal.SIGTERM, None)  # the handler: count, and write to the wake pipe
        starting.join(timeout=30)
        took = time.monotonic() - signalled
        master._close()
    assert not starting.is_alive() and [type(e) for e in ended_with] == [SystemExit]
    assert took < 5, f"the start took {took:.1f} s to stop"


def test_readiness_fails_while_sqs_does_not_answer_and_liveness_holds(tmp_path, monkeypatch):
    """A wrong endpoint, blocked egress, a role without sqs:ReceiveMessage: every receive failed,
    the heartbeat said SQS unreachable, and /health still answered 200, so a rollout could stop
    the old executor for this one, which takes no work."""
    import executor.master as master_module
    from executor.consumer import SqsConsumer
    from executor.services import Intake

    monkeypatch.setattr(master_module, "SQS_DOWN_UNREADY_S", 0.5)
    master = Master(load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "unused",
                                   "DATAHUB_EXECUTOR_POOL_ID": "pool", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)}))
    master.state = "ACTIVE"
    master._last_loop = time.monotonic()
    nowhere = SqsConsumer("http://127.0.0.1:9/123456789012/q", "ingestion", region="us-east-1",
                          endpoint_url="http://127.0.0.1:9", visibility_timeout_s=60, local_credentials=True)
    intake = Intake(nowhere, master.ledgers["ingestion"], master.leases, master._offer, master.stopping, master.outage)
    assert master.health() == (True, "ACTIVE")
    intake.step()  # the receive fails: SQS is noticed unreachable
    assert master.outage.is_down
    assert master.health()[0], "a blip is not an outage"
    time.sleep(0.6)
    master._last_loop = time.monotonic()
    ok, reason = master.health()
    assert not ok and "SQS unreachable" in reason, reason
    assert master.alive() == (True, "ACTIVE"), "a restart would not mend SQS"


def test_a_start_longer_than_the_stall_limit_is_no_stalled_loop(tmp_path, monkeypatch):
    """The stall clock ran from the master's construction: a start longer than the stall limit
    (a control plane slow to answer at boot) made the first heartbeat, sent before the main
    loop's first turn, and /health meanwhile say the loop had stalled. A real start against a
    real control plane, with the limit cut to 0.5 s and the pool lookup held for 1 s."""
    import executor.master as master_module
    from controlplane.testing import running_controlplane

    monkeypatch.setattr(master_module, "LOOP_STALL_S", 0.5)
    with running_controlplane(tmp_path / "cp") as cp:
        cp.create_pool("p", default=True)
        master = Master(load_settings({"DATAHUB_GMS_URL": cp.gms_url, "DATAHUB_GMS_TOKEN": cp.create_executor_token(["p"]),
                                       "DATAHUB_EXECUTOR_POOL_ID": "p", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path / "w"),
                                       "DATAHUB_EXECUTOR_SANDBOX_MODE": "none", "DATAHUB_EXECUTOR_TASK_USER": "none",
                                       "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0"}))
        until_ok, beat_safely = master._until_ok, master._beat_safely
        first_beat: list[tuple[bool, str]] = []

        def slow_at_boot(what: str, call):
            if what == "pool lookup":
                time.sleep(1.0)
            return until_ok(what, call)

        def recording(*args, **kwargs) -> bool:
            if not first_beat:
                first_beat.append(master.alive())
            return beat_safely(*args, **kwargs)

        monkeypatch.setattr(master, "_until_ok", slow_at_boot)
        monkeypatch.setattr(master, "_beat_safely", recording)
        ended: list[BaseException] = []

        def main() -> None:
            try:
                master._start()
                master._stop(master._wait_and_drain())
            except BaseException as exc:
                ended.append(exc)

        serving = threading.Thread(target=main)
        serving.start()
        try:
            deadline = time.monotonic() + 30
            while not first_beat and serving.is_alive():
                assert time.monotonic() < deadline, master._start_step
                time.sleep(0.02)
        finally:
            master.request_stop()
            serving.join(timeout=60)
    assert not serving.is_alive() and not ended, ended
    assert first_beat == [(True, "ACTIVE")], first_beat


def test_readiness_fails_while_draining_and_liveness_holds(tmp_path):
    """/health answered 200 "DRAINING" through a whole drain (and "STOPPED" until its server
    closed), though the docs and the code's own description say 503 when it takes no work."""
    master = Master(load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "unused",
                                   "DATAHUB_EXECUTOR_POOL_ID": "pool", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)}))
    master._last_loop = time.monotonic()
    master.state = "ACTIVE"
    assert master.health() == (True, "ACTIVE")
    master.stopping.set()
    master.state = "DRAINING"
    assert master.health() == (False, "draining: taking no new work")
    assert master.alive() == (True, "DRAINING"), "a restart would kill the tasks the drain waits for"
    master.state = "STOPPED"
    assert master.health() == (False, "stopped")
