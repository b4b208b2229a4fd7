"""The sandbox's Python API: open once, start confined children from any thread, get exact outcomes."""
from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence

from . import driver as _driver
from . import isolation, privileges
from .backoff import Backoff
from .cgroup_v1 import CgroupV1Driver
from .cgroup_v2 import CgroupV2Driver
from .confined import ConfinedProcess
from .detect import detect_mode, is_root_cgroup, read_hierarchies, v2_hierarchy
from .driver import TASK_PREFIX, Driver
from .errors import SandboxError
from .launch import Launch, dispose, fork_held, what_private_tmp_must_keep
from .limits import Limits
from .no_cgroup import NoCgroupDriver
from .spawn import (
    address_space_kib,
    await_ready,
    check_address_space,
    check_command_input,
    current_umask,
    lower_own_oom_score,
    prepare_child,
    release,
    resolve_command,
)
from .spawner import Spawner
from .task_user import TaskUser

log = logging.getLogger("sandbox")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# Limits is frozen, so one shared "no limits" default is safe.
_NO_LIMITS = Limits()
# How long close() waits for the reapers of tasks whose main process has already exited.
CLOSE_WAIT_S = 5.0


class Sandbox:
    """One per master process: owns a root cgroup below the caller's own cgroup, and the
    thread that forks every task (spawner.py).

    One root per master: `sweep()` kills everything under it, so two live masters must
    never share a root name.
    """

    def __init__(self, driver: Driver, label: str = "sandbox") -> None:
        self.driver = driver
        self.mode = driver.mode
        self._lock = threading.Lock()
        self._started: weakref.WeakSet[ConfinedProcess] = weakref.WeakSet()
        self._running_names: set[str] = set()
        self._capabilities = privileges.effective_capabilities()
        self.master_oom_protected = lower_own_oom_score()
        if not self.master_oom_protected:
            log.debug("cannot lower the master's oom_score_adj (no CAP_SYS_RESOURCE); children are confined instead")
        self._spawner = Spawner(label)

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
                return cls(CgroupV2Driver(root_path, root_name), root_name)
            unified = v2_hierarchy(hierarchies)
            if unified is None:
                raise SandboxError("cgroup v2 requested but no cgroup2 filesystem is mounted")
            return cls(CgroupV2Driver(unified.own_dir, root_name, is_hierarchy_root=is_root_cgroup(unified.own_dir)),
                       root_name)
        if chosen == "cgroup-v1":
            return cls(CgroupV1Driver(hierarchies, root_name), root_name)
        if chosen == "none":
            return cls(NoCgroupDriver(), root_name)
        raise SandboxError(f"unknown sandbox mode {mode!r}: use auto, cgroup-v2, cgroup-v1 or none")

    def sweep(self) -> list[str]:
        """Kill and remove the task cgroups a crashed master left under this root.

        One that cannot be cleared (processes stuck in the kernel, a cgroup that will not go) is
        logged once and kept for the next sweep; the others are still swept."""
        swept = []
        for name in self.driver.leftover_names():
            group = self.driver.open_existing(name)
            try:
                left = group.kill_until_empty(Backoff(_driver.KILL_BUDGET_S))
            except OSError as exc:
                log.error("leftover task cgroup %s: its processes cannot be read (%s); kept for the next sweep",
                          name, exc.strerror or exc)
                continue
            if left:
                log.error("leftover task cgroup %s: pids %s would not die (stuck in the kernel); kept for the "
                          "next sweep", name, " ".join(map(str, left)))
                continue
            try:
                group.remove()
            except SandboxError as exc:
                log.error("leftover task cgroup %s: emptied but not removed (%s); kept for the next sweep", name, exc)
                continue
            swept.append(name)
            log.warning("swept leftover task cgroup %s", name)
        return swept

    def isolation_support(self) -> dict[str, str]:
        """What this process can give its tasks (task user, private tmp, parent-death signal)
        and how a task's whole tree is ended here (tree_kill), in words, before any task runs:
        for `check` and start-up logs."""
        return {**isolation.support(os.geteuid(), self._spawner.namespaces_unavailable),
                "tree_kill": self.driver.tree_kill_support()}

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
        user: TaskUser | None = None,
        private_tmp: bool = False,
    ) -> ConfinedProcess:
        """Start ARGV confined and return once it runs; callable from any thread, concurrently.

        user: run the task as this unprivileged uid:gid, with no supplementary groups,
        no_new_privs and no capabilities (SandboxError where this process cannot switch users).
        private_tmp: give the task a private mount namespace with fresh tmpfs on /tmp, /var/tmp
        and /dev/shm and the cgroup filesystem read-only; where no namespace can be made, the
        task runs without and `isolation["private_tmp"]` says why.
        """
        self._spawner.refuse_if_closed()
        limits.validate()
        if user is not None:
            user.validate()
            self._check_can_switch_users(user)
        check_address_space(limits.address_space_bytes, user, self._capabilities)
        check_command_input(argv, env, cwd)
        # Always an explicit cwd and umask: the spawner thread's own are not the master's.
        workdir = os.path.abspath(cwd) if cwd is not None else os.getcwd()
        command = resolve_command(argv, env, workdir)
        keep_read_only = what_private_tmp_must_keep(workdir, command) if private_tmp else None
        task_name = TASK_PREFIX + (name or uuid.uuid4().hex[:12])
        if not _NAME.match(task_name):
            raise SandboxError(f"invalid task name {name!r}: use letters, digits, '.', '_' and '-'")
        with self._lock:
            if task_name in self._running_names:
                raise SandboxError(f"a task named {name!r} is already running in this sandbox: task names must be unique")
            self._running_names.add(task_name)
        launch = Launch(argv, env, workdir, current_umask(), stdin, stdout, stderr, user,
                        limits.address_space_bytes, private_tmp, keep_read_only)
        try:
            return self._start(task_name, limits, launch)
        except BaseException:
            self._release_name(task_name)
            raise

    def _start(self, task_name: str, limits: Limits, launch: Launch) -> ConfinedProcess:
        group = self.driver.create(task_name, limits)
        try:
            spawned = self._spawner.run(lambda spawner: fork_held(spawner, launch),
                                        dispose=lambda spawned: dispose(self._spawner, spawned))
        except BaseException:
            group.remove()
            raise

        def on_finished() -> None:
            self._spawner.reaped(spawned.popen.pid)
            self._release_name(task_name)

        # Held: whatever fails here, the command never runs.
        try:
            # Attached first, as soon as it is forked: the less time the wrapper spends outside its
            # cgroups once it runs as the task user, the better. A wrapper that ended before it was
            # ready (its attach then fails) is reported as such.
            try:
                group.attach(spawned.popen.pid)
            except SandboxError:
                await_ready(spawned.popen, spawned.ready, task_name)
                raise
            await_ready(spawned.popen, spawned.ready, task_name)
            prepare_child(spawned.popen.pid)
            enforced = dict(group.enforced)
            if limits.address_space_bytes is not None:
                enforced["address_space"] = f"RLIMIT_AS={address_space_kib(limits.address_space_bytes) * 1024}"
            if limits.timeout_s is not None:
                enforced["timeout"] = f"{limits.timeout_s}s, then the whole tree is killed"
            described = isolation.describe(launch.user, spawned.private_tmp, os.geteuid(),
                                           namespace_made=spawned.namespace_made)
            process = ConfinedProcess(spawned.popen, group, limits, self.mode, enforced, described, on_finished)
        except BaseException as exc:
            dispose(self._spawner, spawned)
            group.kill_until_empty(Backoff(_driver.KILL_BUDGET_S))
            group.remove()
            if isinstance(exc, OSError):
                raise SandboxError(f"cannot start task {task_name}: {exc}") from exc
            raise
        # Released: the command runs, so a failure from here on must end it, not leave it unwatched.
        try:
            release(spawned.release_fd)
            process.start_reaper()
        except Exception as exc:
            process.abandon()
            raise SandboxError(f"task {task_name} was started but cannot be watched ({exc}); it was killed") from exc
        except BaseException:
            process.abandon()
            raise
        with self._lock:
            self._started.add(process)
        return process

    def _release_name(self, task_name: str) -> None:
        with self._lock:
            self._running_names.discard(task_name)

    def _check_can_switch_users(self, user: TaskUser) -> None:
        missing = privileges.missing(privileges.SWITCH_USER, self._capabilities)
        if missing:
            raise SandboxError(f"cannot run tasks as user {user}: this process (uid {os.geteuid()}) lacks "
                               f"{', '.join(missing)}; run the sandbox as root, or start tasks without a user")

    def close(self) -> None:
        """Remove the root once no task is left in it, and end the spawner thread.

        A task whose main process has exited may still be in its reaper (killing what is left of
        its tree, removing its cgroups); wait for those, or the root would still be busy. Tasks
        that are still running keep the root (the next start-up's sweep clears it) and keep the
        spawner thread, whose exit would SIGKILL them.
        """
        deadline = time.monotonic() + CLOSE_WAIT_S
        with self._lock:
            started = list(self._started)
        for process in started:
            if process._popen.returncode is not None:
                process._done.wait(max(0.0, deadline - time.monotonic()))
        self.driver.close()
        self._spawner.close()

    @property
    def spawner_thread(self) -> threading.Thread:
        """The thread that forks every task (and whose exit would SIGKILL them)."""
        return self._spawner.thread

