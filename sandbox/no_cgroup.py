"""Mode none: no writable cgroup filesystem (a default Docker container, for one).

Still useful, never silent about it: memory is limited by an RSS watchdog over the task's
process tree (best effort: a fast allocation can overshoot between two samples) and, where
asked, RLIMIT_AS; the tree is the main process's session plus every descendant seen so far by
the scan the reaper runs every WATCHDOG_INTERVAL_S (with or without a memory limit) and once
more as the main process exits, before it is reaped; so a process that calls setsid() *and*
double-forks between two scans can escape. Each of these weaknesses is written into
`limits_enforced`.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import psutil

from .driver import Driver, TaskGroup
from .limits import Limits

WATCHDOG_INTERVAL_S = 0.1
TREE_KILL_WORDS = "best effort: session and descendants seen by the watchdog (mode none)"
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class NoCgroupDriver(Driver):
    mode = "none"

    def create(self, name: str, limits: Limits) -> TaskGroup:
        return SessionGroup(name, limits)

    def leftover_names(self) -> list[str]:
        return []  # nothing persists without cgroups; the parent-death signal is the only guard

    def open_existing(self, name: str) -> TaskGroup:
        raise LookupError(name)

    def tree_kill_support(self) -> str:
        return TREE_KILL_WORDS

    def close(self) -> None:
        pass


class SessionGroup(TaskGroup):
    """The task's processes, found by scanning: the main process's session and descendants.

    Pid reuse, once the main process has been reaped (the reaper's last scans run after that):
    - the main pid counts only while the main process is unreaped, which a pidfd opened while
      it was held says exactly (a creation time, in 10 ms clock ticks, cannot tell it from a
      process that reused its pid within the same tick); other known pids count while they
      have the creation time recorded for them;
    - the session id is the main process's pid. The kernel frees that number only when no
      process is left in the session, so a session with that id is the task's until the main
      process is reaped, and afterwards it may be an unrelated one, all of whose processes
      started after the reaping. A process of that session therefore counts only if it started
      before the last moment the main process was seen unreaped (in whole clock ticks, the
      resolution of /proc's start times, so a process of that same tick is left out too).
    Each scan gathers first and asks whether the main process is unreaped after: if it still is,
    nothing gathered can belong to a process that reused its pid.
    """

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self._main: int | None = None
        self._main_start_ticks: int | None = None
        self._main_pidfd: int | None = None
        # Boot-time clock ticks at which the main process was last seen unreaped (None: not yet).
        self._main_unreaped_at: int | None = None
        self._known: dict[int, float] = {}  # pid -> create_time, so a recycled pid is never signalled
        self._peak = 0
        # The reaper's watchdog scans while other threads ask for process_count() or
        # memory_current(): two scans that both saw a pid die would both delete it from
        # _known (KeyError in the reaper, which then never published an outcome). One scan
        # at a time; a scan takes a few milliseconds.
        self._lock = threading.Lock()
        self.enforced: dict[str, str] = {}
        if limits.memory_max_bytes is not None:
            self.enforced["memory"] = (
                f"best effort: RSS watchdog every {WATCHDOG_INTERVAL_S}s over the process tree, "
                f"limit {limits.memory_max_bytes} (mode none: no cgroup)"
            )
        if limits.memory_high_bytes is not None:
            self.enforced["memory_high"] = "not enforced (mode none)"
        if limits.pids_max is not None:
            self.enforced["pids"] = "not enforced (mode none)"
        if limits.cpu_max is not None:
            self.enforced["cpu"] = "not enforced (mode none)"
        self.enforced["tree"] = TREE_KILL_WORDS

    def needs_watchdog(self) -> bool:
        return True

    def main_exited(self) -> None:
        """One scan while the main process is a zombie: the children it forked since the last
        scan (up to WATCHDOG_INTERVAL_S before its exit) are found in its session and remembered.
        Once it is reaped they are reparented and its session id may be anyone's: a shell's
        `sleep 30 & exit 0` left `sleep` running, unseen, after the task had ended."""
        self._scan()

    def attach(self, pid: int) -> None:
        with self._lock:
            self._main = pid
            now = _boot_ticks()
            self._main_start_ticks = _start_ticks(pid)
            try:
                self._main_pidfd = os.pidfd_open(pid)  # held, so certainly the main process
            except (AttributeError, OSError):
                self._main_pidfd = None
            if self._main_start_ticks is not None:
                self._main_unreaped_at = now  # held by the sandbox, not even released yet

    def _main_unreaped(self) -> bool:
        """Whether the main process is still there, alive or a zombie, so that its pid (and its
        session id) cannot have been reused."""
        if self._main_pidfd is not None:
            try:
                signal.pidfd_send_signal(self._main_pidfd, 0)
                return True
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return self._main_start_ticks is not None and _start_ticks(self._main) == self._main_start_ticks

    def _remember(self, proc: psutil.Process) -> None:
        """PROC's creation time, as the process the scan found: looked up again by pid, a task
        process that ended meanwhile would leave whichever process took its pid known as the
        task's, and killed with it. psutil reads create_time() only when first asked, so it is
        read and then checked against the identity psutil took when the scan made PROC
        (is_running(): false once the pid names another process); the creation time of a pid
        taken over in between had been remembered as the task's (a CI flake showed it)."""
        try:
            created = proc.create_time()
            if proc.is_running():
                self._known[proc.pid] = created
        except psutil.Error:
            pass

    def _scan(self) -> list[psutil.Process]:
        with self._lock:
            return self._scan_locked()

    def _scan_locked(self) -> list[psutil.Process]:
        procs: dict[int, psutil.Process] = {}
        if self._main is not None:
            session = []
            for proc in psutil.process_iter():
                try:
                    if os.getsid(proc.pid) == self._main:
                        session.append(proc)
                except OSError:
                    continue
            main_tree = []
            try:
                main = psutil.Process(self._main)
                main_tree = [main, *main.children(recursive=True)]
            except psutil.Error:
                pass
            # After the search, so that "unreaped now" also covers every process it found.
            seen_at = _boot_ticks()
            if self._main_unreaped():
                self._main_unreaped_at = seen_at
                procs.update((p.pid, p) for p in session + main_tree)
            elif self._main_unreaped_at is not None:
                procs.update((p.pid, p) for p in session if (_start_ticks(p.pid) or seen_at) < self._main_unreaped_at)
        for pid, created in list(self._known.items()):
            try:
                proc = psutil.Process(pid)
                if proc.create_time() != created:
                    del self._known[pid]  # the process we knew is gone; its pid belongs to another
                    continue
                procs[pid] = proc
                for child in proc.children(recursive=True):
                    procs[child.pid] = child
            except psutil.Error:
                del self._known[pid]
        for pid, proc in procs.items():
            if pid not in self._known and pid != self._main:
                self._remember(proc)
        return [p for p in procs.values() if _alive(p)]

    def pids(self) -> list[int]:
        return [p.pid for p in self._scan()]

    def signal_all(self, sig: int) -> None:
        for proc in self._scan():
            _signal_pinned(proc, sig)

    def kill_all(self) -> None:
        self.signal_all(signal.SIGKILL)

    def oom_kills(self) -> int:
        return 0

    def memory_current(self) -> int | None:
        total = 0
        for proc in self._scan():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        with self._lock:
            self._peak = max(self._peak, total)
        return total

    def memory_peak(self) -> int | None:
        return self._peak or None

    def remove(self) -> None:
        with self._lock:
            if self._main_pidfd is not None:
                os.close(self._main_pidfd)
                self._main_pidfd = None
            self._main_start_ticks = None  # from now on the main pid is never the task's


def _boot_ticks() -> int:
    """Now, in the clock ticks since boot that /proc/PID/stat gives start times in."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS_PER_S)


def _start_ticks(pid: int) -> int | None:
    """When PID started, in clock ticks since boot; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _signal_pinned(proc: psutil.Process, sig: int) -> None:
    """Signal PROC, found by a scan, only while its pid still names it. psutil checks the
    creation time and then kill(2)s the pid by number: a process reaped in between passed the
    signal to whoever took its number (pid_max is 32768 on many hosts). The pid is pinned with a
    pidfd first and the creation time checked after, so the check and the signal are about one
    process. Where there is no pidfd (Linux before 5.3), psutil's own check and kill."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass
        return
    try:
        if proc.is_running():  # the pinned process is the one the scan found (same creation time)
            signal.pidfd_send_signal(pidfd, sig)
    except (ProcessLookupError, PermissionError, psutil.Error):
        pass
    finally:
        os.close(pidfd)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
