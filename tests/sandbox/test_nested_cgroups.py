"""A task running as root may make cgroups of its own below its task cgroup (a nested sandbox,
any cgroup-aware tool) and move processes there. They are still the task's: counted, killed
with it, and removed with its cgroup, deepest first; and a sweep that meets one it cannot
clear goes on with the others."""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from sandbox import Limits, Status
from sandbox.cgroup_v1 import V1TaskGroup
from sandbox.cgroup_v2 import CgroupV2Driver, V2TaskGroup
from sandbox.errors import SandboxError

from .conftest import PYTHON, leak_script, pid_alive
from .test_cgroup_v2_documented_interface import fake_cgroup

NESTED = "inner"


def task_dirs(sandbox, task_name: str) -> list[str]:
    """The task's cgroup in every hierarchy the sandbox uses."""
    return [os.path.join(root, task_name) for root in sandbox.driver.roots.values()]


def wait_for_file(path: Path, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text().strip()


def test_a_child_moved_into_a_nested_cgroup_is_counted_killed_and_its_cgroup_removed(sandbox, tmp_path):
    name = uuid.uuid4().hex[:10]
    dirs = task_dirs(sandbox, f"task-{name}")
    nested = " ".join(os.path.join(d, NESTED) for d in dirs)
    pid_file = tmp_path / "nested-pid"
    # The child makes the nested cgroups and moves itself into them (in every hierarchy), then
    # sleeps; the main process waits for a line on stdin and exits 0.
    script = (f"(for d in {nested}; do mkdir $d && echo $BASHPID > $d/cgroup.procs || exit 9; done; "
              f"echo $BASHPID > {pid_file}; exec sleep 300) & read _; exit 0")
    process = sandbox.start(["bash", "-c", script], name=name, stdin=subprocess.PIPE)
    nested_pid = int(wait_for_file(pid_file))
    assert process.process_count() == 2, "the main process and the child in the nested cgroup"
    process.stdin.write(b"go\n")
    process.stdin.close()
    outcome = process.wait(timeout=20)
    assert outcome.status is Status.SUCCEEDED
    assert outcome.unkillable_pids == []
    time.sleep(0.1)
    assert not pid_alive(nested_pid), "a process in a nested cgroup outlived its task"
    assert [d for d in dirs if os.path.exists(d)] == []


def test_sweep_clears_a_leftover_with_nested_cgroups_and_goes_on_past_one_it_cannot_remove(
        sandbox, monkeypatch, caplog):
    """A crashed master's leftovers: one task cgroup with a nested one holding a live process,
    one that cannot be removed, one plain."""
    nested_dirs = task_dirs(sandbox, "task-left-nested")
    for path in [*nested_dirs, *task_dirs(sandbox, "task-left-stuck"), *task_dirs(sandbox, "task-left-plain")]:
        os.mkdir(path)
    for path in nested_dirs:
        os.mkdir(os.path.join(path, NESTED))
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        for path in nested_dirs:
            with open(os.path.join(path, NESTED, "cgroup.procs"), "w") as f:
                f.write(str(sleeper.pid))
        group_class = V1TaskGroup if sandbox.mode == "cgroup-v1" else V2TaskGroup
        real_remove = group_class.remove

        def remove_fails_for_the_stuck_one(self):
            if self.name == "task-left-stuck":
                raise SandboxError("injected: cgroup busy")
            real_remove(self)

        monkeypatch.setattr(group_class, "remove", remove_fails_for_the_stuck_one)
        with caplog.at_level(logging.ERROR, logger="sandbox"):
            swept = sandbox.sweep()
        monkeypatch.undo()
        assert swept == ["task-left-nested", "task-left-plain"]
        assert sleeper.wait(timeout=5) == -9
        assert [d for d in nested_dirs if os.path.exists(d)] == []
        errors = [r for r in caplog.records if r.name == "sandbox" and r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "task-left-stuck" in errors[0].getMessage()
        assert sandbox.sweep() == ["task-left-stuck"], "kept for the next sweep"
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_v2_counts_the_processes_of_nested_cgroups_and_asks_cgroup_events_for_emptiness(tmp_path):
    """Against the documented v2 interface: cgroup.procs lists a cgroup's own members only, and
    cgroup.events "populated" covers the whole subtree."""
    own = fake_cgroup(tmp_path / "service")
    driver = CgroupV2Driver(str(own), "executor")
    group = driver.create("task-n", Limits())
    task_dir = own / "executor" / "task-n"
    fake_cgroup(task_dir, procs="100\n")
    fake_cgroup(task_dir / "inner", procs="200\n201\n")
    fake_cgroup(task_dir / "inner" / "deeper", procs="300\n")
    assert sorted(group.pids()) == [100, 200, 201, 300]
    (task_dir / "cgroup.procs").write_text("")
    (task_dir / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert not group.is_empty(), "processes below the task cgroup keep it populated"
    (task_dir / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    assert group.is_empty()


def nested_dir(sandbox, controller: str, task_name: str) -> str:
    """A cgroup below the task's own in CONTROLLER's hierarchy (the one unified one on v2)."""
    roots = getattr(sandbox.driver, "roots", None)
    if roots is None:
        return os.path.join(sandbox.driver.root, task_name, NESTED)
    if controller not in roots:
        pytest.skip(f"needs a writable v1 {controller} hierarchy")
    return os.path.join(roots[controller], task_name, NESTED)


def test_an_oom_kill_in_a_nested_cgroup_is_memory_limit_exceeded(sandbox):
    """The task's limit is hit by a process it moved into a nested cgroup. v1 counts the OOM
    kill only in the victim's own memory cgroup, not in the task's."""
    name = uuid.uuid4().hex[:10]
    nested = nested_dir(sandbox, "memory", f"task-{name}")
    script = (f"mkdir {nested} || exit 9; (echo $BASHPID > {nested}/cgroup.procs || exit 9; exec {' '.join(map(shlex.quote, leak_script()))}) & "
              "wait $!; exit $?")
    process = sandbox.start(["bash", "-c", script], Limits(memory_max_bytes=64 << 20, timeout_s=60), name=name)
    outcome = process.wait(timeout=60)
    assert outcome.exit_code == 137, outcome
    assert outcome.oom_kills >= 1
    assert outcome.status is Status.MEMORY_LIMIT_EXCEEDED


FORK_UNTIL_REFUSED = r"""
import os, sys, time
nested = sys.argv[1]
os.mkdir(nested)
with open(os.path.join(nested, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
children = []
try:
    for _ in range(50):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
except BlockingIOError:
    pass
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
sys.exit(0 if len(children) < 50 else 7)
"""


def test_forks_refused_in_a_nested_cgroup_count_as_pids_limit_hits(sandbox):
    """The task's pids limit refuses forks of a process it moved into a nested cgroup. v1
    counts the refusal only in the forking process's own pids cgroup."""
    name = uuid.uuid4().hex[:10]
    nested = nested_dir(sandbox, "pids", f"task-{name}")
    process = sandbox.start([PYTHON, "-c", FORK_UNTIL_REFUSED, nested],
                            Limits(pids_max=8, timeout_s=60), name=name)
    outcome = process.wait(timeout=60)
    assert outcome.status is Status.SUCCEEDED, "the limit refused a fork"
    assert outcome.pids_limit_hits >= 1


def test_a_cgroups_subtree_is_itself_alone_until_it_has_children_then_deepest_first(sandbox):
    """subtree() skips the walk where the link count says there is no subdirectory (kernfs keeps
    2 + subdirectories); with nested cgroups it still lists every one, deepest first."""
    from sandbox import cgroupfs

    top = os.path.join(next(iter(sandbox.driver.roots.values())), f"subtree-{uuid.uuid4().hex[:8]}")
    os.mkdir(top)
    try:
        assert cgroupfs.subtree(top) == [top]
        os.makedirs(os.path.join(top, "a", "b"))
        os.mkdir(os.path.join(top, "c"))
        found = cgroupfs.subtree(top)
        assert sorted(found) == sorted([top, os.path.join(top, "a"), os.path.join(top, "a", "b"), os.path.join(top, "c")])
        assert found.index(os.path.join(top, "a", "b")) < found.index(os.path.join(top, "a")) < found.index(top)
        assert cgroupfs.subtree(os.path.join(top, "a", "b")) == [os.path.join(top, "a", "b")]
    finally:
        for directory in reversed(sorted(cgroupfs.subtree(top))):
            os.rmdir(directory)
    assert cgroupfs.subtree(top) == []
