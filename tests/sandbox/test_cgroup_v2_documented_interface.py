"""The v2 driver against a directory laid out as the kernel documents the v2 interface
(Documentation/admin-guide/cgroup-v2.rst). v2 cannot be mounted on the dev machines (they
run v1 hybrid), so these tests check what the driver writes and reads; the tests marked
cgroup_v2 run the same behaviour against a real v2 hierarchy wherever one exists."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import Limits, Sandbox, SandboxError
from sandbox.cgroup_v2 import CgroupV2Driver
from sandbox.detect import (
    detect_mode,
    is_root_cgroup,
    read_hierarchies,
    v2_available_controllers,
    v2_hierarchy,
)


def fake_cgroup(path: Path, procs: str = "", controllers: str = "cpuset cpu io memory hugetlb pids rdma misc") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, content in {
        "cgroup.procs": procs, "cgroup.controllers": controllers, "cgroup.subtree_control": "",
        "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "", "cgroup.freeze": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        "memory.current": "0", "memory.peak": "0", "memory.swap.max": "max", "memory.oom.group": "0",
    }.items():
        (path / name).write_text(content)
    return path


def test_delegation_moves_the_master_into_a_leaf_before_enabling_controllers(tmp_path):
    own = fake_cgroup(tmp_path / "service", procs="4242\n4243\n")
    driver = CgroupV2Driver(str(own), "executor")
    assert (own / "supervisor" / "cgroup.procs").read_text() in ("4243", "4242")  # each pid written in turn
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (own / "executor" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert driver.controllers == ["memory", "pids", "cpu"]


def test_no_move_where_controllers_are_already_delegated(tmp_path):
    own = fake_cgroup(tmp_path / "service", procs="4242\n")
    (own / "cgroup.subtree_control").write_text("memory pids cpu")
    CgroupV2Driver(str(own), "executor")
    assert not (own / "supervisor").exists()


def test_a_process_started_in_the_supervisor_leaf_takes_its_parent_as_its_own(tmp_path):
    """The first open moves every process of <own> into <own>/supervisor; what is started from
    there later (a shell's next run of the sandbox CLI, `check`, another open in one process)
    began in the leaf, took it for its own, and moved everything one level deeper each time:
    supervisor/supervisor/..., and a sweep of a crashed run's root looked one level too low."""
    own = fake_cgroup(tmp_path / "session", procs="4242\n")
    CgroupV2Driver(str(own), "first-run")
    leaf = own / "supervisor"
    fake_cgroup(leaf, procs="4242\n", controllers="memory pids cpu")  # as the kernel shows it once we are in it
    (own / "cgroup.procs").write_text("")
    (own / "cgroup.subtree_control").write_text("memory pids cpu")  # read back as the kernel shows it
    again = CgroupV2Driver(str(leaf), "second-run")
    assert again.own_dir == str(own) and again.root == str(own / "second-run")
    assert not (leaf / "supervisor").exists(), "moved one level deeper"
    assert "first-run" in os.listdir(again.own_dir), "a sweep of the first run's root would find it"


def test_a_leaf_named_supervisor_under_a_parent_not_ours_stays_our_own(tmp_path):
    parent = fake_cgroup(tmp_path / "system.slice")  # no controllers enabled for its children: not delegated
    leaf = fake_cgroup(parent / "supervisor", procs="4242\n")
    driver = CgroupV2Driver(str(leaf), "executor")
    assert driver.own_dir == str(leaf)


def test_task_limits_are_written_as_the_kernel_documents_them(tmp_path, monkeypatch):
    own = fake_cgroup(tmp_path / "service")
    driver = CgroupV2Driver(str(own), "executor")
    task_dir = own / "executor" / "task-abc"
    real_mkdir = os.mkdir

    def mkdir_as_the_kernel_does(path, *args):
        real_mkdir(path, *args)
        if Path(path) == task_dir:  # the new cgroup comes with memory.swap.max where swap accounting is on
            (task_dir / "memory.swap.max").write_text("max")
            (task_dir / "memory.oom.group").write_text("0")  # and memory.oom.group since 4.19

    monkeypatch.setattr(os, "mkdir", mkdir_as_the_kernel_does)
    group = driver.create("task-abc", Limits(memory_max_bytes=512 << 20, pids_max=100, cpu_max=1.5))
    monkeypatch.undo()
    assert (task_dir / "memory.max").read_text() == str(512 << 20)
    assert int((task_dir / "memory.high").read_text()) < 512 << 20
    assert (task_dir / "memory.swap.max").read_text() == "0"
    assert (task_dir / "memory.oom.group").read_text() == "1"
    assert (task_dir / "pids.max").read_text() == "100"
    assert (task_dir / "cpu.max").read_text() == "150000 100000"
    group.attach(777)
    assert (task_dir / "cgroup.procs").read_text() == "777"
    assert "memory.max=536870912" in group.enforced["memory"]


def test_oom_and_peak_are_read_from_memory_events_and_memory_peak(tmp_path):
    own = fake_cgroup(tmp_path / "service")
    driver = CgroupV2Driver(str(own), "executor")
    group = driver.create("task-x", Limits(memory_max_bytes=64 << 20))
    task_dir = own / "executor" / "task-x"
    (task_dir / "memory.events").write_text("low 0\nhigh 12\nmax 40\noom 1\noom_kill 2\noom_group_kill 1\n")
    (task_dir / "memory.peak").write_text(str(64 << 20))
    (task_dir / "memory.current").write_text(str(10 << 20))
    assert group.oom_kills() == 2
    assert group.memory_peak() == 64 << 20
    assert group.memory_current() == 10 << 20
    assert group.pids_limit_hits() == 0  # no pids.events written yet reads as none
    (task_dir / "pids.events").write_text("max 7\n")
    assert group.pids_limit_hits() == 7


def test_kill_uses_cgroup_kill(tmp_path):
    own = fake_cgroup(tmp_path / "service")
    fake_cgroup(own / "executor")  # our root, as a kernel with cgroup.kill (5.14+) makes it
    driver = CgroupV2Driver(str(own), "executor")
    group = driver.create("task-k", Limits())
    task_dir = own / "executor" / "task-k"
    (task_dir / "cgroup.kill").write_text("")
    group.kill_all()
    assert (task_dir / "cgroup.kill").read_text() == "1"


def test_leftovers_are_the_task_directories_under_the_root(tmp_path):
    own = fake_cgroup(tmp_path / "service")
    driver = CgroupV2Driver(str(own), "executor")
    (own / "executor" / "task-old1").mkdir()
    (own / "executor" / "not-a-task").mkdir()
    assert driver.leftover_names() == ["task-old1"]


def test_missing_memory_controller_says_how_to_delegate_it(tmp_path):
    own = fake_cgroup(tmp_path / "service", controllers="cpu pids")
    with pytest.raises(SandboxError, match="Delegate=yes"):
        CgroupV2Driver(str(own), "executor")


def test_mode_detection_reads_proc_self(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    unified = fake_cgroup(tmp_path / "mnt" / "system.slice" / "x.service")
    (proc / "cgroup").write_text("0::/system.slice/x.service\n")
    (proc / "mountinfo").write_text(
        f"30 25 0:26 / {tmp_path / 'mnt'} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    hierarchies = read_hierarchies(str(proc))
    assert v2_hierarchy(hierarchies).own_dir == str(unified)
    assert "memory" in v2_available_controllers(v2_hierarchy(hierarchies))
    assert detect_mode(hierarchies) == "cgroup-v2"


def test_mode_detection_in_a_container_namespace_uses_the_mount_root(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    fake_cgroup(tmp_path / "mnt")
    (proc / "cgroup").write_text("0::/\n")
    (proc / "mountinfo").write_text(f"30 25 0:26 / {tmp_path / 'mnt'} ro,nosuid - cgroup2 cgroup2 ro\n")
    assert detect_mode(read_hierarchies(str(proc))) == "none", "a read-only cgroupfs (default Docker) means mode none"


def _real_v2() -> bool:
    hierarchies = read_hierarchies()
    return detect_mode(hierarchies) == "cgroup-v2"


@pytest.mark.cgroup_v2
@pytest.mark.skipif(not _real_v2(), reason="needs a real, writable cgroup v2 hierarchy with the memory controller")
def test_real_v2_leak_is_memory_limit_exceeded_from_memory_events():
    import sys

    sandbox = Sandbox.open(f"test-v2-{os.getpid()}")
    try:
        leak = [sys.executable, "-c", "leak=[]\nwhile True: leak.append(bytearray(10 << 20))"]
        outcome = sandbox.start(leak, Limits(memory_max_bytes=100 << 20, timeout_s=60)).wait()
        assert outcome.status.value == "MEMORY_LIMIT_EXCEEDED"
        assert outcome.mode == "cgroup-v2"
        assert outcome.oom_kills >= 1
    finally:
        sandbox.sweep()
        sandbox.close()


def test_a_cgroup_namespace_root_is_not_the_real_root_and_the_master_moves_into_a_leaf(tmp_path):
    # A privileged container with its own cgroup namespace: its cgroup is mounted at
    # /sys/fs/cgroup and holds PID 1 (datahub-executor-init) and the master; unlike the real root it has cgroup.type.
    namespace_root = fake_cgroup(tmp_path / "ns-root", procs="1\n7\n")
    (namespace_root / "cgroup.type").write_text("domain")
    real_root = fake_cgroup(tmp_path / "real-root")
    assert not is_root_cgroup(str(namespace_root)) and is_root_cgroup(str(real_root))
    CgroupV2Driver(str(namespace_root), "executor", is_hierarchy_root=is_root_cgroup(str(namespace_root)))
    assert (namespace_root / "supervisor" / "cgroup.procs").exists(), "processes leave the cgroup that delegates"
    assert (namespace_root / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
