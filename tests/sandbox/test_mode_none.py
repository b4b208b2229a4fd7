"""Mode none (no writable cgroupfs): best-effort limits that say they are best effort."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time

import psutil
import pytest

from sandbox import Limits, Status
from sandbox.confined import ConfinedProcess

from .conftest import (PYTHON, assert_spared, decoy_with_pid, leak_script, pass_pid_on, past_its_start_tick,
                       pid_alive, take_pid)


def test_rss_watchdog_stops_a_leak_and_says_it_was_best_effort(none_sandbox):
    outcome = none_sandbox.start(leak_script(step_mb=5, pause_s=0.02), Limits(memory_max_bytes=100 << 20, timeout_s=60)).wait()
    assert outcome.mode == "none"
    assert outcome.status is Status.MEMORY_LIMIT_EXCEEDED
    assert outcome.killed_by == "memory-watchdog"
    assert outcome.peak_memory_bytes >= 100 << 20
    assert outcome.limits_enforced["memory"].startswith("best effort")


def test_the_peak_memory_is_reported_without_a_memory_limit_too(none_sandbox):
    """The watchdog's scan ran either way, but summed the tree's RSS only under a limit: a task
    without one (most, on Fargate) reported no peak at all."""
    holds = "import time\nheld = bytearray(120 << 20)\nfor i in range(0, len(held), 4096): held[i] = 1\ntime.sleep(0.6)"
    outcome = none_sandbox.start([PYTHON, "-c", holds], Limits(timeout_s=60)).wait()
    assert outcome.status is Status.SUCCEEDED
    assert outcome.peak_memory_bytes is not None and outcome.peak_memory_bytes >= 120 << 20, outcome.peak_memory_bytes


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


@pytest.mark.parametrize("pidfd", ["pidfd", "no pidfd (Linux before 5.3)"])
def test_a_child_forked_just_before_the_main_process_exits_dies_with_the_task(none_sandbox, tmp_path, monkeypatch,
                                                                              pidfd):
    """No setsid, no double fork: a shell's `sleep & exit`. The reaper reaped the main process
    first and scanned after: its children were reparented by then, and its session counted only
    processes older than the last scan (up to 0.1 s before), so the child outlived the task."""
    if pidfd != "pidfd":
        def no_pidfd(pid: int, flags: int = 0) -> int:
            raise OSError(errno.ENOSYS, "Function not implemented")
        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    survivors = []
    for attempt in range(3):
        pids = tmp_path / f"pids-{attempt}"
        process = none_sandbox.start(["sh", "-c", f"sleep 300 & echo $! > {pids}; exit 0"])
        assert process.wait(timeout=20).status is Status.SUCCEEDED
        child = int(pids.read_text())
        time.sleep(0.2)
        if pid_alive(child):
            survivors.append(child)
            os.kill(child, signal.SIGKILL)
    assert survivors == [], "a child forked just before its task ended outlived it"


@pytest.mark.parametrize("victim", ["plain", "session leader with a child"])
def test_a_process_that_reuses_the_main_pid_after_the_task_ended_is_left_alone(none_sandbox, monkeypatch, victim,
                                                                              writes_ns_last_pid):
    """The final scan runs after the main process is reaped; by then its pid (and so its session
    id) may belong to an unrelated process. Neither it nor its session may be taken for the task."""
    victims_ready = threading.Event()
    end_the_tree = ConfinedProcess._end_the_tree

    def after_the_victims_exist(self):
        victims_ready.wait(10)
        return end_the_tree(self)

    monkeypatch.setattr(ConfinedProcess, "_end_the_tree", after_the_victims_exist)
    process = none_sandbox.start(["true"])
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{process.pid}"):
        assert time.monotonic() < deadline, "the main process was never reaped"
        time.sleep(0.001)
    argv, popen_args = ((["sleep", "300"], {}) if victim == "plain"
                        else (["bash", "-c", "sleep 300 & wait"], {"start_new_session": True}))
    reused = take_pid(process.pid, argv, tries=50, **popen_args)
    victims_ready.set()
    if reused is None:
        pytest.skip("other processes kept taking the pid")
    try:
        others = []
        if victim != "plain":
            while not others:
                assert time.monotonic() < deadline + 10
                others = [int(p) for p in open(f"/proc/{reused.pid}/task/{reused.pid}/children").read().split()]
                time.sleep(0.01)
            assert os.getsid(others[0]) == process.pid, "the child is in a session whose id is the task's old pid"
        outcome = process.wait(timeout=20)
        assert outcome.status is Status.SUCCEEDED
        time.sleep(0.1)
        assert reused.poll() is None, "a process that reused the task's pid was killed"
        assert [p for p in others if not pid_alive(p)] == [], "a process in the reused pid's session was killed"
    finally:
        if victim == "plain":
            reused.kill()
        else:
            os.killpg(reused.pid, signal.SIGKILL)
        reused.wait()


def test_a_kill_never_reaches_a_process_that_took_a_members_pid_meanwhile(none_sandbox, monkeypatch, writes_ns_last_pid):
    """Mode none finds a task's processes by scanning, and psutil checks a process's creation
    time and then kill(2)s its pid by number: a member reaped between the two passed the SIGKILL
    to whoever took its pid. Staged there for real: the signal's system call first kills and
    reaps the member and forks a process with its pid, then goes ahead."""
    member = subprocess.Popen(["sleep", "300"])
    group = none_sandbox.driver.create("task-pid-reuse", Limits())
    group.attach(member.pid)
    decoys: list[subprocess.Popen] = []
    real_kill, real_pidfd_send_signal = os.kill, signal.pidfd_send_signal

    def pass_the_pid_on_first() -> None:
        if not decoys:
            decoys.append(pass_pid_on(member, real_kill))

    def kill(pid: int, sig: int) -> None:
        if pid == member.pid:
            pass_the_pid_on_first()
        real_kill(pid, sig)

    def pidfd_send_signal(pidfd: int, sig: int, *args) -> None:
        if sig:  # not the scan's probe of whether the main process is still there (signal 0)
            pass_the_pid_on_first()
        real_pidfd_send_signal(pidfd, sig, *args)

    try:
        monkeypatch.setattr(os, "kill", kill)
        monkeypatch.setattr(signal, "pidfd_send_signal", pidfd_send_signal)
        group.kill_all()
        monkeypatch.undo()
        assert decoys, "the kill never signalled the member"
        assert_spared(decoys[0])
    finally:
        monkeypatch.undo()
        for process in (member, *decoys):
            if process.poll() is None:
                process.kill()
            process.wait()
        group.remove()


def test_a_process_that_took_a_new_members_pid_before_it_was_remembered_is_left_alone(none_sandbox, monkeypatch,
                                                                                     writes_ns_last_pid):
    """A scan finds a new member and remembers its creation time: looked up again by pid, a
    member that ended in between left the process that took its pid remembered as the task's,
    and killed with it. Staged for real: the member is killed and reaped, and its pid given to a
    process outside the task, between the scan and the remembering."""
    main = subprocess.Popen(["sh", "-c", "sleep 301; sleep 300"])
    group = none_sandbox.driver.create("task-remembered-pid", Limits())
    group.attach(main.pid)
    decoys: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 10
        while not (children := psutil.Process(main.pid).children()) and time.monotonic() < deadline:
            time.sleep(0.01)
        (member,) = children
        past_its_start_tick(member.pid)
        remember = type(group)._remember

        def pass_the_pid_on_first(self, found) -> None:
            pid = getattr(found, "pid", found)
            if pid == member.pid and not decoys:
                os.kill(pid, signal.SIGKILL)
                while os.path.exists(f"/proc/{pid}"):  # until the shell has reaped it
                    time.sleep(0.001)
                decoys.append(decoy_with_pid(pid))
            remember(self, found)

        monkeypatch.setattr(type(group), "_remember", pass_the_pid_on_first)
        group.pids()
        monkeypatch.undo()
        assert decoys, "the scan never found the member"
        group.kill_all()
        assert_spared(decoys[0])
    finally:
        monkeypatch.undo()
        for process in (main, *decoys):
            if process.poll() is None:
                process.kill()
            process.wait()
        group.kill_all()
        group.remove()
