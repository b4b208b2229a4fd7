"""How a task ended is decided by the order of events: a kill request that comes after the main
process has died, or after the kernel's OOM killer acted in the task's cgroup, still ends the
tree but does not rename a memory kill."""
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


def test_a_kill_after_the_oom_killer_took_a_child_does_not_rename_the_memory_kill(sandbox, tmp_path):
    """cgroup v1 kills one process: here the leaking child, while the main process lives on."""
    died = tmp_path / "died"
    leak = " ".join(f"'{arg}'" for arg in leak_script())
    process = sandbox.start(["bash", "-c", f"{leak}; touch {died}; sleep 300"], Limits(memory_max_bytes=100 * MIB))
    deadline = time.monotonic() + 30
    while not died.exists():
        assert time.monotonic() < deadline, "the OOM killer never took the leaking child"
        time.sleep(0.02)
    process.kill()
    outcome = process.wait(timeout=20)
    assert outcome.status is Status.MEMORY_LIMIT_EXCEEDED
    assert outcome.killed_by is None


def test_a_kill_before_any_oom_kill_is_reported_as_the_kill(sandbox):
    process = sandbox.start(["sleep", "300"], Limits(memory_max_bytes=100 * MIB))
    time.sleep(0.2)
    process.kill()
    outcome = process.wait(timeout=20)
    assert outcome.status is Status.KILLED
    assert outcome.killed_by == "kill()"
