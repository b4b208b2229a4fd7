"""Sandbox mode none has no cgroup to end a task's processes with it: one that left the task's
session holds its output after the task ended. The runner reports the task, and its log pump
ends instead of relaying that process's output for as long as it lives. A real TaskRunner, a
real sandbox in mode none and a real escaping child."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from types import SimpleNamespace

import executor.runner as runner_module
from executor.leases import Leases, QueueRef
from executor.runner import TaskRunner
from sandbox import Sandbox

from .runner_harness import RecordingControlPlane, runner_services, stand_in_prepare

EXECUTION = "exe_escaped_output"


def test_output_held_by_a_process_that_left_the_task_ends_its_pump(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "PUMP_JOIN_S", 0.5)
    escapee_pid = tmp_path / "escapee.pid"
    # Forked from a subshell that exits at once: reparented before anything can see it as the task's.
    cli_text = (f"#!/bin/sh\necho started\n(setsid sh -c 'echo $$ > {escapee_pid}; "
                "while :; do echo escaped; sleep 0.05; done' &)\nsleep 0.2\nexit 0\n")
    sandbox = Sandbox.open(f"test-{uuid.uuid4().hex[:10]}", mode="none")
    control_plane, acked = RecordingControlPlane(EXECUTION), []
    leases = Leases()
    lease, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
    services = runner_services(client=control_plane, sandbox=sandbox, prepare=stand_in_prepare(tmp_path, cli_text),
                               leases=leases, logs_dir=tmp_path / "logs", acks=SimpleNamespace(ack=acked.append))
    try:
        runner = TaskRunner(lease, services)
        runner.start()
        runner.join(timeout=30)
        assert not runner.is_alive(), "the runner never finished"
        time.sleep(0.3)  # the escaped process still writes meanwhile
        assert escapee_pid.exists() and os.path.exists(f"/proc/{int(escapee_pid.read_text())}"), "nothing escaped"
        pumps = [t.name for t in threading.enumerate() if t.name.startswith("task-log-")]
        assert pumps == [], f"the log pump still relays a process that left the task: {pumps}"
        assert control_plane.results[-1]["status"] == "SUCCESS" and acked == [lease]
        assert "started" in control_plane.results[-1]["report"]
    finally:
        if escapee_pid.exists():
            os.kill(int(escapee_pid.read_text()), signal.SIGKILL)  # ours: started by this test's task
        sandbox.close()
