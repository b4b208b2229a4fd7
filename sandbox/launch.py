"""What the spawner thread does for one start(): fork the held wrapper (spawn.py).

Kept apart from sandbox.py because it runs on the spawner thread, not the caller's, and
everything it needs travels in one Launch.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, NamedTuple, Union

from .spawn import spawn_held
from .spawner import Spawner
from .task_user import TaskUser

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


class Spawned(NamedTuple):
    """A held child: released by writing to release_fd, or disposed of by closing it."""

    popen: subprocess.Popen
    release_fd: int


def fork_held(spawner: Spawner, launch: Launch) -> Spawned:
    """Runs on the spawner thread. Fork+exec the held wrapper for LAUNCH."""
    popen, release_fd = spawn_held(
        launch.argv, env=launch.env, cwd=launch.cwd, umask=launch.umask, stdin=launch.stdin,
        stdout=launch.stdout, stderr=launch.stderr, user=launch.user,
        address_space_bytes=launch.address_space_bytes)
    spawner.forked()
    return Spawned(popen, release_fd)


def dispose(spawner: Spawner, spawned: Spawned) -> None:
    """A child that was forked but will never be released: EOF makes its wrapper exit
    without running the command; reap it."""
    os.close(spawned.release_fd)
    spawned.popen.kill()
    spawned.popen.wait()
    spawner.reaped()
