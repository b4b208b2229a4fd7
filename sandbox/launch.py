"""What the spawner thread does for one start(): fork the held wrapper (spawn.py), inside a
private mount namespace (mount_ns.py) when one is asked for and can be made.

Kept apart from sandbox.py because it runs on the spawner thread, not the caller's: it may
touch the thread's mount namespace, and everything it needs travels in one Launch.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO, NamedTuple, Union

from .errors import SandboxError
from .mount_ns import PRIVATE_DIRS, NamespaceUnavailable, lies_within, private_dir_of
from .spawn import spawn_held
from .spawner import Spawner
from .task_user import TaskUser

NOT_ASKED = "not asked"
_Stream = Union[int, IO, None]


@dataclass(frozen=True)
class Launch:
    """One start(), as the spawner thread needs it. CWD and UMASK are the caller's, always
    explicit: the spawner thread's own are not the master's."""

    argv: Sequence[str]
    env: Mapping[str, str] | None
    cwd: str
    umask: int
    stdin: _Stream
    stdout: _Stream
    stderr: _Stream
    user: TaskUser | None
    address_space_bytes: int | None
    private_tmp: bool
    keep_read_only: str | None = None  # what_private_tmp_must_keep()


class Spawned(NamedTuple):
    """A held child: ready once it wrote to READY, released by writing to release_fd, or
    disposed of by closing it."""

    popen: subprocess.Popen
    release_fd: int
    ready: BinaryIO
    private_tmp: str  # what became of the private tmp: set up, "not asked", "not available: why"
    namespace_made: bool


def what_private_tmp_must_keep(cwd: str, command: str) -> str | None:
    """Before forking: what of a private directory the task still needs, besides its working
    directory (always bound through). A command installed under /tmp (a checkout cloned there,
    its virtualenvs with it) keeps its install tree, read-only: the directory above its `bin/`,
    or its own directory. Refused: a working directory that is /tmp itself, and a command lying
    directly in a private directory (binding that back would undo the private tmp)."""
    if os.path.realpath(cwd) in {os.path.realpath(d) for d in PRIVATE_DIRS}:
        raise SandboxError(f"the working directory {cwd} would be replaced by the task's private tmpfs: "
                           "give the task a directory of its own")
    real = os.path.realpath(command)
    hidden = private_dir_of(real)
    if hidden is None or lies_within(real, os.path.realpath(cwd)):
        return None
    directory = os.path.dirname(real)
    tree = os.path.dirname(directory) if os.path.basename(directory) == "bin" else directory
    if tree == os.path.realpath(hidden):
        raise SandboxError(f"the command {command} lies directly in {hidden}, which the task's private tmpfs replaces: "
                           "install it in a directory of its own or run the task without private_tmp")
    return tree


def fork_held(spawner: Spawner, launch: Launch) -> Spawned:
    """Runs on the spawner thread. Fork+exec the held wrapper for LAUNCH."""

    def spawn() -> tuple[subprocess.Popen, int, BinaryIO]:
        held = spawn_held(
            launch.argv, env=launch.env, cwd=launch.cwd, umask=launch.umask, stdin=launch.stdin,
            stdout=launch.stdout, stderr=launch.stderr, user=launch.user,
            address_space_bytes=launch.address_space_bytes, low=spawner.low)
        spawner.forked(held[0].pid)
        return held

    if not launch.private_tmp:
        return Spawned(*spawn(), NOT_ASKED, False)
    if spawner.namespaces is None:
        return Spawned(*spawn(), f"not available: {spawner.namespaces_unavailable}", False)
    spawned = None
    try:
        with spawner.namespaces.private_tmp(keep=launch.cwd, read_only=launch.keep_read_only) as described:
            spawned = spawn()
    except NamespaceUnavailable as exc:
        return Spawned(*spawn(), f"not available: {exc}", False)
    except BaseException as exc:
        if spawned is not None:  # forked, but the thread could not get home: never release it
            dispose(spawner, Spawned(*spawned, "", True))
        if isinstance(exc, OSError):
            raise SandboxError(f"cannot set up the task's private tmp: {exc}") from exc
        raise
    return Spawned(*spawned, described, True)


def dispose(spawner: Spawner, spawned: Spawned) -> None:
    """A child that was forked but will never be released: EOF makes its wrapper exit
    without running the command; reap it, and close the pipes made for its stdin, stdout and
    stderr, which no caller will ever get to close."""
    os.close(spawned.release_fd)
    spawned.ready.close()
    spawned.popen.kill()
    spawned.popen.wait()
    spawner.reaped(spawned.popen.pid)
    for pipe in (spawned.popen.stdin, spawned.popen.stdout, spawned.popen.stderr):
        if pipe is not None:
            pipe.close()
