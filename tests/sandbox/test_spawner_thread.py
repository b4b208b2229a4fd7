"""Every fork happens on the sandbox's own spawner thread, so start() works from any thread:
the parent-death signal is tied to the thread that forks, and that thread outlives its tasks."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from sandbox import Sandbox, SandboxError, Status

from .conftest import PYTHON, _open_or_skip, next_pid, pid_alive


def wait_until_dead(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_tasks_started_from_short_lived_threads_outlive_those_threads(sandbox):
    """Sixteen threads start a task each, at once, and exit; every task runs to its normal end
    (before, each was SIGKILLed by its parent-death signal the moment its thread returned)."""
    count = 16
    started: list = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def start(i: int) -> None:
        try:
            barrier.wait()
            started[i] = sandbox.start(["sleep", "0.5"], name=f"from-thread-{i}")
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    outcomes = [process.wait(timeout=30) for process in started]
    assert [o.status for o in outcomes] == [Status.SUCCEEDED] * count, [o.to_dict() for o in outcomes]
    assert all(o.signal is None for o in outcomes)


def test_a_task_named_like_a_running_one_is_refused(sandbox):
    first = sandbox.start(["sleep", "5"], name="same")
    try:
        with pytest.raises(SandboxError, match="already running"):
            sandbox.start(["true"], name="same")
    finally:
        first.kill()
        first.wait(timeout=10)
    assert sandbox.start(["true"], name="same").wait(timeout=10).status is Status.SUCCEEDED


def test_the_spawner_thread_ends_when_the_sandbox_closes_and_later_starts_are_refused():
    sb = _open_or_skip()
    thread = sb.spawner_thread
    assert thread.is_alive()
    assert sb.start(["true"]).wait(timeout=10).status is Status.SUCCEEDED
    sb.close()
    assert not thread.is_alive()
    with pytest.raises(SandboxError, match="closed"):
        sb.start(["true"])


MASTER = """
import sys, threading, time
from sandbox import Sandbox
sb = Sandbox.open(sys.argv[1])
holder = []
# Started from a thread that ends at once: the task must stay tied to the sandbox, not to it.
starter = threading.Thread(target=lambda: holder.append(sb.start(["sleep", "300"])))
starter.start(); starter.join()
print(holder[0].pid, flush=True)
time.sleep(300)
"""


def test_a_sigkilled_master_takes_its_task_down_even_when_a_finished_thread_started_it(tmp_path):
    root = f"test-pdeath-{os.getpid()}"
    master = subprocess.Popen([PYTHON, "-c", MASTER, root], stdout=subprocess.PIPE, cwd=os.getcwd())
    try:
        task_pid = int(master.stdout.readline())
        time.sleep(0.2)
        assert pid_alive(task_pid), "the task outlives the thread that started it"
        os.kill(master.pid, signal.SIGKILL)
        master.wait()
        assert wait_until_dead(task_pid), "the parent-death signal ends the task with its master"
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
        leftover = Sandbox.open(root)
        leftover.sweep()
        leftover.close()


def test_a_task_gets_the_callers_cwd_and_umask_not_the_spawner_threads(sandbox):
    """The spawner thread has a root, cwd and umask of its own (a private_tmp start even leaves
    its cwd at /): each child is given the caller's explicitly."""
    sandbox.start(["true"], private_tmp=True).wait(timeout=10)
    previous = os.umask(0o027)
    try:
        process = sandbox.start(["sh", "-c", "pwd; umask"], stdout=subprocess.PIPE)
        cwd, umask = process.stdout.read().decode().split()
    finally:
        os.umask(previous)
    assert process.wait(timeout=10).status is Status.SUCCEEDED
    assert cwd == os.getcwd()
    assert int(umask, 8) == 0o027


def mount_namespace_fds() -> int:
    """Descriptors of this process open on a mount namespace."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("mnt:[")
        except OSError:
            pass
    return count


def test_opening_and_closing_sandboxes_leaks_no_descriptor():
    """Each spawner thread holds its home mount namespace open to return to it; the descriptor
    goes with the thread."""
    before = mount_namespace_fds()
    for _ in range(10):
        sb = _open_or_skip()
        sb.start(["true"]).wait(timeout=10)
        sb.close()
        assert not sb.spawner_thread.is_alive()
    assert mount_namespace_fds() == before


def test_a_task_given_the_pid_of_one_just_reaped_keeps_the_spawner_thread_when_the_sandbox_closes():
    """A task is counted out of the spawner once its reaper has ended its tree and removed its
    cgroups, after the wait that freed its pid. A task forked in between may get that pid
    (forced here with ns_last_pid, and the window held open): counted as a set of pids, the first
    one's late count-out dropped the second, so close() ended the spawner thread under it and its
    parent-death signal killed it (SIGKILL where it would have exited 7)."""
    sandbox = _open_or_skip()
    gate = threading.Event()
    original = sandbox._spawner.reaped

    def slow_reaped(pid: int) -> None:  # the reaper still busy with the tree and the cgroups
        gate.wait(30)
        original(pid)

    sandbox._spawner.reaped = slow_reaped
    second = None
    try:
        first = sandbox.start(["true"], name="first")
        while first._popen.returncode is None:  # reaped: its pid is free, its count-out held
            time.sleep(0.001)
        for _ in range(20):
            with next_pid(first.pid):
                second = sandbox.start(["sh", "-c", "sleep 1; exit 7"], name=f"second-{_}")
            if second.pid == first.pid:
                break
            second.kill()
            second.wait(10)
            second = None
        if second is None:
            pytest.skip("another process kept taking the pid")
        gate.set()
        first.wait(10)
        assert sandbox._spawner.live == 1, "the second task is counted as running"
        sandbox.close()
        outcome = second.wait(20)
        assert (outcome.status, outcome.exit_code) == (Status.FAILED, 7), outcome
    finally:
        gate.set()
        if second is not None and second.poll() is None:
            second.kill()
            second.wait(10)
        sandbox.close()
