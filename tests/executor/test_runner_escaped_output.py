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
from pathlib import Path
from types import SimpleNamespace

import executor.runner as runner_module
from executor.controlplane_client import Claimed
from executor.leases import Leases, QueueRef
from executor.ledger import Ledger
from executor.operability import ExecutorMetrics
from executor.runner import RunnerServices, TaskRunner
from executor.runtime.secrets import ChainedSecretStore
from executor.runtime.task_log import TaskLogDirectory
from executor.runtime.tasks import prepare_task
from executor.runtime.venvs import VenvCache
from executor.task_users import TaskUsers
from sandbox import Sandbox

EXECUTION = "exe_escaped_output"


class Recording:
    def __init__(self) -> None:
        self.results: list[dict] = []

    def claim(self, execution_id: str, **_) -> Claimed:
        return Claimed(execution_id=EXECUTION, lease="lease", task="RUN_INGEST", pool_id="pool",
                       args={"recipe": "source:\n  type: mysql\n", "version": "1.2.0"}, ingest_token="t")

    def report(self, execution_id: str, lease: str, result: dict) -> None:
        self.results.append(result)

    def cancel_requested(self, execution_id: str) -> bool:
        return False


def test_output_held_by_a_process_that_left_the_task_ends_its_pump(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "PUMP_JOIN_S", 0.5)
    escapee_pid = tmp_path / "escapee.pid"
    # Forked from a subshell that exits at once: reparented before anything can see it as the task's.
    cli_text = (f"#!/bin/sh\necho started\n(setsid sh -c 'echo $$ > {escapee_pid}; "
                "while :; do echo escaped; sleep 0.05; done' &)\nsleep 0.2\nexit 0\n")

    def stand_in_build(step) -> tuple[int, str]:
        target = Path(step.cwd)
        (target / "bin").mkdir(exist_ok=True)
        if step.argv[1] != "venv":
            (target / "bin" / "datahub").write_text(cli_text)
            (target / "bin" / "datahub").chmod(0o755)
        return 0, ""

    venvs = VenvCache(str(tmp_path / "venvs"), builder=stand_in_build)
    sandbox = Sandbox.open(f"test-{uuid.uuid4().hex[:10]}", mode="none")
    control_plane, acked = Recording(), []
    leases = Leases()
    lease, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
    services = RunnerServices(
        settings=SimpleNamespace(executor_id="executor-1", pool_id="pool", cancel_grace_s=1, task_pids_max=512,
                                 task_timeout_s=60, progress_interval_s=0.2),
        client=control_plane, consumers={"ingestion": None}, acks=SimpleNamespace(ack=acked.append),
        ledgers={"ingestion": Ledger("ingestion", 2), "monitors": Ledger("monitors", 2)}, leases=leases,
        sandbox=sandbox,
        prepare=lambda claimed, user: prepare_task(
            claimed.task, claimed.args, execution_id=claimed.execution_id, secrets=ChainedSecretStore([]), venvs=venvs,
            work_root=str(tmp_path / "work"), default_version="native", gms_url="http://127.0.0.1:9",
            ingest_token="t", user=user, network={}),
        logs=SimpleNamespace(bucket=None), task_logs=TaskLogDirectory(str(tmp_path / "logs"), held=lambda: set()),
        metrics=ExecutorMetrics(), instance_id="instance-1", task_users=TaskUsers.shared(None), private_tmp=False,
        stopping=threading.Event(), kill_now=threading.Event())
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
