"""A runner whose result is refused for good gives its execution back (a release), and the control
plane queues it again at once; this executor's intake may take the new message and start a
second runner for the same execution, in the work directory of the same name. The first runner
removed that directory on its way out, under the second one's running task. Real TaskRunners, a
real stand-in CLI in a real sandbox (mode none), the release answered as the control plane does:
a new message for the same execution, received by this executor."""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from executor.controlplane_client import Claimed, ControlPlaneError
from executor.leases import Leases, QueueRef
from executor.runner import TaskRunner
from sandbox import Sandbox

from .runner_harness import RECIPE_ARGS, runner_services, stand_in_prepare

EXECUTION = "exe_released_then_rerun"
# The task marks nothing itself: prepare() leaves a marker in the work directory, and the task
# says at its end whether its directory, marker and all, is still there.
CLI = """#!/bin/sh
echo "started"
sleep 2.5
if [ -e "$PWD/marker" ]; then echo "WORKDIR INTACT"; else echo "WORKDIR GONE under the running task"; fi
"""


class ControlPlane:
    """Refuses the first run's result for good (422); a release queues the execution again, and
    this executor's intake receives the new message at once."""

    def __init__(self, leases: Leases, start_runner) -> None:
        self.leases, self.start_runner = leases, start_runner
        self.claims, self.results, self.releases = 0, [], []

    def claim(self, execution_id: str, **_) -> Claimed:
        self.claims += 1
        return Claimed(execution_id=execution_id, lease=f"lease-{self.claims}", task="RUN_INGEST", pool_id="pool",
                       args=dict(RECIPE_ARGS), ingest_token="t")

    def report(self, execution_id: str, lease: str, result: dict) -> None:
        if result["status"] == "RUNNING":
            return
        self.results.append((lease, result))
        if lease == "lease-1":
            raise ControlPlaneError("POST /aspects: HTTP 422: refused", 422)

    def cancel_requested(self, execution_id: str) -> bool:
        return False

    def release(self, execution_id: str, lease: str, why: str, failed: bool = False) -> None:
        self.releases.append(lease)
        lease_again, _ = self.leases.receive(execution_id, QueueRef("ingestion", "message-2", "handle-2", 1, 0))
        threading.Thread(target=self.start_runner, args=(lease_again,)).start()


class SlowSqs:
    """The first message's delete takes a while (a slow SQS): the first runner is still on its
    way out while the second one runs."""

    def delete(self, ref: QueueRef) -> None:
        if ref.message_id == "message-1":
            time.sleep(1.0)

    def return_now(self, ref: QueueRef, after_s: float = 0) -> None:
        pass


def test_a_released_runner_leaves_the_directory_of_the_next_run_of_its_execution_alone(tmp_path):
    sandbox = Sandbox.open(f"test-{uuid.uuid4().hex[:10]}", mode="none")
    runners: list[TaskRunner] = []
    prepare_as_the_master = stand_in_prepare(tmp_path, CLI)

    def prepare(claimed, user, stop):
        prepared = prepare_as_the_master(claimed, user, stop)
        Path(prepared.workdir, "marker").write_text(claimed.lease)
        return prepared

    def start_runner(lease) -> None:
        runner = TaskRunner(lease, services)
        runners.append(runner)
        runner.start()

    leases = Leases()
    control_plane = ControlPlane(leases, start_runner)
    services = runner_services(client=control_plane, sandbox=sandbox, prepare=prepare, leases=leases,
                               logs_dir=tmp_path / "logs", consumers={"ingestion": SlowSqs()}, progress_interval_s=0.5)
    try:
        first, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
        start_runner(first)
        deadline = time.monotonic() + 60
        while (len(runners) < 2 or any(r.is_alive() for r in runners)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(runners) == 2 and not any(r.is_alive() for r in runners), "the runners never finished"
    finally:
        sandbox.close()
    assert control_plane.releases == ["lease-1"]
    (second,) = [result for lease, result in control_plane.results if lease == "lease-2"]
    assert second["status"] == "SUCCESS"
    assert "WORKDIR INTACT" in second["report"], second["report"]
    assert not (tmp_path / "work" / "executions" / EXECUTION).exists(), "the second run's cleanup did not happen"
