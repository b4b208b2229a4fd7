"""cgroup v2 (unified) driver, following the kernel's documented delegation model.

Layout below the cgroup we own (our own cgroup under systemd Delegate=yes, a container's
cgroup namespace root, or a configured path):

    <own>/supervisor/        the master itself (only when it had to move, see below)
    <own>/<root>/task-<id>/  one leaf per task, with memory/pids/cpu limits

A process that starts in <own>/supervisor (moved there by an earlier open, or started there by
systemd's DelegateSubgroup=supervisor) takes <own> as its own, not the leaf (delegated_own).

The "no internal processes" rule: controllers can be enabled in <own>/cgroup.subtree_control
only while <own> itself holds no process. So the master first moves every process of <own>
into the `supervisor` leaf, then enables +memory +pids +cpu. EBUSY from that write means a
process is still in <own> (typically one started concurrently by someone else).

Ending a task's whole tree takes what the kernel offers, probed once at open on our root (a
non-root cgroup: the hierarchy's root has neither file):
- cgroup.kill (Linux 5.14+): one write SIGKILLs the subtree, atomically, forks in flight included;
- cgroup.freeze (5.2+; Ubuntu 20.04's 5.4, Amazon Linux 2's 5.10): freeze, SIGKILL every member,
  thaw, repeated until empty;
- neither (RHEL/Rocky 8's 4.18, Debian 10's 4.19): SIGKILL sweeps of cgroup.procs, repeated
  until empty.
Writing a file the kernel does not have fails (EACCES: cgroupfs refuses to create files), so
the fallback must be chosen, not stumbled into.
"""
from __future__ import annotations

import errno
import os

from . import cgroupfs as fs
from .driver import TASK_PREFIX, Driver, TaskGroup
from .errors import SandboxError
from .limits import Limits

CPU_PERIOD_US = 100_000
# A freeze normally completes in microseconds; a process stuck in the kernel can hold it back,
# and then we kill what is frozen and let kill_until_empty retry.
FREEZE_WAIT_S = 1.0
# Back-to-back sweeps in one kill round, before kill_until_empty's pause and next round.
SWEEPS_PER_ROUND = 100

# The ways to end a task's tree, best first.
KILL = "cgroup.kill"
FREEZE = "cgroup.freeze"
SWEEP = "sweep"
TREE_KILL_WORDS = {
    KILL: "tracked and killed by cgroup (cgroup.kill)",
    FREEZE: "tracked by cgroup, killed by freeze-and-kill (cgroup.freeze, SIGKILL each member, thaw, "
            "repeated until empty): this kernel has no cgroup.kill (Linux 5.14+)",
    SWEEP: "tracked by cgroup, killed by SIGKILL sweeps of cgroup.procs repeated until empty: "
           "this kernel has neither cgroup.kill (Linux 5.14+) nor cgroup.freeze (Linux 5.2+)",
}
WANTED = ("memory", "pids", "cpu")
SUPERVISOR_LEAF = "supervisor"


def delegated_own(own_dir: str) -> str:
    """The cgroup whose subtree is ours: OWN_DIR, or its parent when OWN_DIR is the supervisor
    leaf that an earlier open (this process's, or its parent's: a shell that ran the sandbox CLI
    before) or systemd's DelegateSubgroup=supervisor put us in, below a parent whose children
    already have the memory controller. Taken as our own, the leaf had every process in it moved
    into supervisor/supervisor, one level deeper at each open, and a sweep looked for a crashed
    run's root one level below where that run had made it."""
    if os.path.basename(os.path.normpath(own_dir)) != SUPERVISOR_LEAF:
        return own_dir
    parent = os.path.dirname(os.path.normpath(own_dir))
    enabled = (fs.read_text(os.path.join(parent, "cgroup.subtree_control")) or "").split()
    if "memory" in enabled and os.access(os.path.join(parent, "cgroup.procs"), os.W_OK):
        return parent
    return own_dir


class CgroupV2Driver(Driver):
    mode = "cgroup-v2"

    def __init__(self, own_dir: str, root_name: str, *, is_hierarchy_root: bool = False) -> None:
        self.own_dir = own_dir = delegated_own(own_dir)
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
        self.tree_kill = tree_kill_method(self.root)

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
        group = V2TaskGroup(name, os.path.join(self.root, name), self.tree_kill)
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
        return V2TaskGroup(name, os.path.join(self.root, name), self.tree_kill)

    def tree_kill_support(self) -> str:
        return TREE_KILL_WORDS[self.tree_kill]

    def close(self) -> None:
        fs.remove_root(self.root)


def tree_kill_method(cgroup: str) -> str:
    """KILL, FREEZE or SWEEP: the best way this kernel offers to end a tree, read from the
    non-root CGROUP's interface files."""
    for method in (KILL, FREEZE):
        if os.path.exists(os.path.join(cgroup, method)):
            return method
    return SWEEP


class V2TaskGroup(TaskGroup):
    def __init__(self, name: str, path: str, tree_kill: str) -> None:
        self.name = name
        self.dir = path
        self.tree_kill = tree_kill
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
                swap = "swap 0"
            else:
                # No swap accounting (CONFIG_MEMCG_SWAP off, swapaccount=0): swap is charged to no
                # cgroup, so the task may swap out past memory.max, and the limits must not say
                # "swap 0".
                swap = "swap not limited (no memory.swap.max: swap accounting is off)"
            # Kill the whole task on OOM, not one arbitrary process of it: a half-killed
            # ingestion pipeline would hang or report nonsense. memory.oom.group came in 4.19:
            # on 4.18 (RHEL/Rocky 8) cgroupfs cannot create it (EACCES), and writing it anyway
            # failed every start with a memory limit. There the OOM killer ends one process, as
            # on cgroup v1, and the task's end kills the rest of its tree.
            if os.path.exists(self._file("memory.oom.group")):
                fs.write(self._file("memory.oom.group"), "1", what="group OOM kill")
                group_kill = "oom.group"
            else:
                group_kill = "no oom.group (kernel before 4.19): the OOM killer ends one process"
            self.enforced["memory"] = (f"cgroup v2 memory.max={limits.memory_max_bytes} memory.high={high} {swap} "
                                       f"{group_kill}")
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
        self.enforced["tree"] = TREE_KILL_WORDS[self.tree_kill]

    def attach(self, pid: int) -> None:
        fs.write(self._file("cgroup.procs"), str(pid), what="attach task")

    def pids(self) -> list[int]:
        return fs.read_subtree_pids(self.dir)

    def is_empty(self) -> bool:
        populated = fs.is_populated(self.dir)
        return not self.pids() if populated is None else not populated

    def signal_all(self, sig: int) -> None:
        fs.signal_members(self.dir, sig)

    def kill_all(self) -> None:
        # cgroup.kill, cgroup.freeze and the sweeps' reads act on the whole subtree, nested cgroups included.
        if self.tree_kill == KILL:
            fs.write(self._file("cgroup.kill"), "1", what="kill task")
            # cgroup.kill signals each thread-group leader alone; one that left by exit(2) while
            # other threads run passes the signal to none of them. kill(2) reaches the group.
            fs.signal_members(self.dir)
        elif self.tree_kill == FREEZE:
            self._freeze_and_kill()
        else:
            self._sweep()

    def _freeze_and_kill(self) -> None:
        """One round: freeze (a frozen process cannot fork), SIGKILL every member (a fatal signal
        ends a frozen process: cgroup-v2.rst), thaw, so that nothing the round missed is left
        frozen. A child whose fork was under way at the read of cgroup.procs is frozen too and
        is killed by the next round (kill_until_empty repeats while the cgroup is populated)."""
        freeze = self._file("cgroup.freeze")
        fs.write(freeze, "1", what="freeze task")
        try:
            fs.wait_for(lambda: fs.read_keyed(self._file("cgroup.events")).get("frozen") == 1, FREEZE_WAIT_S)
            fs.signal_members(self.dir)
        finally:
            fs.write(freeze, "0", what="thaw task")

    def _sweep(self) -> None:
        """One round without a freezer: SIGKILL every member, and again each member listed since,
        until a read of cgroup.procs lists none not yet killed. A process may fork between the
        read and its SIGKILL; the child is listed by the next read. This converges on a fork
        bomb: pids.max (every task has one, decision 22) bounds how many processes it has at
        once, and a process with SIGKILL pending can no longer fork (the kernel aborts a fork
        when a fatal signal is pending), so each read lists only children whose fork was already
        under way at the one before. SWEEPS_PER_ROUND bounds a round; kill_until_empty repeats
        rounds within its budget while the cgroup is populated."""
        killed: set[int] = set()
        for _ in range(SWEEPS_PER_ROUND):
            fresh = fs.signal_members(self.dir, skip=killed)
            if not fresh:
                return
            killed.update(fresh)

    def oom_kills(self) -> int:
        events = fs.read_keyed(self._file("memory.events"))
        return max(events.get("oom_kill", 0), events.get("oom_group_kill", 0))

    def memory_limit_reached(self) -> bool | None:
        """memory.events "oom": the times this cgroup's limit (or one below it) was reached and
        the OOM killer called on it (cgroup-v2.rst). "oom_kill" and "oom_group_kill" also count
        the victims of an OOM of an enclosing cgroup or of the host; "max" counts every time
        usage met memory.max, reclaim that succeeded included, and means no kill."""
        events = fs.read_keyed(self._file("memory.events"))
        return events["oom"] > 0 if "oom" in events else None

    def memory_current(self) -> int | None:
        return fs.read_int(self._file("memory.current"))

    def pids_limit_hits(self) -> int:
        return fs.read_keyed(self._file("pids.events")).get("max", 0)

    def memory_peak(self) -> int | None:
        return fs.read_int(self._file("memory.peak"))

    def remove(self) -> None:
        fs.remove_tree(self.dir)
