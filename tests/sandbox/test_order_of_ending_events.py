"""How a task ended is decided by the order of events: a kill request that comes after the main
process has died, or while it is dying (the OOM killer's SIGKILL), still ends the tree but does
not rename a memory kill. An OOM kill of another process of the task, which the main process
outlives, is counted, and a later request is what ends the task."""
from __future__ import annotations

import threading
import time

from sandbox import Limits, Status
from sandbox.exit_watch import ExitWatch

from .conftest import PYTHON, leak_script

MIB = 1 << 20


def process_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0]
    except FileNotFoundError:
        return "gone"


def test_a_kill_after_the_oom_killer_ended_the_main_process_is_still_a_memory_kill(sandbox, monkeypatch):
    """The reaper is held before it looks, so the main process stays a zombie, dead of the OOM
    kill but not yet reaped, when the cancel arrives (2 runs in 10 hit this window unheld)."""
    reaper_may_look = threading.Event()
    real_wait = ExitWatch.wait

    def held_wait(self, timeout):
        reaper_may_look.wait(20)
        return real_wait(self, timeout)

    monkeypatch.setattr(ExitWatch, "wait", held_wait)
    process = sandbox.start([PYTHON, "-c", "x = bytearray(400 << 20)"], Limits(memory_max_bytes=64 * MIB))
    deadline = time.monotonic() + 20
    while process_state(process.pid) != "Z":
        assert time.monotonic() < deadline, "the OOM killer never ended the main process"
        time.sleep(0.005)
    process.kill()
    reaper_may_look.set()
    outcome = process.wait(timeout=20)
    assert outcome.status is Status.MEMORY_LIMIT_EXCEEDED
    assert outcome.killed_by is None
    assert outcome.oom_kills >= 1


def start_after_a_child_is_oom_killed(sandbox, tmp_path, limits: Limits):
    """A task whose leaking child the OOM killer takes (cgroup v1 kills one process) while the
    main process lives on, well within its limit; returned once the child is gone."""
    died = tmp_path / "died"
    leak = " ".join(f"'{arg}'" for arg in leak_script())
    process = sandbox.start(["bash", "-c", f"{leak}; touch {died}; sleep 300"], limits)
    deadline = time.monotonic() + 30
    while not died.exists():
        assert time.monotonic() < deadline, "the OOM killer never took the leaking child"
        time.sleep(0.02)
    return process


def test_a_kill_after_the_oom_killer_took_only_a_child_is_the_kill_and_the_oom_kill_is_counted(sandbox, tmp_path):
    """The main process outlived its child's OOM kill: a cancel hours later ended the task, yet
    the outcome said MEMORY_LIMIT_EXCEEDED (the executor reported the user's cancel as FAILURE)."""
    process = start_after_a_child_is_oom_killed(sandbox, tmp_path, Limits(memory_max_bytes=100 * MIB))
    process.kill()
    outcome = process.wait(timeout=20)
    assert (outcome.status, outcome.killed_by) == (Status.KILLED, "kill()")
    assert outcome.oom_kills >= 1, "the child's OOM kill is still counted"


def test_a_timeout_after_the_oom_killer_took_only_a_child_is_a_timeout(sandbox, tmp_path):
    process = start_after_a_child_is_oom_killed(sandbox, tmp_path, Limits(memory_max_bytes=100 * MIB, timeout_s=4))
    outcome = process.wait(timeout=30)
    assert (outcome.status, outcome.killed_by) == (Status.TIMED_OUT, "timeout")
    assert outcome.oom_kills >= 1


def test_a_kill_before_any_oom_kill_is_reported_as_the_kill(sandbox):
    process = sandbox.start(["sleep", "300"], Limits(memory_max_bytes=100 * MIB))
    time.sleep(0.2)
    process.kill()
    outcome = process.wait(timeout=20)
    assert outcome.status is Status.KILLED
    assert outcome.killed_by == "kill()"
