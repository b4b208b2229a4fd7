"""Tasks that use the kernel against their own end: a process of the task that traces the main
process (its exit then cannot be reaped), a main thread that leaves by exit(2) while another
thread works on (cgroup.kill then misses the live thread), and children made with CLONE_PARENT
(they are the master's, and nobody waited for them). Each ran past its timeout and kill, hung
the reaper, or left zombies in the master, until the sandbox handled it. Real tasks in real
cgroups, as a task user; found by review."""
from __future__ import annotations

import os
import subprocess
import time

from sandbox import Limits, Status, TaskUser

from .conftest import pid_alive

USER = TaskUser(61234, 61234)

TRACED_MAIN = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
main = os.getpid()
r, w = os.pipe()
if os.fork() == 0:  # a process of the task that traces the main process and never lets it go
    os.write(w, b"1" if libc.ptrace(0x4206, main, None, None) == 0 else b"0")  # PTRACE_SEIZE
    print("tracer", os.getpid(), flush=True)
    while True:
        time.sleep(1)
sys.exit(0 if os.read(r, 1) == b"1" else 3)
"""

MAIN_THREAD_LEAVES = r"""
import ctypes, os, threading, time
def work():
    while True:
        time.sleep(0.05)
threading.Thread(target=work).start()
time.sleep(0.2)
print("leaving", flush=True)
ctypes.CDLL(None).syscall(60, 0)  # SYS_exit: the main thread alone
"""

CLONE_PARENT_CHILDREN = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
CLONE_PARENT, SIGCHLD, SYS_CLONE = 0x8000, 17, 56
made = 0
for _ in range(100):
    pid = libc.syscall(SYS_CLONE, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0)  # fork-like: a sibling, not a child
    if pid == 0:
        os._exit(0)
    made += pid > 0
print("made", made, flush=True)
"""


def zombie_children_of_this_process() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    state, ppid = f.read().rsplit(") ", 1)[1].split()[:2]
            except OSError:
                continue
            if int(ppid) == os.getpid() and state == "Z":
                found.append(int(entry))
    return found


def test_a_main_process_held_by_a_tracer_of_the_task_is_reaped_and_its_tree_ended(sandbox, task_python):
    """The exited main process could not be reaped while the tracer held it, and the reaper
    waited in waitpid() for as long as the tracer chose: no timeout, no kill, no outcome."""
    process = sandbox.start([task_python, "-c", TRACED_MAIN], Limits(timeout_s=60, pids_max=16),
                            env={"PATH": os.defpath}, user=USER, stdout=subprocess.PIPE)
    tracer = int(process.stdout.readline().split()[1])
    try:
        outcome = process.wait(timeout=20)
    finally:
        if pid_alive(tracer) and process.poll() is None:
            os.kill(tracer, 9)  # ours: a process of the task this test started
    assert outcome.status is Status.SUCCEEDED and outcome.exit_code == 0, outcome  # the exit that was held
    assert outcome.killed_by is None and not outcome.tree_left, outcome
    assert not pid_alive(tracer), "the tracer outlived the task"
    process.stdout.close()


def test_a_task_whose_main_thread_left_is_ended_by_its_timeout_and_named_for_it(sandbox, task_python):
    """cgroup.kill signals the thread-group leader, which had left: the live thread never got
    the SIGKILL, the task ran on past its timeout and the kill, and was reported FAILED."""
    process = sandbox.start([task_python, "-c", MAIN_THREAD_LEAVES], Limits(timeout_s=1.5, pids_max=16),
                            env={"PATH": os.defpath}, user=USER, stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"leaving"
    outcome = process.wait(timeout=30)
    assert outcome.status is Status.TIMED_OUT and outcome.killed_by == "timeout", outcome
    assert outcome.unkillable_pids == [] and not outcome.tree_left, outcome
    assert not os.path.exists(f"/proc/{process.pid}"), "the task's threads outlived it"
    process.stdout.close()


def test_a_kill_of_a_task_whose_main_thread_left_ends_it_and_is_named(sandbox, task_python):
    process = sandbox.start([task_python, "-c", MAIN_THREAD_LEAVES], Limits(timeout_s=60, pids_max=16),
                           env={"PATH": os.defpath}, user=USER, stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"leaving"
    time.sleep(0.2)
    process.kill()
    outcome = process.wait(timeout=30)
    assert outcome.status is Status.KILLED and outcome.killed_by == "kill()", outcome
    assert not outcome.tree_left, outcome
    process.stdout.close()


def test_children_a_task_made_the_masters_with_clone_parent_are_reaped(sandbox, task_python):
    """Killed with the task or exited at once, they stayed zombies of the master until it exited:
    up to a task's pids limit each run."""
    before = set(zombie_children_of_this_process())
    for _ in range(2):
        process = sandbox.start([task_python, "-c", CLONE_PARENT_CHILDREN], Limits(timeout_s=30, pids_max=32),
                                env={"PATH": os.defpath}, user=USER, stdout=subprocess.PIPE)
        made = int(process.stdout.readline().split()[1])
        outcome = process.wait(timeout=30)
        assert outcome.status is Status.SUCCEEDED and made > 0, (outcome, made)
        process.stdout.close()
    deadline = time.monotonic() + 5
    while set(zombie_children_of_this_process()) - before and time.monotonic() < deadline:
        time.sleep(0.05)  # reaped on the spawner thread, just after the task's end
    assert set(zombie_children_of_this_process()) - before == set()
