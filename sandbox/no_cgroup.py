"""Mode none: no writable cgroup filesystem (a default Docker container, for one).

Still useful, never silent about it: memory is limited by an RSS watchdog over the task's
process tree (best effort: a fast allocation can overshoot between two samples) and, where
asked, RLIMIT_AS; the tree is the main process's session plus every descendant seen so far by
the scan the reaper runs every WATCHDOG_INTERVAL_S (with or without a memory limit), so a
process that calls setsid() *and* double-forks between two scans can escape. Each of
these weaknesses is written into `limits_enforced`.
"""
from __future__ import annotations

import os
import signal
import threading

import psutil

from .driver import Driver, TaskGroup
from .limits import Limits

WATCHDOG_INTERVAL_S = 0.1


class NoCgroupDriver(Driver):
    mode = "none"

    def create(self, name: str, limits: Limits) -> TaskGroup:
        return SessionGroup(name, limits)

    def leftover_names(self) -> list[str]:
        return []  # nothing persists without cgroups; the parent-death signal is the only guard

    def open_existing(self, name: str) -> TaskGroup:
        raise LookupError(name)

    def close(self) -> None:
        pass


class SessionGroup(TaskGroup):
    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self._main: int | None = None
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
        self.enforced["tree"] = "best effort: session and descendants seen by the watchdog (mode none)"

    def needs_watchdog(self) -> bool:
        return True

    def attach(self, pid: int) -> None:
        with self._lock:
            self._main = pid
            self._remember(pid)

    def _remember(self, pid: int) -> None:
        try:
            self._known[pid] = psutil.Process(pid).create_time()
        except psutil.Error:
            pass

    def _scan(self) -> list[psutil.Process]:
        with self._lock:
            return self._scan_locked()

    def _scan_locked(self) -> list[psutil.Process]:
        procs: dict[int, psutil.Process] = {}
        if self._main is not None:
            try:
                main = psutil.Process(self._main)
                procs[main.pid] = main
                for child in main.children(recursive=True):
                    procs[child.pid] = child
            except psutil.Error:
                pass
            for proc in psutil.process_iter():
                try:
                    if os.getsid(proc.pid) == self._main:
                        procs[proc.pid] = proc
                except OSError:
                    continue
        for pid, created in list(self._known.items()):
            if pid in procs:
                continue
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created:
                    procs[pid] = proc
                    for child in proc.children(recursive=True):
                        procs[child.pid] = child
            except psutil.Error:
                del self._known[pid]
        for pid in procs:
            if pid not in self._known:
                self._remember(pid)
        return [p for p in procs.values() if _alive(p)]

    def pids(self) -> list[int]:
        return [p.pid for p in self._scan()]

    def signal_all(self, sig: int) -> None:
        for proc in self._scan():
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass

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
        pass


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
