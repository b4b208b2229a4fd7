"""Start a child that runs nothing of its command until the parent has confined it.

The master is multi-threaded, so `preexec_fn` (arbitrary Python between fork and exec) is
unsafe. Instead the child execs a tiny wrapper at once:

    setpriv --pdeathsig KILL -- bash -c 'read -r -u FD _ || exit 111; exec FD<&-; exec "$@"' sandbox-exec CMD...

and blocks on a pipe. Meanwhile the parent puts the pid into the task's cgroups, raises its
oom_score_adj to 1000 and applies RLIMIT_AS (prlimit on another process), then writes one
line. Only then does the wrapper exec the command, already confined. If the parent dies
first, the pipe reads EOF and the wrapper exits without running the command (the re-check
of getppid() that a parent-death signal alone would need), and PR_SET_PDEATHSIG kills the
child if the parent dies later. bash, not dash: dash cannot address descriptors above 9.

PR_SET_PDEATHSIG fires when the *thread* that forked exits: the sandbox forks only on its
spawner thread (spawner.py), which outlives every child it forks.
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from .errors import SandboxError

OOM_SCORE_CHILD = 1000


def _wrapper_prefix() -> list[str]:
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


_BASH = shutil.which("bash") or "/bin/bash"
_PREFIX = _wrapper_prefix()


def resolve_command(argv: Sequence[str], env: Mapping[str, str] | None, cwd: str | None) -> None:
    """Fail before forking when the command cannot run, with a message that says why."""
    if not argv:
        raise SandboxError("no command given")
    if cwd is not None and not os.path.isdir(cwd):
        raise SandboxError(f"working directory {cwd} does not exist")
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    command = argv[0]
    if "/" in command:
        target = command if os.path.isabs(command) or cwd is None else os.path.join(cwd, command)
        if not os.path.exists(target):
            raise SandboxError(f"command not found: {command}")
        if not os.access(target, os.X_OK) or os.path.isdir(target):
            raise SandboxError(f"command is not executable: {command}")
    elif shutil.which(command, path=path) is None:
        raise SandboxError(f"command not found: {command} (searched PATH={path})")


def current_umask() -> int:
    """The calling thread's umask, read without the set-and-restore of os.umask() (which
    another thread creating a file in between would see)."""
    try:
        with open("/proc/thread-self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return -1  # unknown: the child keeps the spawner thread's


def spawn_held(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str,
    umask: int,
    stdin,
    stdout,
    stderr,
) -> tuple[subprocess.Popen, int]:
    """Fork+exec the wrapper; return it and the write end of the pipe that releases it.

    CWD and UMASK are the caller's, passed explicitly: the child is forked on the spawner
    thread, and must get the caller's, whatever that thread's are.
    """
    read_end, write_end = os.pipe()  # both close-on-exec; pass_fds opens read_end to the child only
    script = f'read -r -u {read_end} _ || exit 111; exec {read_end}<&-; exec "$@"'
    try:
        popen = subprocess.Popen(
            [*_PREFIX, _BASH, "-c", script, "sandbox-exec", *argv],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            umask=umask,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(read_end,),
            start_new_session=True,
        )
    except OSError as exc:
        os.close(write_end)
        raise SandboxError(f"cannot start {argv[0]}: {exc.strerror}") from exc
    finally:
        os.close(read_end)
    return popen, write_end


def prepare_child(pid: int, address_space_bytes: int | None) -> None:
    """What the parent does to the held child before releasing it."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(OOM_SCORE_CHILD))
    except OSError as exc:
        raise SandboxError(f"cannot raise oom_score_adj of child {pid}: {exc.strerror}") from exc
    if address_space_bytes is not None:
        resource.prlimit(pid, resource.RLIMIT_AS, (address_space_bytes, address_space_bytes))


def release(write_end: int) -> None:
    try:
        os.write(write_end, b"go\n")
    finally:
        os.close(write_end)


def lower_own_oom_score(score: int = -900) -> bool:
    """Make the master the OOM killer's last choice where allowed (needs CAP_SYS_RESOURCE).

    Where it is not allowed, the master carries on: the cgroup limits keep the kernel's OOM
    killer inside the children's cgroups, and children have score 1000 anyway.
    """
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(score))
        return True
    except OSError:
        return False
