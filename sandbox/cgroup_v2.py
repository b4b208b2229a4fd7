"""cgroup v2 (unified) driver, following the kernel's documented delegation model.

Layout below the cgroup we own (our own cgroup under systemd Delegate=yes, a container's
cgroup namespace root, or a configured path):

    <own>/supervisor/        the master itself (only when it had to move, see below)
    <own>/<root>/task-<id>/  one leaf per task, with memory/pids/cpu limits

The "no internal processes" rule: controllers can be enabled in <own>/cgroup.subtree_control
only while <own> itself holds no process. So the master first moves every process of <own>
into the `supervisor` leaf, then enables +memory +pids +cpu. EBUSY from that write means a
process is still in <own> (typically one started concurrently by someone else).
"""
from __future__ import annotations

import errno
import os

from . import cgroupfs as fs
from .driver import TASK_PREFIX, Driver, TaskGroup
from .errors import SandboxError
from .limits import Limits

CPU_PERIOD_US = 100_000
WANTED = ("memory", "pids", "cpu")
SUPERVISOR_LEAF = "supervisor"


class CgroupV2Driver(Driver):
    mode = "cgroup-v2"

    def __init__(self, own_dir: str, root_name: str, *, is_hierarchy_root: bool = False) -> None:
        self.own_dir = own_dir
        self.available = set((fs.read_text(os.path.join(own_dir, "cgroup.controllers")) or "").split())
        if "memory" not in self.available:
            raise SandboxError(
                f"the memory controller is not available in {own_dir}: delegate it to the service "
                "(systemd Delegate=yes) or enable it in the parent's cgroup.subtree_control"
            )
        self.controllers = [c for c in WANTED if c in self.available]
        self._delegate(is_hierarchy_root)
        self.root = os.path.join(own_dir, root_name)
        fs.make_dir(self.root)
        self._enable(self.root)

    def _delegate(self, is_hierarchy_root: bool) -> None:
        enabled = set((fs.read_text(os.path.join(self.own_dir, "cgroup.subtree_control")) or "").split())
        if all(c in enabled for c in self.controllers):
            return
        if not is_hierarchy_root:
            members = fs.read_pids(os.path.join(self.own_dir, "cgroup.procs"))
            if members:
                leaf = os.path.join(self.own_dir, SUPERVISOR_LEAF)
                fs.make_dir(leaf)
                for pid in members:
                    try:
                        with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
                            f.write(str(pid))
                    except ProcessLookupError:
                        pass  # exited meanwhile
                    except OSError as exc:
                        raise SandboxError(f"cannot move process {pid} into {leaf}: {exc.strerror}") from exc
        self._enable(self.own_dir)

    def _enable(self, path: str) -> None:
        control = os.path.join(path, "cgroup.subtree_control")
        try:
            with open(control, "w") as f:
                f.write(" ".join("+" + c for c in self.controllers))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise SandboxError(
                    f"cannot enable {', '.join(self.controllers)} in {control}: a process is still in {path} "
                    "(cgroup v2 allows controllers only on cgroups without processes); move it into a leaf"
                ) from exc
            raise SandboxError(f"cannot enable controllers in {control}: {exc.strerror}") from exc

    def create(self, name: str, limits: Limits) -> TaskGroup:
        group = V2TaskGroup(name, os.path.join(self.root, name))
        fs.make_dir(group.dir, exist_ok=False)
        try:
            group.apply(limits, self.controllers)
        except BaseException:
            try:
                os.rmdir(group.dir)
            except OSError:
                pass
            raise
        return group

    def leftover_names(self) -> list[str]:
        try:
            return sorted(e for e in os.listdir(self.root) if e.startswith(TASK_PREFIX) and os.path.isdir(os.path.join(self.root, e)))
        except FileNotFoundError:
            return []

    def open_existing(self, name: str) -> TaskGroup:
        return V2TaskGroup(name, os.path.join(self.root, name))

    def close(self) -> None:
        fs.remove_root(self.root)


class V2TaskGroup(TaskGroup):
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.dir = path
        self.enforced: dict[str, str] = {}

    def _file(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def apply(self, limits: Limits, controllers: list[str]) -> None:
        if limits.memory_max_bytes is not None:
            fs.write(self._file("memory.max"), str(limits.memory_max_bytes), what="memory limit")
            high = limits.effective_memory_high()
            fs.write(self._file("memory.high"), str(high), what="memory throttle point")
            if os.path.exists(self._file("memory.swap.max")):
                fs.write(self._file("memory.swap.max"), "0", what="no swap")
            # Kill the whole task on OOM, not one arbitrary process of it: a half-killed
            # ingestion pipeline would hang or report nonsense.
            fs.write(self._file("memory.oom.group"), "1", what="group OOM kill")
            self.enforced["memory"] = f"cgroup v2 memory.max={limits.memory_max_bytes} memory.high={high} swap 0 oom.group"
        elif limits.memory_high_bytes is not None:
            fs.write(self._file("memory.high"), str(limits.memory_high_bytes), what="memory throttle point")
            self.enforced["memory_high"] = f"cgroup v2 memory.high={limits.memory_high_bytes}"
        if limits.pids_max is not None:
            if "pids" in controllers:
                fs.write(self._file("pids.max"), str(limits.pids_max), what="pids limit")
                self.enforced["pids"] = f"cgroup v2 pids.max={limits.pids_max}"
            else:
                self.enforced["pids"] = "not enforced: pids controller not delegated"
        if limits.cpu_max is not None:
            if "cpu" in controllers:
                quota = int(limits.cpu_max * CPU_PERIOD_US)
                fs.write(self._file("cpu.max"), f"{quota} {CPU_PERIOD_US}", what="cpu limit")
                self.enforced["cpu"] = f"cgroup v2 cpu.max={quota} {CPU_PERIOD_US}"
            else:
                self.enforced["cpu"] = "not enforced: cpu controller not delegated"
        self.enforced["tree"] = "tracked and killed by cgroup (cgroup.kill)"

    def attach(self, pid: int) -> None:
        fs.write(self._file("cgroup.procs"), str(pid), what="attach task")

    def pids(self) -> list[int]:
        return fs.read_subtree_pids(self.dir)

    def is_empty(self) -> bool:
        populated = fs.is_populated(self.dir)
        return not self.pids() if populated is None else not populated

    def signal_all(self, sig: int) -> None:
        fs.kill_pids(self.pids(), sig)

    def kill_all(self) -> None:
        # cgroup.kill and cgroup.freeze act on the whole subtree, nested cgroups included.
        if os.path.exists(self._file("cgroup.kill")):
            fs.write(self._file("cgroup.kill"), "1", what="kill task")
            return
        # Kernels before 5.14 have no cgroup.kill: freeze, kill, thaw (kill_until_empty repeats).
        fs.write(self._file("cgroup.freeze"), "1", what="freeze task")
        fs.kill_pids(self.pids())
        fs.write(self._file("cgroup.freeze"), "0", what="thaw task")

    def oom_kills(self) -> int:
        events = fs.read_keyed(self._file("memory.events"))
        return max(events.get("oom_kill", 0), events.get("oom_group_kill", 0))

    def memory_current(self) -> int | None:
        return fs.read_int(self._file("memory.current"))

    def pids_limit_hits(self) -> int:
        return fs.read_keyed(self._file("pids.events")).get("max", 0)

    def memory_peak(self) -> int | None:
        return fs.read_int(self._file("memory.peak"))

    def remove(self) -> None:
        fs.remove_tree(self.dir)
