"""What isolation a task really ran with, in words, next to `limits_enforced`.

Said per task (Outcome.isolation, ConfinedProcess.isolation) so the executor can log it, and
per host (`Sandbox.isolation_support()`) so `check` can print what is possible before any task
runs. Each value says what is in force, or what is not and why, so that nobody has to guess
whether a task could have left its cgroups.
"""
from __future__ import annotations

from . import privileges
from .spawn import SETPRIV
from .task_user import TaskUser


def describe(user: TaskUser | None, private_tmp: str, own_uid: int, *, namespace_made: bool) -> dict[str, str]:
    """The isolation of one task: its user, privileges, private tmp and view of the cgroup fs."""
    if user is not None:
        who = {
            "user": f"uid {user.uid}, gid {user.gid}, no supplementary groups",
            "no_new_privs": "set: setuid binaries and file capabilities grant nothing",
            "capabilities": "none: permitted, effective, inheritable, ambient and bounding sets empty",
        }
    else:
        who = {
            "user": f"the sandbox's own (uid {own_uid}): no task user asked",
            "no_new_privs": "not set (no task user)",
            "capabilities": "the sandbox's own (no task user)",
        }
    if namespace_made:
        cgroupfs = "read-only in the task's mount namespace"
    elif user is not None:
        cgroupfs = "writable only by root: the task user cannot move itself out of its cgroups"
    elif own_uid == 0:
        cgroupfs = "writable: a task running as root can move itself out of its cgroups (give it a task user)"
    else:
        cgroupfs = f"as for uid {own_uid}"
    return {
        **who,
        "private_tmp": private_tmp,
        "cgroupfs": cgroupfs,
        "parent_death_signal": _parent_death_signal(user),
    }


def _parent_death_signal(user: TaskUser | None) -> str:
    if SETPRIV is None:
        return "none: setpriv (util-linux) is not installed; only the next start-up's sweep ends orphans"
    return "SIGKILL, armed after the user switch" if user is not None else "SIGKILL"


def support(own_uid: int, spawner_namespaces_unavailable: str | None) -> dict[str, str]:
    """What this process can give its tasks, before any task runs (for `check`)."""
    caps = privileges.effective_capabilities()
    missing_user = privileges.missing(privileges.SWITCH_USER, caps)
    missing_mount = privileges.missing(privileges.MOUNT_NAMESPACE, caps)
    if SETPRIV is None:
        task_user = "not available: setpriv (util-linux) is not installed"
    elif missing_user:
        task_user = f"not available: this process (uid {own_uid}) lacks {', '.join(missing_user)}"
    else:
        task_user = "available: tasks can run as an unprivileged uid:gid without capabilities"
    if spawner_namespaces_unavailable:
        private_tmp = f"not available: {spawner_namespaces_unavailable}"
    elif missing_mount:
        private_tmp = f"not available: this process (uid {own_uid}) lacks {', '.join(missing_mount)}"
    else:
        private_tmp = "available: private /tmp, /var/tmp, /dev/shm and a read-only cgroup fs per task"
    return {"task_user": task_user, "private_tmp": private_tmp, "parent_death_signal": _parent_death_signal(None)}
