"""What limits_enforced says of swap where the kernel does not account it. cgroup-v2.rst:
memory.swap.max exists only with swap accounting (CONFIG_MEMCG_SWAP, not swapaccount=0), and
without it swap is charged to no cgroup: a task may swap out past memory.max. cgroup-v1/memory.rst:
the memory.memsw.* files likewise. Saying "swap 0" there told an operator a limit held that did not."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import Limits
from sandbox.cgroup_v2 import CgroupV2Driver

from .test_cgroup_v2_documented_interface import fake_cgroup


def test_v2_without_memory_swap_max_the_limits_say_swap_is_not_limited(tmp_path):
    own = fake_cgroup(tmp_path / "service")
    driver = CgroupV2Driver(str(own), "executor")
    group = driver.create("task-noswap", Limits(memory_max_bytes=64 << 20))  # a new cgroup without memory.swap.max
    assert not (own / "executor" / "task-noswap" / "memory.swap.max").exists()
    assert "swap 0" not in group.enforced["memory"], group.enforced["memory"]
    assert "swap not limited" in group.enforced["memory"]


def test_v1_without_memsw_files_the_limits_say_swap_is_not_limited(sandbox, monkeypatch):
    """This host accounts swap; a kernel that does not is the same cgroup without the memsw files
    (os.path.exists, which the driver asks, says so)."""
    if sandbox.mode != "cgroup-v1":
        pytest.skip("a cgroup v1 memory hierarchy")
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda path: "memory.memsw." not in str(path) and real_exists(path))
    group = sandbox.driver.create("task-noswap", Limits(memory_max_bytes=64 << 20))
    monkeypatch.undo()
    try:
        assert "memory.limit_in_bytes=67108864" in group.enforced["memory"]
        assert "swap not limited" in group.enforced["memory"], group.enforced["memory"]
        memsw = Path(sandbox.driver.roots["memory"], "task-noswap", "memory.memsw.limit_in_bytes")
        assert int(memsw.read_text()) > 1 << 62, "the memsw limit was written"
    finally:
        group.remove()
