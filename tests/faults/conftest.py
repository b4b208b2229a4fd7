"""The fault suite runs on the end-to-end harness: the real control plane with its SQS server,
real `datahub-executor run` processes, real cgroups, real `datahub ingest`."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil

from sandbox.detect import read_hierarchies, v1_hierarchy, v2_hierarchy
from tests.e2e.conftest import system  # noqa: F401 (the fixture, shared)


class Sampler:
    """Calls `sample()` every `interval_s` on a thread until stopped; keeps every value."""

    def __init__(self, sample, interval_s: float = 0.2) -> None:
        self.values: list = []
        self._sample = sample
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.values.append(self._sample())
            except (psutil.Error, OSError):
                pass
            self._stop.wait(self._interval_s)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / (1 << 20)


def _task_dirs(cgroup_root: str) -> list[Path]:
    """The task cgroups under an executor's root, in the v1 pids hierarchy (or v2)."""
    hierarchies = read_hierarchies()
    hierarchy = v1_hierarchy(hierarchies, "pids") or v2_hierarchy(hierarchies)
    return list((Path(hierarchy.own_dir) / cgroup_root).glob("task-*"))


def task_pids_current(cgroup_root: str) -> dict[str, int]:
    """pids.current of every task cgroup under an executor's root."""
    values = {}
    for task_dir in _task_dirs(cgroup_root):
        try:
            values[task_dir.name] = int((task_dir / "pids.current").read_text())
        except (OSError, ValueError):
            pass
    return values


def task_processes(cgroup_root: str) -> list[int]:
    """Every process in the task cgroups under an executor's root."""
    pids = []
    for task_dir in _task_dirs(cgroup_root):
        try:
            pids += [int(p) for p in (task_dir / "cgroup.procs").read_text().split()]
        except OSError:
            pass
    return pids


def identities(pids: list[int]) -> set[tuple[int, float]]:
    """(pid, start time) of each live process: a pid the kernel hands out again is not mistaken
    for the process that had it."""
    found = set()
    for pid in pids:
        try:
            found.add((pid, psutil.Process(pid).create_time()))
        except psutil.Error:
            pass
    return found


def still_running(seen: set[tuple[int, float]]) -> list[int]:
    """Those of SEEN that still run (a zombie has ended and only waits for its reaper)."""
    alive = []
    for pid, started in seen:
        try:
            process = psutil.Process(pid)
            if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.Error:
            pass
    return alive


def wait_for_log_tail(cp, execution_id: str, text: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (cp.execution(execution_id)["log_tail"] or ""):
        assert time.monotonic() < deadline, f"{text!r} never reached the control plane"
        time.sleep(0.2)


def pytest_collection_modifyitems(items) -> None:
    """Everything here carries the `faults` marker: `-m "not faults"` gives a quick run, CI runs all."""
    import pytest

    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.faults)
