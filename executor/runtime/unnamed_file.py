"""A file with no name until it is given one: what a process of the same uid cannot open.

Where tasks run as the executor's own uid (an unprivileged container, DATAHUB_EXECUTOR_TASK_USER
=none), the kernel's permission checks do not keep a task from a file the executor writes: a
task that knows the name opens it. A task's log is such a file: a task that wrote into it
directly (bytes the relay would never pass: the 0xFF that marks the executor's own lines) could
forge the executor's lines in the full log that is shipped. A file that has no name cannot be
opened by one, and the master's descriptors are not reachable through /proc/<pid>/fd either
(the master is not dumpable: undumpable.py), so the file is the master's alone while it has none.

The file is made with O_TMPFILE where the file system has it (ext4, xfs, btrfs, tmpfs; overlayfs
since Linux 6.6), and given its name with linkat() through /proc/self/fd. Elsewhere it is made
under a random name and unlinked at once, before anything else of the task starts; such a file
cannot be linked again (the kernel refuses a name to an inode whose last name went, unless it
was made O_TMPFILE), so its bytes are copied to the name instead.
"""
from __future__ import annotations

import errno
import os
import secrets
from dataclasses import dataclass

# What an open(O_TMPFILE) answers where the file system or kernel does not have it: EOPNOTSUPP
# (the file system), EISDIR (a kernel before 3.11 reads the flag as O_DIRECTORY), EINVAL.
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
_COPY_CHUNK = 1 << 20


@dataclass
class UnnamedFile:
    fd: int  # read and write, close-on-exec
    linkable: bool  # made with O_TMPFILE: linkat() can give it a name


def open_unnamed(directory: str, mode: int = 0o600) -> UnnamedFile:
    """A new, empty file in DIRECTORY's file system that no name leads to."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode)
        return UnnamedFile(fd, linkable=True)
    except OSError as exc:
        if exc.errno not in _NO_TMPFILE:
            raise
    path = os.path.join(directory, f".unnamed-{secrets.token_hex(8)}.tmp")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    os.unlink(path)
    return UnnamedFile(fd, linkable=False)


def give_name(file: UnnamedFile, path: str, mode: int = 0o600) -> None:
    """FILE's contents at PATH from now on, replacing whatever is there (a file a task made at
    that name meanwhile, say): linked where the file can be, else copied. Either way through a
    new name beside PATH first and a rename, so PATH is never half there."""
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    try:
        if file.linkable:
            try:
                _link(file.fd, temporary)
            except OSError:  # no /proc: copied like a file that cannot be linked
                _copy(file.fd, temporary, mode)
        else:
            _copy(file.fd, temporary, mode)
        os.replace(temporary, path)
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass


def _link(fd: int, path: str) -> None:
    """linkat(/proc/self/fd/FD, PATH, AT_SYMLINK_FOLLOW): the file FD is open on gets the name
    PATH. Through a directory descriptor: os.link without one calls link(), which links the
    /proc entry itself (EXDEV) instead of the file it leads to."""
    descriptors = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), path, src_dir_fd=descriptors, follow_symlinks=True)
    finally:
        os.close(descriptors)


def _copy(fd: int, path: str, mode: int) -> None:
    """FD's bytes (read at offsets: its own offset is its writer's) into a new file at PATH."""
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        offset, size = 0, os.fstat(fd).st_size
        while offset < size:
            piece = os.pread(fd, min(_COPY_CHUNK, size - offset), offset)
            if not piece:
                break
            offset += len(piece)
            while piece:
                piece = piece[os.write(out, piece):]
    finally:
        os.close(out)
