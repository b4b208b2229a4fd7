"""A private mount namespace per task: fresh tmpfs on /tmp, /var/tmp and /dev/shm, and the
cgroup filesystem read-only, all gone when the task's last process exits. With it a private IPC
namespace: System V shared memory, semaphores and message queues, and POSIX message queues, are
the task's own and go with it too. Without one, a segment a task made (shmget) outlived it, its
pages charged to no task's cgroup and readable by any later task that knew its key.

Made on the spawner thread, in the parent, with unshare(2) and mount(2) called directly, and
left again with setns(2) right after the fork: a child inherits the namespace of the thread
that forks it. Nothing runs in the child between fork and exec, and each step costs
microseconds, where `unshare --mount -- sh -c 'mount ...; mount ...'` costs an exec per mount
(about 13 ms per task measured here).

Races and rules this module relies on:
- unshare(CLONE_NEWNS) affects the calling thread only: other threads of the master keep the
  host's mounts. The spawner thread unshares CLONE_FS once first, because setns(2) back into
  a mount namespace refuses (EINVAL) a thread that shares its root and cwd with others.
- The new namespace is made recursively private before anything is mounted in it, or a mount
  on a shared /tmp would propagate back to the host (what `unshare --propagation private` does).
- setns(2) resets the thread's cwd to the namespace's root: children are always given an
  explicit cwd (see Sandbox.start), never the spawner thread's.
- If the thread cannot get back home, it would hand the next task this task's /tmp. It marks
  itself stranded and the spawner refuses every later start (SandboxError), loudly.
"""
from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .detect import _unescape

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# The per-mount flags a read-only remount must keep (a bind remount replaces them all).
_KEPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
               "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}

PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
MQUEUE_DIR = "/dev/mqueue"  # where distributions mount the POSIX message queue filesystem, if anywhere
CGROUP_FS_TYPES = ("cgroup", "cgroup2")
CGROUP_MOUNT_PARENT = "/sys/fs/cgroup"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)


class NamespaceUnavailable(Exception):
    """No mount namespace can be made here (no CAP_SYS_ADMIN, or seccomp forbids unshare)."""


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _encoded(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_encoded(source), _encoded(target), _encoded(fstype), flags, _encoded(data)), f"mount {target}")


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mountpoint, fstype, per-mount options) of every mount this thread sees."""
    found = []
    with open("/proc/thread-self/mountinfo") as f:
        for line in f:
            left, right = line.rstrip("\n").split(" - ", 1)
            fields = left.split()
            found.append((_unescape(fields[4]), right.split(" ", 1)[0], set(fields[5].split(","))))
    return found


def _kept_flags(options: set[str]) -> int:
    """The per-mount flags of OPTIONS that a read-only bind remount must repeat (it replaces them all)."""
    flags = 0
    for option in options & _KEPT_FLAGS.keys():
        flags |= _KEPT_FLAGS[option]
    return flags


def lies_within(real: str, directory: str) -> bool:
    """Whether the resolved path REAL is DIRECTORY (resolved too) or lies below it."""
    return real == directory or real.startswith(directory.rstrip("/") + "/")


def _options_at(mounts: list[tuple[str, str, set[str]]], path: str) -> set[str]:
    """The per-mount options of the mount PATH lies on (the longest mountpoint above it)."""
    real = os.path.realpath(path)
    best, options = "", set()
    for mountpoint, _, mount_options in mounts:
        if lies_within(real, mountpoint) and len(mountpoint) >= len(best):
            best, options = mountpoint, mount_options
    return options


def private_dir_of(path: str) -> str | None:
    """The private directory (/tmp, /var/tmp, /dev/shm) that PATH lies in, if any."""
    real = os.path.realpath(path)
    for directory in PRIVATE_DIRS:
        if lies_within(real, os.path.realpath(directory)):
            return directory
    return None


class MountNamespaces:
    """Per-task private mount namespaces; create and use on the spawner thread only."""

    def __init__(self) -> None:
        _check(_libc.unshare(CLONE_FS), "unshare(CLONE_FS)")
        self._home = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self._home_ipc = os.open("/proc/thread-self/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
        self.stranded: str | None = None

    @contextmanager
    def private_tmp(self, keep: str, read_only: str | None = None) -> Iterator[str]:
        """Inside the block, this thread is in a fresh private mount namespace that a child
        forked there inherits; KEEP (the task's working directory) stays reachable when it
        lies under a private directory, and READ_ONLY (the command's install tree there) is
        bound back read-only. The thread is in a fresh IPC namespace too. Yields a description
        of what was set up."""
        if _libc.unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0:
            code = ctypes.get_errno()
            raise NamespaceUnavailable(f"unshare(CLONE_NEWNS | CLONE_NEWIPC) failed: {os.strerror(code)}"
                                       + (" (needs CAP_SYS_ADMIN, and a seccomp profile that allows unshare)"
                                          if code in (errno.EPERM, errno.EACCES) else ""))
        try:
            yield self._furnish(keep, read_only)
        finally:
            self._go_home()

    def _furnish(self, keep: str, read_only: str | None) -> str:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        mounts = _mounts()
        # The cgroup filesystem first, wherever it is mounted (a chroot under /tmp may have its
        # own): once /tmp is covered, mounts below it could no longer be reached by path.
        cgroup_fs = []
        for mountpoint, fstype, options in mounts:
            if fstype in CGROUP_FS_TYPES or mountpoint == CGROUP_MOUNT_PARENT:
                _mount(None, mountpoint, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _kept_flags(options))
                cgroup_fs.append(mountpoint)
        # What is kept is opened before /tmp is covered: the descriptors still reach it
        # afterwards, and belong to this namespace, so they may be bind-mounted back.
        kept = [(path, writable) for path, writable in ((read_only, False), (keep, True))
                if path is not None and private_dir_of(path)]
        fds: list[int] = []
        fresh, absent = [], []
        try:
            for path, _ in kept:
                fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            for directory in PRIVATE_DIRS:
                if not os.path.isdir(directory):
                    absent.append(directory)
                    continue
                _mount("sandbox-tmp", directory, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
                fresh.append(directory)
            for (path, writable), fd in zip(kept, fds):
                os.makedirs(path, mode=0o755, exist_ok=True)
                _mount(f"/proc/thread-self/fd/{fd}", path, None, MS_BIND | MS_REC)
                if not writable:
                    _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _kept_flags(_options_at(mounts, path)))
        finally:
            for fd in fds:
                os.close(fd)
        if os.path.isdir(MQUEUE_DIR):  # the new IPC namespace's queues there, not the host's
            _mount("mqueue", MQUEUE_DIR, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        text = f"private mount namespace: fresh tmpfs on {', '.join(fresh)} (charged to the task's memory cgroup)"
        if absent:
            text += f"; {', '.join(absent)} absent here"
        for path, writable in kept:
            text += f"; working directory {path} bound through" if writable else f"; {path} bound through read-only"
        text += "; private IPC namespace (System V and POSIX IPC objects die with the task)"
        return text + ("; cgroup filesystem read-only" if cgroup_fs else "; no cgroup filesystem mounted")

    def close(self) -> None:
        """Release the descriptor of the home namespace, when the spawner thread ends."""
        for fd in (self._home, self._home_ipc):
            if fd >= 0:
                os.close(fd)
        self._home = self._home_ipc = -1

    def _go_home(self) -> None:
        for fd, kind, what in ((self._home, CLONE_NEWNS, "mount"), (self._home_ipc, CLONE_NEWIPC, "IPC")):
            if _libc.setns(fd, kind) != 0:
                code = ctypes.get_errno()
                self.stranded = (f"the spawner thread could not return to the master's {what} namespace "
                                 f"(setns: {os.strerror(code)}); restart the executor")
                raise OSError(code, self.stranded)
