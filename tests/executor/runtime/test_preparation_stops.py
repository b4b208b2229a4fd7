"""A stop that begins while a task waits for another task's virtualenv build, or runs its own,
ends the wait: the build is killed and the task given back. A blocking flock and a build that
may run for INSTALL_TIMEOUT_S (30 minutes) held a stopping executor past any drain timeout,
past a second SIGTERM, and past a supervisor's grace period."""
from __future__ import annotations

import fcntl
import threading
import time

import pytest

from executor.runtime.builds import ConfinedBuilder
from executor.runtime.venvs import InstallStep, PreparationStopped, VenvCache
from tests.sandbox.conftest import _open_or_skip

VERSION = "1.7.0.17"


def stop_soon(stopping: threading.Event, after_s: float = 0.5) -> None:
    threading.Timer(after_s, stopping.set).start()


def test_a_task_waiting_for_another_tasks_build_stops_waiting_when_the_executor_stops(tmp_path):
    stopping = threading.Event()

    def never_built(step: InstallStep):
        raise AssertionError("the waiting task built the venv itself")

    cache = VenvCache(str(tmp_path), builder=never_built, stopping=stopping)
    key = cache.venv_dir(VERSION, [], []).name
    with open(tmp_path / f"{key}.lock", "w") as building:  # another task's build holds the lock
        fcntl.flock(building, fcntl.LOCK_EX)
        stop_soon(stopping)
        began = time.monotonic()
        with pytest.raises(PreparationStopped):
            cache.datahub_cli(VERSION, [], [])
        assert time.monotonic() - began < 20


def test_a_running_build_is_killed_when_the_executor_stops(tmp_path):
    sandbox = _open_or_skip()
    try:
        stopping = threading.Event()
        builder = ConfinedBuilder(sandbox, stopping)
        stop_soon(stopping)
        began = time.monotonic()
        with pytest.raises(PreparationStopped):
            builder(InstallStep(argv=["/bin/sleep", "600"], env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path)))
        assert time.monotonic() - began < 20
        assert sandbox.sweep() == [], "the killed build left its cgroup"
    finally:
        sandbox.close()


def test_a_build_that_ends_by_itself_reports_its_exit_code_and_output(tmp_path):
    sandbox = _open_or_skip()
    try:
        builder = ConfinedBuilder(sandbox, threading.Event())
        code, output = builder(InstallStep(argv=["/bin/sh", "-c", "echo resolving; echo no such package >&2; exit 3"],
                                           env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path)))
        assert code == 3 and output.splitlines() == ["resolving", "no such package"]
    finally:
        sandbox.close()
