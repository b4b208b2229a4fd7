"""A task whose process has ended holds weight its intake may already receive for (decision 87):
the runner wakes the intake as it begins to report, rather than leaving it asleep until the next
admission or release, which comes only once the result is recorded. A real TaskRunner, a real
sandbox in mode none and a real child; the result call held until the test lets it go."""
from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace

from executor.leases import Leases, QueueRef, State
from executor.runner import TaskRunner
from sandbox import Sandbox

from .runner_harness import RecordingControlPlane, runner_services, stand_in_prepare

EXECUTION = "exe_wakes_the_intake"
CLI = "#!/bin/sh\nsleep 1\necho done\nexit 0\n"


class HeldResults(RecordingControlPlane):
    """Takes the final result only once the test lets it go."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(execution_id)
        self.let_go = threading.Event()
        self.result_sent = threading.Event()

    def report(self, execution_id: str, lease: str, result: dict) -> None:
        if result["status"] != "RUNNING":
            self.result_sent.set()
            self.let_go.wait(60)
        super().report(execution_id, lease, result)


def test_the_intake_asleep_on_a_full_ledger_is_woken_when_a_task_begins_to_report(tmp_path):
    sandbox = Sandbox.open(f"test-{uuid.uuid4().hex[:10]}", mode="none")
    control_plane, acked = HeldResults(EXECUTION), []
    leases = Leases()
    lease, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
    services = runner_services(client=control_plane, sandbox=sandbox, prepare=stand_in_prepare(tmp_path, CLI),
                               leases=leases, logs_dir=tmp_path / "logs", acks=SimpleNamespace(ack=acked.append))
    ledger = services.ledgers["ingestion"]
    intake_woken = threading.Event()
    try:
        runner = TaskRunner(lease, services)
        runner.start()
        while lease.state is not State.RUNNING:  # admitted: what wakes the ledger for that is over
            assert runner.is_alive(), "the runner ended before its task ran"
            threading.Event().wait(0.01)

        def intake_asleep() -> None:  # as services.Intake waits when its ledger has no room
            ledger.wait_for_change(60)
            intake_woken.set()

        threading.Thread(target=intake_asleep, daemon=True).start()
        assert control_plane.result_sent.wait(30), "the task never reported its result"
        assert intake_woken.wait(30), "the intake slept on while the task reported its result"
        assert not control_plane.results or control_plane.results[-1]["status"] == "RUNNING", \
            "woken before the result was recorded, not by its release"
        assert leases.reporting("ingestion") == {EXECUTION}
    finally:
        control_plane.let_go.set()
        runner.join(timeout=30)
        sandbox.close()
    assert control_plane.results[-1]["status"] == "SUCCESS" and acked == [lease]
