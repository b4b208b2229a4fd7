"""A stop that begins while a task waits for another task's virtualenv build, or runs its own,
ends the wait: the build is killed and the task given back. A blocking flock and a build that
may run for INSTALL_TIMEOUT_S (30 minutes) held a stopping executor past any drain timeout,
past a second SIGTERM, and past a supervisor's grace period."""
from __future__ import annotations

import fcntl
import os
import resource
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


def test_a_task_waiting_for_another_tasks_build_stops_waiting_when_its_run_is_cancelled(tmp_path):
    """The run's own flag (its cancel), not the executor's stop: the cache's stays unset."""
    stopping, cancelled = threading.Event(), threading.Event()

    def never_built(step: InstallStep):
        raise AssertionError("the waiting task built the venv itself")

    cache = VenvCache(str(tmp_path), builder=never_built, stopping=stopping)
    key = cache.venv_dir(VERSION, [], []).name
    with open(tmp_path / f"{key}.lock", "w") as building:
        fcntl.flock(building, fcntl.LOCK_EX)
        stop_soon(cancelled)
        with pytest.raises(PreparationStopped):
            cache.datahub_cli(VERSION, [], [], stop=cancelled)
    assert not stopping.is_set()


def test_a_running_build_is_killed_when_the_run_it_is_for_is_cancelled(tmp_path):
    sandbox = _open_or_skip()
    try:
        cancelled = threading.Event()
        builder = ConfinedBuilder(sandbox, threading.Event())
        stop_soon(cancelled)
        with pytest.raises(PreparationStopped):
            builder(InstallStep(argv=["/bin/sleep", "600"], env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path),
                                stop=cancelled))
        assert sandbox.sweep() == [], "the killed build left its cgroup"
    finally:
        sandbox.close()


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


def test_a_build_runs_and_reports_when_the_master_holds_descriptors_above_1023(tmp_path):
    """The master raises its open-files limit, and with a few hundred tasks running its
    descriptors pass 1023, where select() refuses one (ValueError): the build's output was read
    with it, the builder raised, and its build went on running after the runner had given back
    the weight and the uid."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"this process may hold at most {hard} descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]  # what a few hundred running tasks hold
    sandbox = _open_or_skip()
    try:
        builder = ConfinedBuilder(sandbox, threading.Event())
        code, output = builder(InstallStep(argv=["/bin/sh", "-c", "echo built"], env={"PATH": "/usr/bin:/bin"},
                                           cwd=str(tmp_path)))
        assert (code, output) == (0, "built\n")
    finally:
        sandbox.close()
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class BreaksWhenAsked(threading.Event):
    """A stop flag whose second reading fails, as anything in the builder's read loop might."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def is_set(self) -> bool:
        self.asked += 1
        if self.asked > 1:
            raise RuntimeError("the read loop broke")
        return False


def test_a_build_whose_reading_breaks_is_killed_before_the_builder_raises(tmp_path):
    sandbox = _open_or_skip()
    try:
        builder = ConfinedBuilder(sandbox, BreaksWhenAsked())
        with pytest.raises(RuntimeError, match="the read loop broke"):
            builder(InstallStep(argv=["/bin/sh", "-c", "echo building; exec sleep 600"],
                                env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path)))
        assert not [p for p in sandbox._started if p.poll() is None], "the build outlived its builder"
        assert sandbox.sweep() == [], "the build's cgroup was left"
    finally:
        sandbox.close()
