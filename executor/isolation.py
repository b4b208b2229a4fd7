"""What keeps a task away from the executor: the user tasks run as, and the master's own guards.

- Tasks run as an unprivileged user (DATAHUB_EXECUTOR_TASK_USER, default `datahub-task`, which
  systemd/install.sh and the image create), never as the master's uid: such a task cannot write
  any cgroup's cgroup.procs (they belong to root), cannot read the master's /proc files, and its
  files are its own. Where the executor itself is unprivileged (a container, Fargate) it cannot
  switch users; tasks then run as its own uid, and the start-up log and `check` say so.
- The master is not dumpable (PR_SET_DUMPABLE 0): its /proc/<pid>/environ, mem and fd belong to
  root, so even a process of the master's own uid cannot read the token from them.
"""
from __future__ import annotations

import ctypes
import os
import pwd
from dataclasses import dataclass

from sandbox import Sandbox, SandboxError, TaskUser

PR_SET_DUMPABLE = 4
NO_TASK_USER = "none"


class TaskUserError(ValueError):
    """The configured task user cannot be used; the message names the setting and the fix."""


@dataclass(frozen=True)
class TaskIdentity:
    user: TaskUser | None
    description: str  # for the start-up log and `check`


def resolve_task_user(setting: str, sandbox: Sandbox) -> TaskIdentity:
    """The user tasks run as: a name or UID[:GID], or `none` (the executor's own user)."""
    value = setting.strip()
    if value == NO_TASK_USER:
        return TaskIdentity(None, f"tasks run as the executor's own user (uid {os.geteuid()}): "
                                  "DATAHUB_EXECUTOR_TASK_USER=none")
    support = sandbox.isolation_support()["task_user"]
    if not support.startswith("available"):
        return TaskIdentity(None, f"tasks run as the executor's own user (uid {os.geteuid()}): switching to "
                                  f"{value} is {support}; the cgroup limits still hold")
    try:
        if value.replace(":", "").isdigit():
            user = TaskUser.parse(value)
        else:
            entry = pwd.getpwnam(value)
            user = TaskUser(entry.pw_uid, entry.pw_gid)
            user.validate()
    except KeyError:
        raise TaskUserError(f"DATAHUB_EXECUTOR_TASK_USER: user {value!r} does not exist: create it (systemd/install.sh "
                            "and the container image do), name another user or UID:GID, or set it to 'none' to run "
                            "tasks as the executor's own user (no uid separation)") from None
    except SandboxError as exc:
        raise TaskUserError(f"DATAHUB_EXECUTOR_TASK_USER: {exc}") from None
    if user.uid == os.geteuid():
        raise TaskUserError(f"DATAHUB_EXECUTOR_TASK_USER: {value} is the executor's own uid; tasks must run as "
                            "another user")
    return TaskIdentity(user, f"tasks run as uid {user.uid}, gid {user.gid}, without capabilities or new privileges")


def make_master_undumpable() -> bool:
    """PR_SET_DUMPABLE 0: nothing but root reads this process's memory, environment or fds."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except OSError:
        return False


def is_dumpable() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(3, 0, 0, 0, 0) == 1  # PR_GET_DUMPABLE
    except OSError:
        return True
