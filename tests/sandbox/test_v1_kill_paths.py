"""cgroup v1's two ways to end a task's whole tree, each on the real kernel: the hybrid unified
hierarchy's cgroup.kill (and then no freezer cgroup per task, which nothing would use), and,
where no writable unified hierarchy is mounted, the freezer loop (freeze, SIGKILL all, thaw).
Each kills a task whose tree holds a child in its own session, which the task's process group
and session do not reach."""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from sandbox import Sandbox
from sandbox import cgroupfs as fs
from sandbox.cgroup_v1 import CgroupV1Driver
from sandbox.detect import read_hierarchies, v1_hierarchy
from sandbox.outcome import Status

from .conftest import PYTHON

# A task that starts a child in a new session and a plain child, then waits for both.
TREE = [PYTHON, "-c", "import os, subprocess, time\n"
        "subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "subprocess.Popen(['sleep', '300'])\n"
        "time.sleep(300)\n"]


def v1_sandbox(*, unified: bool) -> Sandbox:
    hierarchies = read_hierarchies()
    memory, freezer = v1_hierarchy(hierarchies, "memory"), v1_hierarchy(hierarchies, "freezer")
    if memory is None or not memory.writable or freezer is None or not freezer.writable:
        pytest.skip("needs writable cgroup v1 memory and freezer hierarchies")
    if not unified:
        hierarchies = [h for h in hierarchies if h.fstype != "cgroup2"]
    sandbox = Sandbox(CgroupV1Driver(hierarchies, f"test-{uuid.uuid4().hex[:10]}"), "test")
    if unified and "unified" not in sandbox.driver.roots:
        sandbox.close()
        pytest.skip("needs a writable hybrid unified hierarchy with cgroup.kill (Linux 5.14+)")
    return sandbox


@pytest.fixture(params=[True, False], ids=["unified-kill", "freezer-loop"])
def sandbox_v1(request) -> Iterator[Sandbox]:
    sandbox = v1_sandbox(unified=request.param)
    try:
        yield sandbox
    finally:
        left = sandbox.sweep()
        sandbox.close()
        assert not left, f"left behind: {left}"


def tree_pids(sandbox: Sandbox, name: str, count: int) -> list[int]:
    """The task's processes, once COUNT of them are in its cgroup."""
    group = sandbox.driver.open_existing(name)
    deadline = time.monotonic() + 10
    while len(pids := group.pids()) < count:
        assert time.monotonic() < deadline, f"the task's tree did not start: {pids}"
        time.sleep(0.02)
    return pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_killing_a_task_ends_its_whole_tree(sandbox_v1):
    unified = "unified" in sandbox_v1.driver.roots
    process = sandbox_v1.start(TREE)
    pids = tree_pids(sandbox_v1, process.name, 3)
    with open(f"/proc/{process.pid}/cgroup") as f:
        memberships = f.read()
    freezer_line = next(line for line in memberships.splitlines() if ":freezer:" in line)
    # The freezer cgroup is the task's own only where the freezer loop needs it.
    assert freezer_line.endswith("/" + process.name) is not unified, memberships
    assert ("freezer" in sandbox_v1.driver.roots) is not unified
    process.kill()
    outcome = process.wait(timeout=15)
    assert outcome.status is Status.KILLED
    deadline = time.monotonic() + 5
    while survivors := [pid for pid in pids if alive(pid)]:
        assert time.monotonic() < deadline, f"outlived the kill: {survivors}"
        time.sleep(0.02)
    assert ("cgroup.kill" if unified else "freeze-and-kill") in outcome.limits_enforced["tree"]


def test_a_freezer_round_that_fails_still_thaws_the_task(monkeypatch):
    """A read of the task's cgroup that fails inside the round (the master out of descriptors,
    which a task can bring about) left the task FROZEN: a v1-frozen process does not die of
    SIGKILL until thawed, so nothing could end it. The round thaws whatever happens, and the
    next round kills the task."""
    sandbox = v1_sandbox(unified=False)
    try:
        process = sandbox.start(["sleep", "300"])
        group = sandbox.driver.open_existing(process.name)
        real_read = fs.read_subtree_pids

        def out_of_descriptors(path: str) -> list[int]:
            raise OSError(24, "Too many open files")

        monkeypatch.setattr(fs, "read_subtree_pids", out_of_descriptors)
        with pytest.raises(OSError):
            group.kill_all()
        monkeypatch.setattr(fs, "read_subtree_pids", real_read)
        state = os.path.join(group.dirs["freezer"], "freezer.state")
        assert fs.read_text(state).strip() == "THAWED"
        group.kill_all()
        assert process.wait(timeout=10).signal == 9
    finally:
        sandbox.sweep()
        sandbox.close()
