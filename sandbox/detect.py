"""Where this process's cgroups are, and which mode the sandbox can run in.

Read from /proc/self/cgroup (our path in each hierarchy) and /proc/self/mountinfo (where
each hierarchy is mounted, and which part of it the mount shows: inside a container with a
cgroup namespace the mount root is not the hierarchy root).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")
V2_CONTROLLERS = ("memory", "pids", "cpu")


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and this process's directory in it."""

    fstype: str  # "cgroup" (v1) or "cgroup2"
    options: frozenset[str]  # v1 controllers (and name=...) of the mount
    mountpoint: str
    own_dir: str  # the directory of this process's cgroup, through this mount
    writable: bool


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def read_hierarchies(proc_self: str = "/proc/self") -> list[Hierarchy]:
    """Every cgroup hierarchy mounted here, with this process's own directory in each."""
    memberships: dict[str, str] = {}
    with open(os.path.join(proc_self, "cgroup")) as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            memberships[controllers] = path
    found = []
    with open(os.path.join(proc_self, "mountinfo")) as f:
        for line in f:
            left, right = line.rstrip("\n").split(" - ", 1)
            fields = left.split()
            root, mountpoint, mount_opts = _unescape(fields[3]), _unescape(fields[4]), fields[5]
            fstype, _source, super_opts = right.split(" ", 2)
            if fstype not in ("cgroup", "cgroup2"):
                continue
            options = frozenset(super_opts.split(",")) if fstype == "cgroup" else frozenset()
            key = "" if fstype == "cgroup2" else _membership_key(options, memberships)
            if key is None or key not in memberships:
                continue
            path = memberships[key]
            # Our path is relative to the hierarchy root; the mount shows the subtree at ROOT.
            rel = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
            if rel.startswith(".."):
                continue  # our cgroup is outside what this mount shows
            own_dir = os.path.normpath(os.path.join(mountpoint, rel))
            writable = "rw" in mount_opts.split(",") and os.access(own_dir, os.W_OK)
            found.append(Hierarchy(fstype, options, mountpoint, own_dir, writable))
    return found


def _membership_key(options: frozenset[str], memberships: dict[str, str]) -> str | None:
    """The /proc/self/cgroup key ("cpu,cpuacct", "name=systemd") of a v1 mount with OPTIONS."""
    for key in memberships:
        if key and set(key.split(",")) <= options:
            return key
    return None


def v1_hierarchy(hierarchies: list[Hierarchy], controller: str) -> Hierarchy | None:
    for h in hierarchies:
        if h.fstype == "cgroup" and controller in h.options:
            return h
    return None


def v2_hierarchy(hierarchies: list[Hierarchy]) -> Hierarchy | None:
    for h in hierarchies:
        if h.fstype == "cgroup2":
            return h
    return None


def v2_available_controllers(h: Hierarchy) -> set[str]:
    try:
        with open(os.path.join(h.own_dir, "cgroup.controllers")) as f:
            return set(f.read().split())
    except OSError:
        return set()


def is_root_cgroup(path: str) -> bool:
    """Whether PATH is the real root of a cgroup v2 hierarchy. Only the root is exempt from "no
    processes in a cgroup that enables controllers for its children", and only the root has no
    cgroup.type (cgroup-v2.rst). A container with its own cgroup namespace sees its cgroup at the
    mount point, where it looks like the root but is not: the master must move into a leaf there."""
    return not os.path.exists(os.path.join(path, "cgroup.type"))


def detect_mode(hierarchies: list[Hierarchy]) -> str:
    """cgroup-v2 where the unified hierarchy has the memory controller, cgroup-v1 where a
    writable v1 memory hierarchy exists (legacy or hybrid), none otherwise."""
    unified = v2_hierarchy(hierarchies)
    if unified and unified.writable and "memory" in v2_available_controllers(unified):
        return "cgroup-v2"
    memory = v1_hierarchy(hierarchies, "memory")
    if memory and memory.writable:
        return "cgroup-v1"
    return "none"
