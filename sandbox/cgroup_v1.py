"""cgroup v1 (legacy or hybrid) driver: one directory per controller hierarchy.

v1 has no cgroup.kill and no atomic view of a process tree per controller, so:
- where the hybrid unified hierarchy (cgroup2 without controllers) is mounted and writable we
  also place the task there, only to track its processes and kill them atomically with
  cgroup.kill, exactly as systemd does in hybrid mode (and make no freezer cgroup);
- otherwise we freeze the task (freezer), SIGKILL every member, thaw, and repeat until empty,
  so a fork bomb cannot outrun the kill loop.
"""
from __future__ import annotations

import os

from . import cgroupfs as fs
from .detect import Hierarchy, v1_hierarchy, v2_hierarchy
from .driver import TASK_PREFIX, Driver, TaskGroup
from .errors import SandboxError
from .limits import Limits

CPU_PERIOD_US = 100_000
# A freeze normally completes in microseconds; a process stuck in the kernel can hold it in
# FREEZING, and then we kill what is frozen and let the caller retry.
FREEZE_WAIT_S = 1.0
CONTROLLERS = ("memory", "pids", "cpu", "freezer")
# memory.limit_in_bytes of a cgroup without a limit: PAGE_COUNTER_MAX pages, ~2^63 bytes.
V1_NO_LIMIT = 1 << 62
PMD_SIZE_FILE = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"


def largest_charge() -> int:
    """The most the kernel charges to a memory cgroup at once: a PMD-sized huge page (2 MiB on
    x86-64, 512 MiB on arm64 with 64 KiB pages), read where the kernel says it; 2 MiB where not."""
    return max(fs.read_int(PMD_SIZE_FILE) or 0, 2 << 20)


class CgroupV1Driver(Driver):
    mode = "cgroup-v1"

    def __init__(self, hierarchies: list[Hierarchy], root_name: str) -> None:
        self.roots: dict[str, str] = {}
        for controller in CONTROLLERS:
            h = v1_hierarchy(hierarchies, controller)
            if h is not None and h.writable:
                self.roots[controller] = os.path.join(h.own_dir, root_name)
        if "memory" not in self.roots:
            memory = v1_hierarchy(hierarchies, "memory")
            if memory is None:
                raise SandboxError("cgroup v1 mode needs the memory hierarchy; none is mounted here (use mode none)")
            raise SandboxError(f"no permission to create cgroups under {memory.own_dir}: {fs.DELEGATION_FIX}")
        unified = v2_hierarchy(hierarchies)
        if unified is not None and unified.writable:
            self._add_unified_tracking(os.path.join(unified.own_dir, root_name))
        if "unified" in self.roots:
            # cgroup.kill ends the tree; the freezer serves only the freeze-and-kill fallback, so
            # a task gets no freezer cgroup it would never use (a mkdir, an attach and an rmdir).
            self.roots.pop("freezer", None)
        for controller, path in self.roots.items():
            if controller != "unified":
                fs.make_dir(path)

    def _add_unified_tracking(self, root: str) -> None:
        """Use the hybrid unified hierarchy where it can kill a tree (cgroup.kill, Linux 5.14+)."""
        try:
            os.mkdir(root)
        except FileExistsError:
            pass
        except OSError:
            return
        if os.path.exists(os.path.join(root, "cgroup.kill")):
            self.roots["unified"] = root
        else:
            try:
                os.rmdir(root)
            except OSError:
                pass

    def create(self, name: str, limits: Limits) -> TaskGroup:
        dirs = {c: os.path.join(root, name) for c, root in self.roots.items()}
        group = V1TaskGroup(name, dirs)
        made: list[str] = []
        try:
            for path in dict.fromkeys(dirs.values()):  # controllers mounted together share one directory
                fs.make_dir(path, exist_ok=False)
                made.append(path)
            group.apply(limits)
        except BaseException:
            for path in made:
                try:
                    os.rmdir(path)
                except OSError:
                    pass
            raise
        return group

    def leftover_names(self) -> list[str]:
        names: set[str] = set()
        for root in self.roots.values():
            try:
                names.update(e for e in os.listdir(root) if e.startswith(TASK_PREFIX) and os.path.isdir(os.path.join(root, e)))
            except FileNotFoundError:
                pass
        return sorted(names)

    def open_existing(self, name: str) -> TaskGroup:
        return V1TaskGroup(name, {c: os.path.join(root, name) for c, root in self.roots.items()})

    def tree_kill_support(self) -> str:
        return tree_kill_words(self.roots)

    def close(self) -> None:
        for root in self.roots.values():
            fs.remove_root(root)


def tree_kill_words(hierarchies) -> str:
    """How a task placed in HIERARCHIES (controller names, "unified") has its tree ended."""
    if "unified" in hierarchies:
        return "tracked and killed via the unified hierarchy (cgroup.kill)"
    if "freezer" in hierarchies:
        return "tracked via the memory cgroup, killed by freeze-and-kill"
    return "tracked via the memory cgroup, killed by repeated SIGKILL"


def enclosing_cpu_quota(directory: str) -> int | None:
    """The CPU quota, in microseconds per CPU_PERIOD_US, of the nearest cgroup at or above
    DIRECTORY that has one (None: none has). cgroup v1 refuses a child's quota over it with EINVAL
    (kernel/sched/core.c, tg_cfs_schedulable_down), where v2 takes the smaller of the two: inside
    a container given one CPU, asking two made every task fail to start, 'out of range'. The
    nearest is the tightest: the kernel refused any ancestor above it a smaller one."""
    while True:
        quota = fs.read_text(os.path.join(directory, "cpu.cfs_quota_us"))
        period = fs.read_text(os.path.join(directory, "cpu.cfs_period_us"))
        if quota is None or period is None:
            return None  # above the hierarchy's mount point, or not a cpu cgroup
        if int(quota) > 0 and int(period) > 0:
            return int(quota) * CPU_PERIOD_US // int(period)
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


class V1TaskGroup(TaskGroup):
    def __init__(self, name: str, dirs: dict[str, str]) -> None:
        self.name = name
        self.dirs = dirs
        self.enforced: dict[str, str] = {}
        # The unified hierarchy sees the whole tree and can kill it atomically; memory is the fallback.
        self._tracking = dirs.get("unified") or dirs["memory"]

    def _file(self, controller: str, name: str) -> str:
        return os.path.join(self.dirs[controller], name)

    def apply(self, limits: Limits) -> None:
        if limits.memory_max_bytes is not None:
            value = str(limits.memory_max_bytes)
            fs.write(self._file("memory", "memory.limit_in_bytes"), value, what="memory limit")
            memsw = self._file("memory", "memory.memsw.limit_in_bytes")
            note = "; swap not limited (no memory.memsw.limit_in_bytes: swap accounting is off)"
            if os.path.exists(memsw):
                # Equal to the memory limit: the task may not escape its limit into swap.
                fs.write(memsw, value, what="memory+swap limit")
                note = " and memory.memsw.limit_in_bytes"
            self.enforced["memory"] = f"cgroup v1 memory.limit_in_bytes={value}{note}"
        if limits.memory_high_bytes is not None:
            self.enforced["memory_high"] = "not available on cgroup v1 (no throttle point); the hard limit applies"
        if limits.pids_max is not None:
            if "pids" in self.dirs:
                fs.write(self._file("pids", "pids.max"), str(limits.pids_max), what="pids limit")
                self.enforced["pids"] = f"cgroup v1 pids.max={limits.pids_max}"
            else:
                self.enforced["pids"] = "not enforced: no writable pids hierarchy"
        if limits.cpu_max is not None:
            if "cpu" in self.dirs:
                quota = int(limits.cpu_max * CPU_PERIOD_US)
                ceiling = enclosing_cpu_quota(os.path.dirname(self.dirs["cpu"]))
                note = ""
                if ceiling is not None and quota > ceiling:
                    note = (f" (asked {limits.cpu_max:g} CPUs; an enclosing cgroup's quota allows "
                            f"{ceiling / CPU_PERIOD_US:g})")
                    quota = ceiling
                fs.write(self._file("cpu", "cpu.cfs_period_us"), str(CPU_PERIOD_US), what="cpu period")
                fs.write(self._file("cpu", "cpu.cfs_quota_us"), str(quota), what="cpu limit")
                self.enforced["cpu"] = f"cgroup v1 cpu.cfs_quota_us={quota} per {CPU_PERIOD_US}{note}"
            else:
                self.enforced["cpu"] = "not enforced: no writable cpu hierarchy"
        self.enforced["tree"] = tree_kill_words(self.dirs)

    def attach(self, pid: int) -> None:
        for path in self.dirs.values():
            fs.write(os.path.join(path, "cgroup.procs"), str(pid), what="attach task")

    def pids(self) -> list[int]:
        return fs.read_subtree_pids(self._tracking)

    def is_empty(self) -> bool:
        populated = fs.is_populated(self.dirs["unified"]) if "unified" in self.dirs else None
        return not self.pids() if populated is None else not populated

    def signal_all(self, sig: int) -> None:
        fs.signal_members(self._tracking, sig)

    def kill_all(self) -> None:
        # cgroup.kill, and the v1 freezer's state, act on the whole subtree, nested cgroups included.
        if "unified" in self.dirs:
            fs.write(os.path.join(self.dirs["unified"], "cgroup.kill"), "1", what="kill task")
            # cgroup.kill signals each thread-group leader alone; one that left by exit(2) while
            # other threads run passes the signal to none of them. kill(2) reaches the group.
            fs.signal_members(self._tracking)
            return
        self._freeze_and_kill()

    def _freeze_and_kill(self) -> None:
        """One round: freeze (a frozen process cannot fork), SIGKILL every member, thaw so the
        signals are delivered. kill_until_empty repeats it while anything is left."""
        freezer = self.dirs.get("freezer")
        if not freezer:
            fs.signal_members(self.dirs["memory"])
            return
        state = os.path.join(freezer, "freezer.state")
        fs.write(state, "FROZEN", what="freeze task")
        try:
            fs.wait_for(lambda: (fs.read_text(state) or "").strip() != "FREEZING", FREEZE_WAIT_S)
            fs.signal_members(self.dirs["memory"])
        finally:
            # Also when the round fails (a read out of descriptors): a v1-frozen process does
            # not die of SIGKILL until thawed, so the task stayed frozen, alive, until a later
            # round got through, and for good once kill_until_empty gave up.
            fs.write(state, "THAWED", what="thaw task")

    def _subtree_count(self, controller: str, filename: str, key: str) -> int:
        """KEY of FILENAME summed over the task's cgroup and every cgroup below it. v1 counts an
        event only in the cgroup where it happened (an OOM kill in the victim's memory cgroup, a
        refused fork in the forking process's pids cgroup), never in its ancestors as v2 does,
        so a task's nested cgroups would hide them."""
        return sum(fs.read_keyed(os.path.join(directory, filename)).get(key, 0)
                   for directory in fs.subtree(self.dirs[controller]))

    def oom_kills(self) -> int:
        return self._subtree_count("memory", "memory.oom_control", "oom_kill")

    def memory_limit_reached(self) -> bool | None:
        """Whether the task's usage ever came within one charge of its limit (memory, or memory
        plus swap: both limits are the same). v1 has no "oom" event: memory.oom_control's
        oom_kill counts the victims of any OOM killer (an enclosing cgroup's, the host's), and
        memory.failcnt stayed 0 on an OOM kill at the task's own limit here. A charge is refused
        only when usage plus the charge would pass the limit, and the kernel charges at most a
        PMD-sized huge page at once, so an OOM at the task's own limit leaves the watermark
        (max_usage_in_bytes) within that of the limit; a task killed for an enclosing cgroup's
        limit, well below its own, does not. Without a limit it cannot have been the cause."""
        limit = fs.read_int(self._file("memory", "memory.limit_in_bytes"))
        peaks = [fs.read_int(self._file("memory", name))
                 for name in ("memory.max_usage_in_bytes", "memory.memsw.max_usage_in_bytes")]
        peaks = [p for p in peaks if p is not None]
        if limit is None or not peaks:
            return None
        if limit >= V1_NO_LIMIT:
            return False
        return max(peaks) > limit - largest_charge()

    def memory_current(self) -> int | None:
        return fs.read_int(self._file("memory", "memory.usage_in_bytes"))

    def pids_limit_hits(self) -> int:
        if "pids" not in self.dirs:
            return 0
        return self._subtree_count("pids", "pids.events", "max")

    def memory_peak(self) -> int | None:
        return fs.read_int(self._file("memory", "memory.max_usage_in_bytes"))

    def remove(self) -> None:
        """Remove the task's directory in every hierarchy (cgroups it made below first), trying
        each even when one fails, so one busy hierarchy does not leave the others behind."""
        errors = []
        for path in self.dirs.values():
            try:
                fs.remove_tree(path)
            except SandboxError as exc:
                errors.append(str(exc))
        if errors:
            raise SandboxError("; ".join(errors))
