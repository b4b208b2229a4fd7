"""The v2 driver on kernels that lack cgroup.kill (before 5.14: Ubuntu 20.04's 5.4, Amazon Linux
2's 5.10) or cgroup.freeze too (before 5.2: RHEL/Rocky 8's 4.18, Debian 10's 4.19), and
memory.oom.group (before 4.19), where cgroup v2 is the default or can be enabled.

The tree is the one of test_cgroup_v2_documented_interface.py, laid out as such a kernel makes
a new cgroup: without the files it lacks. Where this host has a writable cgroup2 hierarchy (the
hybrid dev machines' controller-less one is enough), each task cgroup of the tree is backed by a
real cgroup: its cgroup.procs, cgroup.events and cgroup.freeze are the kernel's, so the kernel
itself puts forked children into the task's cgroup, says whether it is populated and freezes it,
and a file the emulated kernel lacks is a link to a name the real cgroup lacks, so writing it
fails as it fails there (cgroupfs refuses to create a file: EACCES). The processes are real.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Limits, Sandbox
from sandbox import cgroupfs as fs
from sandbox.cgroup_v2 import CgroupV2Driver
from sandbox.detect import read_hierarchies, v2_hierarchy
from sandbox.outcome import Status

from .conftest import pid_alive
from .test_cgroup_v2_documented_interface import fake_cgroup

# What each kernel lacks of the interface fake_cgroup lays out.
KERNELS = {
    "5.14+": (),
    "5.2-5.13": ("cgroup.kill",),
    "4.19": ("cgroup.kill", "cgroup.freeze"),
    "4.18": ("cgroup.kill", "cgroup.freeze", "memory.oom.group"),
}
OLDER = ["5.2-5.13", "4.19", "4.18"]
BACKED = ("cgroup.procs", "cgroup.events", "cgroup.freeze")

# Three chains that keep forking, each generation forking the next and exiting (so the pids
# cgroup.procs lists go stale at once), and a grandchild in a session of its own. The main
# process reaps the chains' orphans (a child subreaper) and never exits; each chain stops by
# itself after 60 s, should a kill fail.
FORKING_TREE = [sys.executable, "-c", """
import ctypes, os, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
if os.fork() == 0:
    os.setsid()
    time.sleep(300)
    os._exit(0)
end = time.monotonic() + 60
for _ in range(3):
    if os.fork() == 0:
        while time.monotonic() < end:
            time.sleep(0.002)
            if os.fork():
                os._exit(0)
        os._exit(0)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.1)
"""]

# A main process that leaves a daemon behind (setsid and a second fork) and exits 0.
DAEMONISING = [sys.executable, "-c", """
import os, sys, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode())
        time.sleep(300)
    os._exit(0)
os.wait()
print(os.read(r, 32).decode(), flush=True)
"""]


@pytest.fixture
def real_v2_parent() -> Iterator[Path]:
    """A real cgroup2 cgroup below our own, for the task cgroups' backing; every process left in
    it is killed (this kernel's own cgroup.kill) and it is removed after the test."""
    unified = v2_hierarchy(read_hierarchies())
    if unified is None or not unified.writable:
        pytest.skip("needs a writable cgroup2 hierarchy (the hybrid one without controllers is enough)")
    parent = Path(unified.own_dir) / f"test-v2-older-{uuid.uuid4().hex[:10]}"
    parent.mkdir()
    try:
        if not all((parent / name).exists() for name in ("cgroup.freeze", "cgroup.kill", "cgroup.events")):
            pytest.skip("needs a kernel with cgroup.freeze and cgroup.kill (5.14+) to back the older ones")
        yield parent
    finally:
        # A reaper still waiting on a task whose kill failed may remove its cgroup meanwhile.
        for directory in fs.subtree(str(parent)):
            try:
                (Path(directory) / "cgroup.kill").write_text("1")
            except FileNotFoundError:
                continue
            assert fs.wait_for(lambda: fs.is_populated(directory) is not True, 10), f"{directory} would not empty"
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass


class OlderKernel:
    """Makes every new cgroup below the fake tree as KERNEL would, each task cgroup backed by a
    real one below REAL_PARENT where given (os.mkdir and os.rmdir patched, as the documented
    interface test does for memory.swap.max)."""

    def __init__(self, monkeypatch, kernel: str, own: Path, real_parent: Path | None) -> None:
        self.missing = KERNELS[kernel]
        self.own = own
        self.real_parent = real_parent
        self._mkdir, self._rmdir = os.mkdir, os.rmdir
        monkeypatch.setattr(os, "mkdir", self.mkdir)
        monkeypatch.setattr(os, "rmdir", self.rmdir)

    def _fake(self, path) -> bool:
        return Path(path).is_relative_to(self.own) and Path(path) != self.own

    def real(self, path) -> Path | None:
        if self.real_parent is None or not Path(path).name.startswith("task-"):
            return None
        return self.real_parent / Path(path).name

    def mkdir(self, path, *args) -> None:
        self._mkdir(path, *args)
        if not self._fake(path):
            return
        directory = fake_cgroup(Path(path))
        for name in self.missing:
            (directory / name).unlink()
        real = self.real(path)
        if real is None:
            return
        self._mkdir(real)
        for name in BACKED:
            if name not in self.missing:
                (directory / name).unlink()
                (directory / name).symlink_to(real / name)
        for name in self.missing:
            (directory / name).symlink_to(real / f"absent.{name}")

    def rmdir(self, path) -> None:
        if not self._fake(path):
            return self._rmdir(path)
        real = self.real(path)
        if real is not None:
            self._rmdir(real)  # EBUSY while a process is left, as the kernel says
        for entry in Path(path).iterdir():
            if entry.is_symlink() or not entry.is_dir():
                entry.unlink()
        self._rmdir(path)

    def written(self, path: Path) -> list[str]:
        """The files KERNEL lacks that were written in PATH (only possible in a fake one)."""
        return [name for name in self.missing if (path / name).exists()]


def open_driver(monkeypatch, tmp_path: Path, kernel: str, real_parent: Path | None = None):
    own = fake_cgroup(tmp_path / "service")
    layout = OlderKernel(monkeypatch, kernel, own, real_parent)
    return CgroupV2Driver(str(own), "executor"), layout


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_the_way_a_tree_is_killed_is_probed_at_open_and_reported(tmp_path, monkeypatch, kernel):
    driver, _ = open_driver(monkeypatch, tmp_path, kernel)
    expected = {"5.14+": "(cgroup.kill)", "5.2-5.13": "freeze-and-kill", "4.19": "SIGKILL sweeps", "4.18": "SIGKILL sweeps"}[kernel]
    group = driver.create("task-r", Limits(pids_max=64))
    assert expected in group.enforced["tree"]
    assert expected in driver.tree_kill_support()
    sandbox = Sandbox(driver, "test")
    try:
        assert expected in sandbox.isolation_support()["tree_kill"]
    finally:
        group.remove()
        sandbox.close()


def test_a_kill_without_cgroup_freeze_writes_no_file_the_kernel_lacks(tmp_path, monkeypatch):
    """On the kernel a missing file cannot be created (EACCES), so a kill that writes one never kills."""
    driver, layout = open_driver(monkeypatch, tmp_path, "4.19")
    group = driver.create("task-w", Limits())
    task_dir = Path(driver.root) / "task-w"
    (task_dir / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    group.kill_all()
    assert layout.written(task_dir) == []


@pytest.mark.parametrize("kernel", OLDER)
def test_a_timed_out_tree_that_keeps_forking_is_killed_whole(tmp_path, monkeypatch, real_v2_parent, kernel):
    driver, _ = open_driver(monkeypatch, tmp_path, kernel, real_v2_parent)
    sandbox = Sandbox(driver, "test")
    try:
        process = sandbox.start(FORKING_TREE, Limits(timeout_s=1.5))
        real = real_v2_parent / process.name
        seen: set[int] = set()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # before the timeout: the chains are forking
            seen.update(fs.read_pids(str(real / "cgroup.procs")))
            time.sleep(0.05)
        outcome = process.wait(timeout=60)
        assert outcome.status is Status.TIMED_OUT, outcome
        assert outcome.unkillable_pids == []
        assert len(seen) > 5, f"the tree did not keep forking: {seen}"
        assert not real.exists(), "the task's cgroup is removed, which the kernel allows only once it is empty"
        assert ("freeze-and-kill" if kernel == "5.2-5.13" else "SIGKILL sweeps") in outcome.limits_enforced["tree"]
    finally:
        sandbox.sweep()
        sandbox.close()


@pytest.mark.parametrize("kernel", OLDER)
def test_a_daemonised_grandchild_dies_with_its_task(tmp_path, monkeypatch, real_v2_parent, kernel):
    driver, _ = open_driver(monkeypatch, tmp_path, kernel, real_v2_parent)
    sandbox = Sandbox(driver, "test")
    read_end, write_end = os.pipe()
    try:
        process = sandbox.start(DAEMONISING, stdout=write_end)
        os.close(write_end)
        daemon = int(os.read(read_end, 32))
        outcome = process.wait(timeout=60)
        assert outcome.status is Status.SUCCEEDED, outcome
        assert outcome.unkillable_pids == []
        assert not pid_alive(daemon), "the daemon outlived its task"
        assert not (real_v2_parent / process.name).exists()
        assert ("freeze-and-kill" if kernel == "5.2-5.13" else "SIGKILL sweeps") in outcome.limits_enforced["tree"]
    finally:
        os.close(read_end)
        sandbox.sweep()
        sandbox.close()


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_a_memory_limit_starts_on_a_kernel_without_memory_oom_group(tmp_path, monkeypatch, kernel):
    """memory.oom.group came in 4.19; on 4.18 the write failed (cgroupfs cannot create a file),
    so every task with a memory limit failed to start. Without it the OOM killer ends one process,
    as on cgroup v1, and the limits say so."""
    driver, layout = open_driver(monkeypatch, tmp_path, kernel)
    group = driver.create("task-m", Limits(memory_max_bytes=64 << 20))
    try:
        assert layout.written(Path(driver.root) / "task-m") == []
        lacks_group_kill = "memory.oom.group" in KERNELS[kernel]
        assert ("no oom.group" in group.enforced["memory"]) is lacks_group_kill
        assert ("oom.group" in group.enforced["memory"])
        assert (Path(driver.root) / "task-m" / "memory.max").read_text() == str(64 << 20)
    finally:
        group.remove()
