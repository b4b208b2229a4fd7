"""Which OOM kills are the task's own limit's. An OOM kill counter counts the victims of any OOM
killer: the host's, or one for an enclosing cgroup's limit (a container's, the sandbox root's).
cgroup-v2.rst: memory.events "oom_kill" is "the number of processes belonging to this cgroup
killed by any kind of OOM killer", "oom" the times "the cgroup's memory usage was reached the
limit and allocation was about to fail" (hierarchical: an enclosing cgroup's OOM is counted in
the enclosing cgroup, not the task's). v1's memory.oom_control "oom_kill" is the same count."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import Limits, Sandbox, Status

from .conftest import leak_script
from .test_cgroup_v2_older_kernels import open_driver, real_v2_parent  # noqa: F401 (a fixture)


def limit_the_sandbox_root(sandbox: Sandbox, limit: int) -> None:
    """A memory limit on the sandbox's root cgroup, above every task's: a container's limit, or
    the host running out, as the task sees it."""
    driver = sandbox.driver
    if sandbox.mode == "cgroup-v1":
        Path(driver.roots["memory"], "memory.limit_in_bytes").write_text(str(limit))
    else:
        Path(driver.root, "memory.max").write_text(str(limit))


def test_a_task_killed_for_an_enclosing_cgroups_limit_did_not_exceed_its_own(sandbox):
    limit_the_sandbox_root(sandbox, 48 << 20)
    outcome = sandbox.start(leak_script(), Limits(memory_max_bytes=512 << 20, timeout_s=120)).wait(timeout=150)
    assert outcome.oom_kills >= 1 and outcome.signal == signal.SIGKILL, outcome
    assert outcome.peak_memory_bytes < 256 << 20, outcome
    assert outcome.status is Status.FAILED, f"reported as its own limit's breach: {outcome}"
    assert outcome.memory_limit_reached is False, outcome


def test_a_task_killed_at_its_own_limit_below_an_enclosing_one_exceeded_it(sandbox):
    limit_the_sandbox_root(sandbox, 512 << 20)
    outcome = sandbox.start(leak_script(), Limits(memory_max_bytes=48 << 20, timeout_s=120)).wait(timeout=150)
    assert outcome.status is Status.MEMORY_LIMIT_EXCEEDED, outcome
    assert outcome.memory_limit_reached is True, outcome
    assert outcome.oom_kills >= 1


# Stops on a line from stdin, then dies of SIGKILL as an OOM victim does.
KILLED_AS_AN_OOM_VICTIM = [sys.executable, "-c", """
import os, sys
print("ready", flush=True)
sys.stdin.readline()
os.kill(os.getpid(), 9)
"""]


@pytest.mark.parametrize(("events", "status"), [
    # An enclosing cgroup's (or the host's) OOM: its victims are counted here, its "oom" is not.
    ("low 0\nhigh 0\nmax 0\noom 0\noom_kill 1\noom_group_kill 1\n", Status.FAILED),
    # The task's own limit: reached ("max"), the OOM killer called ("oom"), a victim ("oom_kill").
    ("low 0\nhigh 9\nmax 40\noom 1\noom_kill 1\noom_group_kill 1\n", Status.MEMORY_LIMIT_EXCEEDED),
])
def test_v2_an_oom_kill_is_the_tasks_limit_only_where_memory_events_counts_an_oom(
        tmp_path, monkeypatch, real_v2_parent, events, status):  # noqa: F811 (the fixture)
    driver, _ = open_driver(monkeypatch, tmp_path, "5.14+", real_v2_parent)
    sandbox = Sandbox(driver, "test")
    try:
        process = sandbox.start(KILLED_AS_AN_OOM_VICTIM, Limits(memory_max_bytes=64 << 20),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert process.stdout.readline() == b"ready\n"
        Path(driver.root, process.name, "memory.events").write_text(events)
        process.stdin.write(b"go\n")
        process.stdin.close()
        outcome = process.wait(timeout=60)
        process.stdout.close()
        assert (outcome.status, outcome.signal, outcome.oom_kills) == (status, signal.SIGKILL, 1), outcome
    finally:
        sandbox.sweep()
        sandbox.close()
