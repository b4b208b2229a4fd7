"""The sandbox's Python API: open once, start confined children, get exact outcomes."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence

from .cgroup_v1 import CgroupV1Driver
from .cgroup_v2 import CgroupV2Driver
from .detect import detect_mode, is_root_cgroup, read_hierarchies, v2_hierarchy
from .driver import TASK_PREFIX, Driver, TaskGroup
from .errors import SandboxError
from .limits import Limits
from .no_cgroup import WATCHDOG_INTERVAL_S, NoCgroupDriver
from .outcome import Outcome, classify
from .spawn import (
    lower_own_oom_score,
    prepare_child,
    release,
    resolve_command,
    spawn_held,
)

log = logging.getLogger("sandbox")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# Limits is frozen, so one shared "no limits" default is safe.
_NO_LIMITS = Limits()
# How long close() waits for the reapers of tasks whose main process has already exited.
CLOSE_WAIT_S = 5.0


class Sandbox:
    """One per master process: owns a root cgroup below the caller's own cgroup.

    One root per master: `sweep()` kills everything under it, so two live masters must
    never share a root name.
    """

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self._started: weakref.WeakSet[ConfinedProcess] = weakref.WeakSet()
        self.mode = driver.mode
        self.master_oom_protected = lower_own_oom_score()
        if not self.master_oom_protected:
            log.debug("cannot lower the master's oom_score_adj (no CAP_SYS_RESOURCE); children are confined instead")

    @classmethod
    def open(cls, root_name: str = "datahub-sandbox", *, mode: str = "auto", root_path: str | None = None) -> Sandbox:
        """Detect the mode (or force one: "cgroup-v2", "cgroup-v1", "none") and create the root.

        root_path: for cgroup v2, the delegated cgroup directory to work under instead of our own.
        """
        if not _NAME.match(root_name):
            raise SandboxError(f"invalid sandbox root name {root_name!r}: use letters, digits, '.', '_' and '-'")
        hierarchies = read_hierarchies()
        chosen = detect_mode(hierarchies) if mode == "auto" else mode
        if chosen == "cgroup-v2":
            if root_path is not None:
                return cls(CgroupV2Driver(root_path, root_name))
            unified = v2_hierarchy(hierarchies)
            if unified is None:
                raise SandboxError("cgroup v2 requested but no cgroup2 filesystem is mounted")
            return cls(CgroupV2Driver(unified.own_dir, root_name, is_hierarchy_root=is_root_cgroup(unified.own_dir)))
        if chosen == "cgroup-v1":
            return cls(CgroupV1Driver(hierarchies, root_name))
        if chosen == "none":
            return cls(NoCgroupDriver())
        raise SandboxError(f"unknown sandbox mode {mode!r}: use auto, cgroup-v2, cgroup-v1 or none")

    def sweep(self) -> list[str]:
        """Kill and remove the task cgroups a crashed master left under this root."""
        swept = []
        for name in self.driver.leftover_names():
            group = self.driver.open_existing(name)
            group.kill_all()
            group.remove()
            swept.append(name)
            log.warning("swept leftover task cgroup %s", name)
        return swept

    def start(
        self,
        argv: Sequence[str],
        limits: Limits = _NO_LIMITS,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin=None,
        stdout=None,
        stderr=None,
    ) -> ConfinedProcess:
        limits.validate()
        resolve_command(argv, env, cwd)
        task_name = TASK_PREFIX + (name or uuid.uuid4().hex[:12])
        if not _NAME.match(task_name):
            raise SandboxError(f"invalid task name {name!r}: use letters, digits, '.', '_' and '-'")
        group = self.driver.create(task_name, limits)
        try:
            popen, release_fd = spawn_held(argv, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr)
        except BaseException:
            group.remove()
            raise
        try:
            group.attach(popen.pid)
            prepare_child(popen.pid, limits.address_space_bytes)
        except BaseException:
            os.close(release_fd)  # EOF: the wrapper exits without running the command
            popen.kill()
            popen.wait()
            group.kill_all()
            group.remove()
            raise
        enforced = dict(group.enforced)
        if limits.address_space_bytes is not None:
            enforced["address_space"] = f"RLIMIT_AS={limits.address_space_bytes}"
        if limits.timeout_s is not None:
            enforced["timeout"] = f"{limits.timeout_s}s, then the whole tree is killed"
        started = time.monotonic()
        release(release_fd)
        process = ConfinedProcess(popen, group, limits, self.mode, enforced, started)
        self._started.add(process)
        return process

    def close(self) -> None:
        """Remove the root once no task is left in it.

        A task whose main process has exited may still be in its reaper (killing what is left of
        its tree, removing its cgroups); wait for those, or the root would still be busy. Tasks
        that are still running keep the root; the next start-up's sweep clears it.
        """
        deadline = time.monotonic() + CLOSE_WAIT_S
        for process in list(self._started):
            if process._popen.returncode is not None:
                process._done.wait(max(0.0, deadline - time.monotonic()))
        self.driver.close()


class ConfinedProcess:
    """A running task. A reaper thread waits for it, enforces the timeout (and, in mode none,
    the memory watchdog), kills what is left of the tree when the main process exits, reads
    the counters and removes the cgroup, in that order, then publishes the outcome."""

    def __init__(
        self, popen: subprocess.Popen, group: TaskGroup, limits: Limits, mode: str, enforced: dict[str, str], started: float
    ) -> None:
        self._popen = popen
        self._group = group
        self._limits = limits
        self._mode = mode
        self._enforced = enforced
        self._started = started
        self._killed_by: str | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._outcome: Outcome | None = None
        self.pid = popen.pid
        self.name = group.name
        self.stdin, self.stdout, self.stderr = popen.stdin, popen.stdout, popen.stderr
        self._reaper = threading.Thread(target=self._reap, name=f"sandbox-reaper-{self.name}", daemon=True)
        self._reaper.start()

    def _mark_killed(self, by: str) -> bool:
        with self._lock:
            if self._killed_by is not None or self._done.is_set():
                return False
            self._killed_by = by
            return True

    def _reap(self) -> None:
        deadline = self._started + self._limits.timeout_s if self._limits.timeout_s else None
        watchdog = self._group.needs_watchdog()
        while True:
            step = None
            if watchdog:
                step = WATCHDOG_INTERVAL_S
            if deadline is not None:
                remaining = max(deadline - time.monotonic(), 0.0)
                step = remaining if step is None else min(step, remaining)
            try:
                returncode = self._popen.wait(timeout=step)
                break
            except subprocess.TimeoutExpired:
                pass
            if deadline is not None and time.monotonic() >= deadline and self._mark_killed("timeout"):
                self._group.kill_all()
            if watchdog and self._limits.memory_max_bytes is not None:
                used = self._group.memory_current() or 0
                if used > self._limits.memory_max_bytes and self._mark_killed("memory-watchdog"):
                    self._group.kill_all()
        # Nothing of a task outlives it: kill what is left of the tree before reporting.
        if self._group.pids():
            self._group.kill_all()
        oom_kills = self._group.oom_kills()
        peak = self._group.memory_peak()
        pids_limit_hits = self._group.pids_limit_hits()
        try:
            self._group.remove()
        except SandboxError as exc:
            log.error("%s", exc)
        with self._lock:
            killed_by = self._killed_by
            self._outcome = Outcome(
                status=classify(returncode=returncode, oom_kills=oom_kills, killed_by=killed_by),
                exit_code=returncode if returncode >= 0 else None,
                signal=-returncode if returncode < 0 else None,
                oom_kills=oom_kills,
                peak_memory_bytes=peak,
                duration_s=time.monotonic() - self._started,
                mode=self._mode,
                limits_enforced=self._enforced,
                killed_by=killed_by,
                pids_limit_hits=pids_limit_hits,
            )
            self._done.set()

    def poll(self) -> Outcome | None:
        return self._outcome if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> Outcome:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self._popen.args, timeout or 0)
        assert self._outcome is not None
        return self._outcome

    def kill(self) -> None:
        """SIGKILL the whole tree; returns at once (the outcome says KILLED)."""
        if self._mark_killed("kill()"):
            self._group.kill_all()

    def terminate(self, grace_s: float = 10.0) -> None:
        """SIGTERM every process of the task, SIGKILL what is left after GRACE_S."""
        if not self._mark_killed("terminate()"):
            return
        self._group.signal_all(signal.SIGTERM)

        def escalate() -> None:
            if not self._done.wait(grace_s):
                self._group.kill_all()

        threading.Thread(target=escalate, name=f"sandbox-grace-{self.name}", daemon=True).start()

    def memory_current(self) -> int | None:
        return None if self._done.is_set() else self._group.memory_current()

    def process_count(self) -> int:
        """Live processes of the task (its whole tree), 0 once it has ended."""
        return 0 if self._done.is_set() else len(self._group.pids())

    def memory_peak(self) -> int | None:
        if self._outcome is not None:
            return self._outcome.peak_memory_bytes
        return self._group.memory_peak()
