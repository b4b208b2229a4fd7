"""Mode none (no writable cgroupfs): best-effort limits that say they are best effort."""
from __future__ import annotations

import os
import signal
import time

from sandbox import Limits, Status

from .conftest import leak_script, pid_alive


def test_rss_watchdog_stops_a_leak_and_says_it_was_best_effort(none_sandbox):
    outcome = none_sandbox.start(leak_script(step_mb=5, pause_s=0.02), Limits(memory_max_bytes=100 << 20, timeout_s=60)).wait()
    assert outcome.mode == "none"
    assert outcome.status is Status.MEMORY_LIMIT_EXCEEDED
    assert outcome.killed_by == "memory-watchdog"
    assert outcome.peak_memory_bytes >= 100 << 20
    assert outcome.limits_enforced["memory"].startswith("best effort")


def test_limits_it_cannot_enforce_are_reported_as_not_enforced(none_sandbox):
    outcome = none_sandbox.start(["true"], Limits(pids_max=10, cpu_max=0.5)).wait()
    assert outcome.status is Status.SUCCEEDED
    assert outcome.limits_enforced["pids"] == "not enforced (mode none)"
    assert outcome.limits_enforced["cpu"] == "not enforced (mode none)"


def test_timeout_kills_the_session_in_mode_none(none_sandbox, tmp_path):
    pids = tmp_path / "pids"
    process = none_sandbox.start(["bash", "-c", f"sleep 300 & echo $! > {pids}; sleep 300"], Limits(timeout_s=1))
    outcome = process.wait(timeout=20)
    assert outcome.status is Status.TIMED_OUT
    time.sleep(0.1)
    assert not pid_alive(int(pids.read_text()))


def test_a_setsid_child_dies_with_the_task_even_without_a_memory_limit(none_sandbox, tmp_path):
    """The tree scan is how mode none knows a child that left the session: it runs at the
    watchdog's interval whether or not there is a memory limit to check."""
    pids = tmp_path / "pids"
    process = none_sandbox.start(["bash", "-c", f"setsid sleep 300 & echo $! > {pids}; sleep 0.5; exit 0"])
    outcome = process.wait(timeout=20)
    assert outcome.status is Status.SUCCEEDED
    escaped = int(pids.read_text())
    deadline = time.monotonic() + 2
    while pid_alive(escaped) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert not pid_alive(escaped), "a setsid() child outlived its task"
    finally:
        if pid_alive(escaped):
            os.kill(escaped, signal.SIGKILL)
