"""The reaper always publishes an outcome: under concurrent scans in mode none, when a step
after the wait fails, and when a kill cannot empty the cgroup (without spinning)."""
from __future__ import annotations

import errno
import logging
import os
import subprocess
import threading
import time
import uuid

import pytest

from sandbox import Limits, SandboxError, Status
from sandbox import driver as sandbox_driver
from sandbox.cgroup_v1 import CgroupV1Driver, V1TaskGroup
from sandbox.cgroup_v2 import V2TaskGroup
from sandbox.detect import Hierarchy, read_hierarchies, v1_hierarchy

from .conftest import pid_alive

GROUP_CLASSES = {"cgroup-v1": V1TaskGroup, "cgroup-v2": V2TaskGroup}


def reaper_errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sandbox" and r.levelno >= logging.ERROR]


def thread_cpu_seconds(native_id: int) -> float:
    """User+system CPU time of one thread of this process."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_concurrent_scans_in_mode_none_never_lose_the_outcome(none_sandbox):
    """The reaper's watchdog and other threads' process_count()/memory_current() scan the same
    tree while its processes come and go. Two scans that both saw a pid die used to delete it
    twice: KeyError in the reaper, which died without an outcome, and wait() blocked forever."""
    churn = "for i in $(seq 150); do sleep 0.01 & sleep 0.01 & sleep 0.004; done; wait"
    process = none_sandbox.start(["bash", "-c", churn], Limits(memory_max_bytes=1 << 30, timeout_s=60))
    failures: list[BaseException] = []
    stop = threading.Event()

    def scan() -> None:
        while not stop.is_set():
            try:
                process.process_count()
                process.memory_current()
            except Exception as exc:  # collected: the assertion below names it
                failures.append(exc)
                return

    scanners = [threading.Thread(target=scan) for _ in range(4)]
    for scanner in scanners:
        scanner.start()
    try:
        outcome = process.wait(timeout=30)
    finally:
        stop.set()
        for scanner in scanners:
            scanner.join()
    assert failures == []
    assert outcome.status is Status.SUCCEEDED


@pytest.mark.parametrize("step", ["oom_kills", "memory_peak", "pids_limit_hits", "remove"])
def test_a_failing_reaper_step_still_publishes_the_outcome_and_is_logged_once(sandbox, monkeypatch, caplog, step):
    group_class = GROUP_CLASSES[sandbox.mode]

    def fail(self, *args):
        raise OSError(errno.EIO, f"injected failure in {step}")

    monkeypatch.setattr(group_class, step, fail)
    process = sandbox.start(["sh", "-c", "exit 3"])
    outcome = process.wait(timeout=10)
    monkeypatch.undo()
    if step == "remove":
        process._group.remove()
    assert outcome.status is Status.FAILED
    assert outcome.exit_code == 3, "what is known is still reported"
    errors = reaper_errors(caplog)
    assert len(errors) == 1 and f"injected failure in {step}" in errors[0].exc_text


@pytest.fixture
def foreign_freezer():
    """A v1 freezer cgroup the sandbox does not own, below our own: freezing a task's process
    there leaves it unkillable (D state) until thawed, as a process stuck in the kernel is."""
    hierarchy = v1_hierarchy(read_hierarchies(), "freezer")
    if hierarchy is None or not hierarchy.writable:
        pytest.skip("needs a writable cgroup v1 freezer hierarchy")
    path = os.path.join(hierarchy.own_dir, f"test-stuck-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    try:
        yield path
    finally:
        with open(os.path.join(path, "freezer.state"), "w") as f:
            f.write("THAWED")
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def freeze(freezer: str, pid: int) -> None:
    with open(os.path.join(freezer, "cgroup.procs"), "w") as f:
        f.write(str(pid))
    with open(os.path.join(freezer, "freezer.state"), "w") as f:
        f.write("FROZEN")
    deadline = time.monotonic() + 5
    while open(os.path.join(freezer, "freezer.state")).read().strip() != "FROZEN":
        assert time.monotonic() < deadline, "the process did not freeze"
        time.sleep(0.01)


def wait_for_no_leftovers(sandbox, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sandbox.driver.leftover_names():
        assert time.monotonic() < deadline, f"left behind: {sandbox.driver.leftover_names()}"
        time.sleep(0.05)


@pytest.mark.parametrize("end", ["timeout", "kill()"])
def test_a_task_that_cannot_be_killed_is_reported_after_bounded_retries_without_spinning(
        sandbox, monkeypatch, caplog, foreign_freezer, end):
    monkeypatch.setattr(sandbox_driver, "KILL_BUDGET_S", 1.0)
    process = sandbox.start(["sleep", "300"], Limits(timeout_s=0.3 if end == "timeout" else None))
    freeze(foreign_freezer, process.pid)
    cpu_before = thread_cpu_seconds(process._reaper.native_id)
    if end == "kill()":
        process.kill()
    outcome = process.wait(timeout=8)
    cpu_used = thread_cpu_seconds(process._reaper.native_id) - cpu_before
    try:
        assert outcome.status is (Status.TIMED_OUT if end == "timeout" else Status.KILLED)
        assert outcome.killed_by == end
        assert outcome.exit_code is None and outcome.signal is None, "the main process never ended"
        assert outcome.unkillable_pids == [process.pid]
        assert cpu_used < 0.25, f"the reaper spun: {cpu_used:.2f} s of CPU while it retried"
        errors = reaper_errors(caplog)
        assert len(errors) == 1 and "would not die" in errors[0].getMessage()
    finally:
        with open(os.path.join(foreign_freezer, "freezer.state"), "w") as f:
            f.write("THAWED")
    # Thawed, it dies of the pending SIGKILL; the reaper, still waiting for it, clears the cgroup.
    deadline = time.monotonic() + 10
    while pid_alive(process.pid):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    wait_for_no_leftovers(sandbox)


def test_a_kill_that_keeps_failing_is_retried_with_backoff_then_reported(sandbox, monkeypatch, caplog):
    monkeypatch.setattr(sandbox_driver, "KILL_BUDGET_S", 1.0)
    group_class = GROUP_CLASSES[sandbox.mode]
    attempts: list[float] = []

    def failing_kill(self):
        attempts.append(time.monotonic())
        raise OSError(errno.EIO, "injected: cgroup.kill refused")

    monkeypatch.setattr(group_class, "kill_all", failing_kill)
    process = sandbox.start(["sleep", "300"], Limits(timeout_s=0.2))
    outcome = process.wait(timeout=8)
    monkeypatch.undo()
    try:
        assert outcome.status is Status.TIMED_OUT
        assert outcome.unkillable_pids == [process.pid]
        assert 3 <= len(attempts) <= 20, f"{len(attempts)} kill attempts in 1 s: bounded, with growing pauses"
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        assert max(gaps) > 4 * gaps[0], f"the pauses grow: {gaps}"
        errors = reaper_errors(caplog)
        assert len(errors) == 1 and "injected: cgroup.kill refused" in errors[0].getMessage()
    finally:
        os.kill(process.pid, 9)
    wait_for_no_leftovers(sandbox)


def test_a_task_named_like_one_whose_processes_would_not_die_is_refused_not_put_among_them(
        sandbox, monkeypatch, foreign_freezer):
    """The main process exits, a child it left will not die: the outcome is published, the
    task's cgroup is kept with the child in it, and the name is free again. A new task of that
    name (an execution run again) must not be put into that cgroup, among a process that is not
    its own, with its counters and its kill."""
    monkeypatch.setattr(sandbox_driver, "KILL_BUDGET_S", 0.5)
    name = uuid.uuid4().hex[:10]
    first = sandbox.start(["bash", "-c", "sleep 300 & echo $!; read _"], name=name,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    stuck = int(first.stdout.readline())
    first.stdout.close()
    freeze(foreign_freezer, stuck)
    try:
        first.stdin.write(b"go\n")
        first.stdin.close()
        outcome = first.wait(timeout=10)
        assert outcome.unkillable_pids == [stuck]
        try:
            second = sandbox.start(["true"], name=name)
        except SandboxError as exc:
            assert name in str(exc)
        else:
            second_outcome = second.wait(timeout=10)
            pytest.fail(f"the new task was put into the cgroup of the stuck one: {second_outcome}")
    finally:
        with open(os.path.join(foreign_freezer, "freezer.state"), "w") as f:
            f.write("THAWED")
    deadline = time.monotonic() + 10
    while pid_alive(stuck):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert sandbox.sweep() == [f"task-{name}"], "kept for the next sweep"
    assert sandbox.start(["true"], name=name).wait(timeout=10).status is Status.SUCCEEDED


def test_controllers_mounted_together_share_one_task_cgroup(tmp_path):
    """v1 controllers mounted as one hierarchy (memory and pids here) are one directory per task:
    making each task cgroup anew must not refuse the second controller's (the same) directory."""
    mount = tmp_path / "memory,pids"
    mount.mkdir()
    together = Hierarchy("cgroup", frozenset({"rw", "memory", "pids"}), str(mount), str(mount), True)
    driver = CgroupV1Driver([together], "executor")
    group = driver.create("task-together", Limits(pids_max=10))
    assert set(group.dirs.values()) == {str(mount / "executor" / "task-together")}
    assert (mount / "executor" / "task-together" / "pids.max").read_text() == "10"
