"""What keeps a task away from the executor: the user tasks run as, and the master's own guards.

- Tasks run as an unprivileged user (DATAHUB_EXECUTOR_TASK_USER, default `datahub-task`, which
  systemd/install.sh and the image create; or a uid range, one uid per running task, so tasks
  are kept from each other too: task_users.py), never as the master's uid: such a task cannot write
  any cgroup's cgroup.procs (they belong to root), cannot read the master's /proc files, and its
  files are its own. Where the executor itself is unprivileged (a container, Fargate) it cannot
  switch users; tasks then run as its own uid, and the start-up log and `check` say so.
- The master is not dumpable (PR_SET_DUMPABLE 0): its /proc/<pid>/environ, mem and fd belong to
  root, so even a process of the master's own uid cannot read the token from them.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sandbox import Sandbox, SandboxError, TaskUser
from sandbox.task_user import MAX_ID

from .task_users import MAX_RANGE, TaskUsers

NO_TASK_USER = "none"


class TaskUserError(ValueError):
    """The configured task user cannot be used; the message names the setting and the fix."""


@dataclass(frozen=True)
class TaskIdentity:
    users: TaskUsers
    description: str  # for the start-up log and `check`


UID_RANGE = re.compile(r"(\d+)-(\d+)")


def resolve_task_user(setting: str, sandbox: Sandbox, wants: Mapping[str, int]) -> TaskIdentity:
    """Who tasks run as: a name or UID[:GID] (one user for every task), FIRST-LAST (a uid of its
    own for each running task, task_users.py), or `none` (the executor's own user). WANTS is
    how many tasks of each class run at once at the default weight: a range keeps that many uids
    for each class (or its share of a smaller range)."""
    value = setting.strip()
    if value == NO_TASK_USER:
        return TaskIdentity(TaskUsers.shared(None), f"tasks run as the executor's own user (uid {os.geteuid()}): "
                                                    "DATAHUB_EXECUTOR_TASK_USER=none")
    support = sandbox.isolation_support()["task_user"]
    if not support.startswith("available"):
        return TaskIdentity(TaskUsers.shared(None), f"tasks run as the executor's own user (uid {os.geteuid()}): "
                                                    f"switching to {value} is {support}; the cgroup limits still hold")
    span = UID_RANGE.fullmatch(value)
    if span:
        first, last = int(span.group(1)), int(span.group(2))
        _check_range(first, last, len(wants))
        users = TaskUsers.uid_range(first, last, wants)
        return TaskIdentity(users, f"each task runs as a uid of its own from {first}-{last} (group of the same number; "
                                   f"{users.kept()}), without capabilities or new privileges")
    try:
        if value.replace(":", "").isdigit():
            user = TaskUser.parse(value)
        else:
            entry = pwd.getpwnam(value)
            user = TaskUser(entry.pw_uid, entry.pw_gid)
            user.validate()
    except KeyError:
        raise TaskUserError(f"DATAHUB_EXECUTOR_TASK_USER: user {value!r} does not exist: create it (systemd/install.sh "
                            "and the container image do), name another user, UID:GID or a range FIRST-LAST, or set it "
                            "to 'none' to run tasks as the executor's own user (no uid separation)") from None
    except SandboxError as exc:
        raise TaskUserError(f"DATAHUB_EXECUTOR_TASK_USER: {exc}") from None
    if user.uid == os.geteuid():
        raise TaskUserError(f"DATAHUB_EXECUTOR_TASK_USER: {value} is the executor's own uid; tasks must run as "
                            "another user")
    return TaskIdentity(TaskUsers.shared(user), f"tasks run as uid {user.uid}, gid {user.gid}, without capabilities "
                                                "or new privileges (one user for all tasks)")


def _check_range(first: int, last: int, classes: int) -> None:
    """A range is for tasks alone: a uid or gid some account or group already has would give a
    task that account's files (or that group's), and the executor's own uid would give it the
    executor. It keeps at least one uid for each of the CLASSES task classes (task_users.py)."""
    where = f"DATAHUB_EXECUTOR_TASK_USER={first}-{last}"
    if not 0 < first <= last <= MAX_ID:
        raise TaskUserError(f"{where}: use FIRST-LAST with 0 < FIRST <= LAST <= {MAX_ID}")
    if last - first + 1 > MAX_RANGE:
        raise TaskUserError(f"{where}: at most {MAX_RANGE} uids")
    if first <= os.geteuid() <= last:
        raise TaskUserError(f"{where}: the range holds the executor's own uid {os.geteuid()}")
    for entry in pwd.getpwall():
        if first <= entry.pw_uid <= last:
            raise TaskUserError(f"{where}: uid {entry.pw_uid} belongs to user {entry.pw_name!r}; pick a range no "
                                "account uses")
    for group in grp.getgrall():
        if first <= group.gr_gid <= last:
            raise TaskUserError(f"{where}: gid {group.gr_gid} belongs to group {group.gr_name!r}; pick a range no "
                                "account or group uses")
    if last - first + 1 < classes:
        raise TaskUserError(f"{where}: at least {classes} uids, one kept for each task class, so that a monitor "
                            "never waits for an ingestion run's uid")
