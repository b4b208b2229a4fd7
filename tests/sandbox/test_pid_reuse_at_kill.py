"""A task's kill signals its cgroup's processes and no other, even when a member's pid passes to
an unrelated process between the kill's read of cgroup.procs and its signal.

The race is made real, inside that read: the member is killed and reaped, and the next process
is forked with exactly its pid (root may set /proc/sys/kernel/ns_last_pid, the pid the kernel
gave last). pid_max is 32768 on many hosts, so on a busy one a number comes round again within
seconds; cgroup.kill, which kills every member just before the read, makes the window real.
Each way a tree is killed where a member can die between the read and the signal: cgroup v1's
hybrid unified hierarchy (cgroup.kill) on this kernel, and the v2 driver's cgroup.kill,
freeze-and-kill (a fatal signal ends a v2-frozen process) and SIGKILL sweeps, each on cgroups
backed by real ones. v1's freezer loop is left out: a process frozen there does not die until
thawed, so no member can leave between its read and its signal.
"""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sandbox import Limits
from sandbox import cgroupfs as fs

from .conftest import assert_spared, pass_pid_on
from .test_cgroup_v2_older_kernels import open_driver, real_v2_parent  # noqa: F401 (a fixture)
from .test_v1_kill_paths import v1_sandbox


@contextmanager
def pid_passed_on_during_the_read(monkeypatch, member: subprocess.Popen) -> Iterator[list[subprocess.Popen]]:
    """The first read of a cgroup's pids that lists MEMBER returns the list as read, but only
    after MEMBER has died, been reaped and had its pid given to a new process outside the cgroup
    (the decoy: the list the context gives holds it once made)."""
    real_read = fs.read_subtree_pids
    decoys: list[subprocess.Popen] = []

    def read_then_pass_the_pid_on(path: str) -> list[int]:
        pids = real_read(path)
        if member.pid in pids and not decoys:
            decoys.append(pass_pid_on(member))
        return pids

    monkeypatch.setattr(fs, "read_subtree_pids", read_then_pass_the_pid_on)
    try:
        yield decoys
    finally:
        monkeypatch.setattr(fs, "read_subtree_pids", real_read)
        for decoy in decoys:
            decoy.kill()
            decoy.wait()


def assert_the_kill_spares_the_pids_new_owner(monkeypatch, group) -> None:
    """cgroup.kill may end the member before the kill's read lists it (the member then leaves
    cgroup.procs at once, and there is no read to stage the race in): tried again then."""
    for _ in range(20):
        member = subprocess.Popen(["sleep", "300"])
        try:
            group.attach(member.pid)
            with pid_passed_on_during_the_read(monkeypatch, member) as decoys:
                group.kill_all()
                if not decoys:
                    continue
                assert decoys[0].pid == member.pid
                assert_spared(decoys[0])
                return
        finally:
            if member.poll() is None:
                member.kill()
            member.wait()
    pytest.fail("in 20 tries the kill's read never listed the member: the race was never staged")


def test_the_v1_unified_kill_spares_a_process_that_took_a_members_pid(monkeypatch, writes_ns_last_pid):
    sandbox = v1_sandbox(unified=True)
    group = sandbox.driver.create("task-pid-reuse", Limits(pids_max=64))
    try:
        assert_the_kill_spares_the_pids_new_owner(monkeypatch, group)
    finally:
        group.remove()
        sandbox.close()


@pytest.mark.parametrize("kernel", ["5.14+", "5.2-5.13", "4.19"])
def test_the_v2_kill_spares_a_process_that_took_a_members_pid(tmp_path, monkeypatch, real_v2_parent,  # noqa: F811
                                                             writes_ns_last_pid, kernel):
    driver, _ = open_driver(monkeypatch, tmp_path, kernel, real_v2_parent)
    group = driver.create("task-pid-reuse", Limits(pids_max=64))
    try:
        assert_the_kill_spares_the_pids_new_owner(monkeypatch, group)
    finally:
        group.remove()
        driver.close()


def test_a_kill_that_cannot_read_the_cgroup_again_still_kills_what_it_read(monkeypatch):
    """The second read fails (out of descriptors, say): the members the first listed are killed
    all the same, never left running for want of a confirmation."""
    sandbox = v1_sandbox(unified=False)  # the freezer loop: nothing but this helper kills
    group = sandbox.driver.create("task-second-read", Limits(pids_max=64))
    member = subprocess.Popen(["sleep", "300"])
    try:
        group.attach(member.pid)
        real_read, reads = fs.read_subtree_pids, []

        def second_read_fails(path: str) -> list[int]:
            reads.append(path)
            if len(reads) == 2:
                raise OSError(24, "Too many open files")
            return real_read(path)

        monkeypatch.setattr(fs, "read_subtree_pids", second_read_fails)
        group.kill_all()
        monkeypatch.setattr(fs, "read_subtree_pids", real_read)
        assert len(reads) >= 2, "the kill read the cgroup once only"
        assert member.wait(timeout=10) == -9
    finally:
        if member.poll() is None:
            member.kill()
        member.wait()
        group.remove()
        sandbox.close()
