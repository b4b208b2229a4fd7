"""A runner whose execution is lost while its task runs (the control plane answers the task's
report with 409) kills the task before its work directory and virtualenv go: a real TaskRunner,
a real sandbox and child, a real prepare_task and venv cache (its build a stand-in)."""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

from executor.controlplane_client import Claimed, LeaseLost
from executor.leases import Leases, QueueRef, State
from executor.ledger import Ledger
from executor.operability import ExecutorMetrics
from executor.runner import RunnerServices, TaskRunner
from executor.runtime.secrets import ChainedSecretStore
from executor.runtime.task_log import TaskLogDirectory
from executor.runtime.tasks import prepare_task
from executor.runtime.venvs import VenvCache
from executor.task_users import TaskUsers
from sandbox import Sandbox

EXECUTION = "exe_lost_while_running"
# The task writes into its work directory until it is killed.
CLI = """#!/bin/sh
echo started
i=0
while :; do i=$((i+1)); mkdir -p "$HOME/out/$i" && : > "$HOME/out/$i/f"; done
"""


def stand_in_build(step) -> tuple[int, str]:
    target = Path(step.cwd)
    (target / "bin").mkdir(exist_ok=True)
    if step.argv[1] != "venv":
        cli = target / "bin" / "datahub"
        cli.write_text(CLI)
        cli.chmod(0o755)
    return 0, ""


class LosingControlPlane:
    """Claims, then answers the running task's report with 409: the execution is another's now."""

    def __init__(self) -> None:
        self.claimed = Claimed(execution_id=EXECUTION, lease="lease", task="RUN_INGEST", pool_id="pool",
                               args={"recipe": "source:\n  type: mysql\n", "version": "1.2.0"}, ingest_token="t")

    def claim(self, execution_id: str, **_) -> Claimed:
        return self.claimed

    def report(self, *args, **kwargs) -> None:
        time.sleep(0.3)  # the task has been writing a while
        raise LeaseLost("409: the execution is held by another run")

    def cancel_requested(self, execution_id: str) -> bool:
        return False


class Queue:
    def delete(self, ref: QueueRef) -> None:
        pass

    def return_now(self, ref: QueueRef, after_s: float = 0) -> None:
        pass


def test_a_lost_execution_kills_its_task_before_its_directory_and_venv_go(tmp_path):
    """The work directory was removed and the venv's hold dropped while the task still ran (the
    cleanup in a `finally` ran before the handler of LeaseLost killed it): a venv in use could
    be evicted under it, and the directory, written to meanwhile, was left behind for good."""
    venvs = VenvCache(str(tmp_path / "venvs"), builder=stand_in_build)
    sandbox = Sandbox.open(f"test-{uuid.uuid4().hex[:10]}", mode="auto")
    started: list = []
    alive_at_cleanup: list[bool] = []

    class Started:
        def start(self, *args, **kwargs):
            process = sandbox.start(*args, **kwargs)
            started.append(process)
            return process

    def prepare(claimed: Claimed, user, stop=None):
        prepared = prepare_task(claimed.task, claimed.args, execution_id=claimed.execution_id,
                                secrets=ChainedSecretStore([]), venvs=venvs, work_root=str(tmp_path / "work"),
                                default_version="native", gms_url="http://127.0.0.1:9", ingest_token="t", user=user,
                                network={})
        cleanup = prepared.cleanup

        def watched_cleanup() -> None:
            alive_at_cleanup.append(bool(started) and started[0].poll() is None)
            cleanup()
        prepared.cleanup = watched_cleanup
        return prepared

    leases = Leases()
    lease, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
    services = RunnerServices(
        settings=SimpleNamespace(executor_id="executor-1", pool_id="pool", cancel_grace_s=1, task_pids_max=512,
                                 task_timeout_s=60, progress_interval_s=0.2),
        client=LosingControlPlane(), consumers={"ingestion": Queue()}, acks=None,
        ledgers={"ingestion": Ledger("ingestion", 2), "monitors": Ledger("monitors", 2)}, leases=leases,
        sandbox=Started(), prepare=prepare, logs=None,
        task_logs=TaskLogDirectory(str(tmp_path / "logs"), held=lambda: set()), metrics=ExecutorMetrics(),
        instance_id="instance-1", task_users=TaskUsers.shared(None), private_tmp=False,
        stopping=threading.Event(), kill_now=threading.Event())
    try:
        runner = TaskRunner(lease, services)
        runner.start()
        runner.join(timeout=60)
        assert not runner.is_alive()
    finally:
        for process in started:
            process.kill()
            process.wait()
        sandbox.close()
    assert started and lease.state is State.LOST
    assert alive_at_cleanup and not any(alive_at_cleanup), "the work directory went while the task still ran"
    assert not os.path.exists(tmp_path / "work" / "executions" / EXECUTION), "the work directory was left behind"
