"""A run's result is recorded once: an error in the runner after the control plane recorded it
(here the metrics raise as the run is counted) must not report a second, FAILURE result over
it, and the message still goes to be deleted. Before, the runner's recovery saw the lease still
REPORTING (it becomes ACKED once the delete is answered) and reported the run again as
FAILURE (EXECUTOR_ERROR), and the message, never handed to the deleter, stayed held."""
from __future__ import annotations

import uuid
from types import SimpleNamespace

from executor.leases import Leases, QueueRef
from executor.operability import ExecutorMetrics
from executor.runner import TaskRunner
from sandbox import Sandbox

from .runner_harness import RecordingControlPlane, runner_services, stand_in_prepare

EXECUTION = "exe_one_result"


class MetricsThatFailOnCounting(ExecutorMetrics):
    def task_finished(self, *args, **kwargs) -> None:
        raise RuntimeError("a metrics error, after the result was recorded")


def test_an_error_after_the_result_is_recorded_reports_nothing_more_and_the_message_is_deleted(tmp_path):
    sandbox = Sandbox.open(f"test-{uuid.uuid4().hex[:10]}", mode="auto")
    control_plane, acked = RecordingControlPlane(EXECUTION), []
    leases = Leases()
    lease, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
    services = runner_services(client=control_plane, sandbox=sandbox,
                               prepare=stand_in_prepare(tmp_path, "#!/bin/sh\necho done\n"), leases=leases,
                               logs_dir=tmp_path / "logs", acks=SimpleNamespace(ack=acked.append))
    services.metrics = MetricsThatFailOnCounting()
    runner = TaskRunner(lease, services)
    try:
        runner.start()
        runner.join(timeout=60)
    finally:
        sandbox.close()
    assert not runner.is_alive()
    assert [r["status"] for r in control_plane.results] == ["SUCCESS"], "the recorded run was reported again"
    assert acked == [lease], "the message of the recorded run was not handed to be deleted"
    assert services.ledgers["ingestion"].snapshot().used == 0
