"""Start a child that runs nothing of its command until the parent has confined it.

The master is multi-threaded, so `preexec_fn` (arbitrary Python between fork and exec) is
unsafe. Instead the child execs a tiny wrapper at once:

    setpriv [--reuid=U --regid=G --clear-groups --no-new-privs --inh-caps=-all --ambient-caps=-all
             --bounding-set=-all] --pdeathsig KILL -- \
        dash -c '[ulimit -v KIB || exit 112;] printf r >&READY; exec READY>&-;
                 read -r _ <&FD || exit 111; exec FD<&-; exec "$@"' sandbox-exec CMD...

says it is ready on one pipe and blocks on another. Meanwhile the parent puts the pid into the
task's cgroups, waits for that byte and raises its oom_score_adj to 1000, then writes one line.
Only then does the wrapper exec the command, already confined. dash where the spawner keeps two
descriptors below 10 for the pipes (low_fds.py), since dash addresses no others; bash, with
the pipes wherever they are, otherwise (or where there is no dash). The script is the same.

Races, in the order the child meets them:
- The parent-death signal is thread-scoped: the fork happens on the sandbox's spawner thread
  (spawner.py), which outlives every child it forks.
- The kernel clears the parent-death signal whenever the effective uid or gid changes. setpriv
  sets it after the user switch (util-linux applies --pdeathsig last for exactly this reason),
  and the wrapper blocks on the pipe only after setpriv, so the signal is armed before the
  child can be released.
- If the parent dies before releasing, the pipe reads EOF and the wrapper exits 111 without
  running the command (the re-check of getppid() a parent-death signal alone would need). That
  also covers a parent dying between setpriv's setresuid() and its prctl().
- A wrapper that fails before it waits (setpriv cannot switch to the task user, `ulimit -v` is
  refused) exits without the ready byte: start() raises, saying the command never ran. Without
  the byte, whether the release met a closed pipe or the run looked like a command that failed
  would depend on who was faster.
- RLIMIT_AS is set by the wrapper itself (`ulimit -v`), not with prlimit() from the parent:
  prlimit on another process needs CAP_SYS_RESOURCE once the child has switched to another
  uid, and whether it had switched yet would be a race.
"""
from __future__ import annotations

import os
import resource
import select
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from . import privileges
from .errors import SandboxError
from .low_fds import SHELL_FD_LIMIT, LowDescriptors
from .task_user import TaskUser

OOM_SCORE_CHILD = 1000
# The master's own score where it may lower it: below any task's, and as systemd/datahub-executor.service sets it.
OOM_SCORE_MASTER = -900
# Exit codes of the wrapper when the command never ran.
EXIT_PARENT_GONE = 111
EXIT_RLIMIT_REFUSED = 112
# How long start() waits for a held wrapper's ready byte: two execs (setpriv, bash), milliseconds
# on a quiet machine; generous for a loaded one, and a bound rather than a hang.
READY_TIMEOUT_S = 30.0

SETPRIV = shutil.which("setpriv")
_BASH = shutil.which("bash") or "/bin/bash"
_DASH = shutil.which("dash")


def address_space_kib(address_space_bytes: int) -> int:
    """`ulimit -v` counts KiB: the limit applied is rounded down to a whole KiB."""
    return max(address_space_bytes // 1024, 1)


def check_address_space(address_space_bytes: int | None, user: TaskUser | None, capabilities: int) -> None:
    """Refuse, before forking, an RLIMIT_AS the wrapper could not set. `ulimit -v` sets the hard
    limit too, and raising it above the one this process has needs CAP_SYS_RESOURCE, which a task
    user never has. Left to the wrapper, it exits 112 while still held, and whether start() then
    met a broken release pipe or a task that ran and failed would be a race."""
    if address_space_bytes is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = address_space_kib(address_space_bytes) * 1024
    if hard == resource.RLIM_INFINITY or wanted <= hard:
        return
    missing = privileges.missing(privileges.RAISE_HARD_LIMIT, capabilities)
    if user is None and not missing:
        return
    who = f"the task user {user}" if user is not None else f"this process (uid {os.geteuid()}, without {missing[0]})"
    raise SandboxError(f"address-space limit {wanted} bytes is above this process's hard RLIMIT_AS ({hard} bytes), "
                       f"which {who} cannot raise: ask for at most {hard} bytes, or raise the executor's hard "
                       "limit (systemd LimitAS=, ulimit -H -v)")


def wrapper_shell(read_fd: int, ready_fd: int) -> str:
    """dash, ~0.6 ms of CPU cheaper to start than bash, where it can address both pipes."""
    if _DASH is not None and max(read_fd, ready_fd) < SHELL_FD_LIMIT:
        return _DASH
    return _BASH


def wrapper_argv(argv: Sequence[str], read_fd: int, ready_fd: int, *, user: TaskUser | None,
                 address_space_bytes: int | None) -> list[str]:
    """The command line the child execs right after fork (see the module docstring)."""
    prefix: list[str] = []
    if user is not None:
        if SETPRIV is None:
            raise SandboxError("running a task as another user needs setpriv (util-linux); install util-linux")
        prefix = [SETPRIV, *user.setpriv_options(), "--pdeathsig", "KILL", "--"]
    elif SETPRIV is not None:
        prefix = [SETPRIV, "--pdeathsig", "KILL", "--"]
    limit = ""
    if address_space_bytes is not None:
        limit = f"ulimit -v {address_space_kib(address_space_bytes)} || exit {EXIT_RLIMIT_REFUSED}; "
    script = (f'{limit}printf r >&{ready_fd}; exec {ready_fd}>&-; '
              f'read -r _ <&{read_fd} || exit {EXIT_PARENT_GONE}; exec {read_fd}<&-; exec "$@"')
    return [*prefix, wrapper_shell(read_fd, ready_fd), "-c", script, "sandbox-exec", *argv]


def check_command_input(argv: Sequence[str], env: Mapping[str, str] | None, cwd: str | None) -> None:
    """Refuse, as SandboxError naming what is wrong, what exec cannot take: otherwise Popen
    raises ValueError or TypeError on the spawner thread, after the task's cgroups were made."""
    if isinstance(argv, (str, bytes)):
        raise SandboxError(f"the command must be a list of arguments, not the string {argv!r}")
    for index, arg in enumerate(argv):
        if not isinstance(arg, (str, bytes, os.PathLike)):
            raise SandboxError(f"command argument {index} is a {type(arg).__name__}: arguments are strings")
        if b"\0" in os.fsencode(arg):
            raise SandboxError(f"command argument {index} contains a NUL byte, which exec cannot pass")
    # Values are never quoted in these messages: environments carry secrets.
    for key, value in (env or {}).items():
        if not isinstance(key, str):
            raise SandboxError(f"an environment variable's name is a {type(key).__name__}: names must be strings")
        if not isinstance(value, str):
            raise SandboxError(f"environment variable {key!r} is a {type(value).__name__}: values must be strings")
        if not key:
            raise SandboxError("an environment variable has an empty name")
        if "=" in key:
            raise SandboxError(f"environment variable name {key!r} contains '=', which ends a name")
        if "\0" in key or "\0" in value:
            raise SandboxError(f"environment variable {key!r} contains a NUL byte, which exec cannot pass")
    if cwd is not None:
        if not isinstance(cwd, (str, os.PathLike)):
            raise SandboxError(f"working directory {cwd!r} is not a path")
        if "\0" in os.fspath(cwd):
            raise SandboxError(f"working directory {cwd!r} contains a NUL byte")


def resolve_command(argv: Sequence[str], env: Mapping[str, str] | None, cwd: str | None) -> str:
    """The path the command will be run from; fails before forking when the command cannot
    run, with a message that says why."""
    if not argv:
        raise SandboxError("no command given")
    if cwd is not None and not os.path.isdir(cwd):
        raise SandboxError(f"working directory {cwd} does not exist")
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    command = os.fsdecode(argv[0])  # bytes and paths are taken as arguments (check_command_input)
    if "/" in command:
        target = command if os.path.isabs(command) or cwd is None else os.path.join(cwd, command)
        if not os.path.exists(target):
            raise SandboxError(f"command not found: {command}")
        if not os.access(target, os.X_OK) or os.path.isdir(target):
            raise SandboxError(f"command is not executable: {command}")
        return target
    found = shutil.which(command, path=path)
    if found is None:
        raise SandboxError(f"command not found: {command} (searched PATH={path})")
    return found


def current_umask() -> int:
    """The calling thread's umask, read without the set-and-restore of os.umask() (which
    another thread creating a file in between would see)."""
    try:
        fd = os.open("/proc/thread-self/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            status = os.read(fd, 1 << 16)  # ~1.5 KB: one read, searched as bytes (a task's start pays for it)
        finally:
            os.close(fd)
        start = status.index(b"\nUmask:") + len(b"\nUmask:")
        return int(status[start:status.index(b"\n", start)], 8)
    except (OSError, ValueError):
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
    user: TaskUser | None = None,
    address_space_bytes: int | None = None,
    low: LowDescriptors | None = None,
) -> tuple[subprocess.Popen, int, BinaryIO]:
    """Fork+exec the wrapper; return it, the write end of the pipe that releases it and the read
    end of the pipe it says it is ready on (see await_ready).

    CWD and UMASK are the caller's, passed explicitly: the spawner thread has its own root,
    cwd and umask (it unshared them, see mount_ns.py), so the child must not inherit those.
    LOW, the spawner's descriptors below 10, carry the child's ends where there are some.
    """
    # All close-on-exec; pass_fds opens the child's ends to the child only. Out of descriptors
    # (EMFILE), the start fails as every other start failure does, and the first pipe goes.
    try:
        read_end, write_end = os.pipe()
    except OSError as exc:
        raise SandboxError(f"cannot start {argv[0]}: {exc.strerror}") from exc
    try:
        ready_read, ready_write = os.pipe()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        raise SandboxError(f"cannot start {argv[0]}: {exc.strerror}") from exc
    child_read, child_ready = read_end, ready_write
    try:
        if low is not None:
            low.hold(read_end, ready_write)
            child_read, child_ready = low.release, low.ready
        popen = subprocess.Popen(
            wrapper_argv(argv, child_read, child_ready, user=user, address_space_bytes=address_space_bytes),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            umask=umask,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(child_read, child_ready),
            start_new_session=True,
        )
    except BaseException as exc:
        os.close(write_end)
        os.close(ready_read)
        if isinstance(exc, OSError):
            raise SandboxError(f"cannot start {argv[0]}: {exc.strerror}") from exc
        raise
    finally:
        if low is not None:
            low.park()
        os.close(read_end)
        os.close(ready_write)
    return popen, write_end, os.fdopen(ready_read, "rb", buffering=0)


def await_ready(popen: subprocess.Popen, ready: BinaryIO, task_name: str) -> None:
    """Wait for the held wrapper's ready byte: it is past its user switch and RLIMIT_AS and now
    waits for its release. A wrapper that exits first closes READY without one; the command
    never ran, and start() says so (the wrapper's own message is on the task's stderr)."""
    try:
        poller = select.poll()
        poller.register(ready.fileno(), select.POLLIN)
        if not poller.poll(READY_TIMEOUT_S * 1000):
            raise SandboxError(f"cannot start task {task_name}: the command never ran: its wrapper was not ready "
                               f"within {READY_TIMEOUT_S:.0f} s")
        if ready.read(1) == b"r":
            return
    finally:
        ready.close()
    try:
        code = popen.wait(timeout=READY_TIMEOUT_S)  # no byte and EOF: the wrapper has exited
        how = f"exit code {code}" if code >= 0 else f"signal {-code}"
    except subprocess.TimeoutExpired:
        how = "no exit code"
    raise SandboxError(f"cannot start task {task_name}: the command never ran: its wrapper ended ({how}) before its "
                       "release; setpriv could not switch to the task user, or ulimit -v was refused (the task's "
                       "stderr says which)")


def prepare_child(pid: int) -> None:
    """What the parent does to the held child before releasing it. Raising a score needs no
    privilege, and root writes /proc/PID/oom_score_adj whichever uid the child has switched to."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(OOM_SCORE_CHILD))
    except OSError as exc:
        raise SandboxError(f"cannot raise oom_score_adj of child {pid}: {exc.strerror}") from exc


def release(write_end: int) -> None:
    try:
        os.write(write_end, b"go\n")
    finally:
        os.close(write_end)


def lower_own_oom_score(score: int = OOM_SCORE_MASTER) -> bool:
    """Make the master the OOM killer's last choice where allowed (needs CAP_SYS_RESOURCE).

    Where it is not allowed, the master carries on: the cgroup limits keep the kernel's OOM
    killer inside the children's cgroups. Children start at score 1000, but without
    CAP_SYS_RESOURCE that is no floor: a task may write its own score back down to 0.
    """
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(score))
        return True
    except OSError:
        return False
