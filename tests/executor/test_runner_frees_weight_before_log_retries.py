"""Once a task's result is recorded, nothing of the executor's capacity waits on its full log:
the log's tries after the result (a slow or unanswering log store) hold no weight. A real
TaskRunner, a real sandbox and a stand-in `datahub` whose log is too long for the report."""
from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace

from executor.controlplane_client import ControlPlaneError
from executor.leases import Leases, QueueRef
from executor.runner import TaskRunner
from sandbox import Sandbox

from .runner_harness import RecordingControlPlane, runner_services, stand_in_prepare

EXECUTION = "exe_log_after_result"
# More than a report holds (datahub_aspects.REPORT_MAX_CHARS): the full log is uploaded on its own.
CLI = "#!/bin/sh\nyes 'a line of the task log' | head -c 900000\nexit 0\n"


class SlowLogStore:
    """The control plane's log upload: the quick try before the result finds it down; the tries
    after the result wait until the test lets them through."""
    bucket = None

    def __init__(self) -> None:
        self.waiting_after_result = threading.Event()
        self.let_through = threading.Event()
        self.uploaded: list[int] = []

    def upload(self, execution_id: str, lease: str, data: bytes, *, accepted=(), quick: bool = False) -> str:
        if quick:
            raise ControlPlaneError("log store unavailable", status=503)
        self.waiting_after_result.set()
        self.let_through.wait(60)
        self.uploaded.append(len(data))
        return "control plane"

    def destination(self, execution_id: str) -> str:
        return "control plane"


def test_the_weight_goes_back_once_the_result_is_recorded_not_after_the_log_upload(tmp_path):
    sandbox = Sandbox.open(f"test-{uuid.uuid4().hex[:10]}", mode="auto")
    control_plane, acked, logs = RecordingControlPlane(EXECUTION), [], SlowLogStore()
    leases = Leases()
    lease, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
    services = runner_services(client=control_plane, sandbox=sandbox, prepare=stand_in_prepare(tmp_path, CLI),
                               leases=leases, logs_dir=tmp_path / "logs", logs=logs,
                               acks=SimpleNamespace(ack=acked.append))
    ledger = services.ledgers["ingestion"]
    runner = TaskRunner(lease, services)
    try:
        runner.start()
        assert logs.waiting_after_result.wait(60), "the log was never uploaded after the result"
        assert control_plane.results[-1]["status"] == "SUCCESS" and acked == [lease], "the result is recorded"
        assert ledger.snapshot().used == 0, "the weight is held while the log waits on its store"
        assert ledger.receive_capacity() == 2
    finally:
        logs.let_through.set()
        runner.join(timeout=60)
        sandbox.close()
    assert not runner.is_alive() and logs.uploaded, "the log still went, after the result"
    assert ledger.snapshot().used == 0 and ledger.running_keys() == []
