"""The whole system on one machine: the real control plane with its embedded SQS server, and
real `datahub-executor run` processes confined by real cgroups, running real `datahub ingest`."""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.testing import ControlPlaneHandle, running_controlplane
from executor.testing import (DATAHUB_VERSION, EXECUTOR, ROOT, VENV_CACHE, ExecutorProcess,  # noqa: F401
                              free_port, mock_recipe, remove_cgroup_roots, stop_all_without_draining)


class System:
    def __init__(self, cp: ControlPlaneHandle, tmp_path: Path) -> None:
        self.cp = cp
        self.tmp_path = tmp_path
        self.pool_id = "remote"
        self.executors: list[ExecutorProcess] = []
        self.cgroup_roots: set[str] = set()

    def executor_env(self, executor_id: str = "executor-1", **overrides: str) -> dict[str, str]:
        token = self.cp.create_executor_token([self.pool_id])
        work = self.tmp_path / executor_id
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUB_", "AWS_"))}
        env.update({
            "DATAHUB_GMS_URL": self.cp.gms_url, "DATAHUB_GMS_TOKEN": token, "DATAHUB_EXECUTOR_POOL_ID": self.pool_id,
            "DATAHUB_EXECUTOR_ID": executor_id, "DATAHUB_EXECUTOR_WORK_DIR": str(work),
            "DATAHUB_EXECUTOR_VENV_CACHE_DIR": str(VENV_CACHE), "DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION": DATAHUB_VERSION,
            "DATAHUB_EXECUTOR_CGROUP_ROOT": f"test-exec-{uuid.uuid4().hex[:8]}",
            "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0", "DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL": "1",
            "DATAHUB_EXECUTOR_PROGRESS_INTERVAL": "1", "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(self.tmp_path / "secrets"),
            "DATAHUB_EXECUTOR_DRAIN_TIMEOUT": "20", "DATAHUB_EXECUTOR_CANCEL_GRACE": "5",
            # The harness's paths live under pytest's private /tmp and its Python under /root: tasks
            # run as the executor's user here; test_task_isolation_end_to_end.py runs them as another.
            "DATAHUB_EXECUTOR_TASK_USER": "none", "DATAHUB_EXECUTOR_TASK_PRIVATE_TMP": "false",
        })
        env.update(overrides)
        self.cgroup_roots.add(env["DATAHUB_EXECUTOR_CGROUP_ROOT"])
        return env

    def start_executor(self, executor_id: str = "executor-1", **overrides: str) -> ExecutorProcess:
        executor = ExecutorProcess(self.executor_env(executor_id, **overrides))
        self.executors.append(executor)
        executor.wait_for_line("Starting datahub executor worker", timeout_s=60)
        return executor


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    (tmp_path / "secrets").mkdir()
    with running_controlplane(tmp_path / "controlplane") as cp:
        cp.create_pool("remote", default=True, visibility_timeout_s=30)
        system = System(cp, tmp_path)
        try:
            yield system
        finally:
            stop_all_without_draining(system.executors)
            left = remove_cgroup_roots(system.cgroup_roots)
    assert not left, f"executors left task cgroups behind: {left}"


def live_tasks(cgroup_root: str) -> int:
    """Task cgroups with a process in them under an executor's sandbox root: what really runs."""
    from sandbox.detect import read_hierarchies, v1_hierarchy, v2_hierarchy

    hierarchies = read_hierarchies()
    hierarchy = v1_hierarchy(hierarchies, "memory") or v2_hierarchy(hierarchies)
    count = 0
    for task in (Path(hierarchy.own_dir) / cgroup_root).glob("task-*"):
        try:
            count += bool((task / "cgroup.procs").read_text().split())
        except OSError:
            pass
    return count


TEST_SOURCES = Path(__file__).parent / "sources"


def custom_recipe(kind: str, out_file: Path, **config) -> str:
    body = ", ".join(f"{k}: {json_scalar(v)}" for k, v in config.items())
    return (f"source:\n  type: e2e_test_sources.{kind}\n  config: {{{body}}}\n"
            f"sink:\n  type: file\n  config:\n    filename: {out_file}\n")


def json_scalar(value) -> str:
    import json

    return json.dumps(value)


def custom_env(**extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(TEST_SOURCES), **extra}


def wait_for_tick(system: System, execution_id: str, timeout_s: float = 120) -> None:
    """Until the running task's masked log tail, shipped with progress, shows a SleepySource tick."""
    deadline = time.monotonic() + timeout_s
    while "sleepy tick" not in (system.cp.execution(execution_id)["log_tail"] or ""):
        assert time.monotonic() < deadline, "the task never started or its log tail never arrived"
        time.sleep(0.2)
