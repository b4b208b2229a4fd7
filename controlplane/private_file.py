"""Small files only their owner may read: the admin token (server.py) and the secret key
(secret_cipher.py). Both are refused, as ssh refuses such a private key, when others may read
them; both are written so that a crash leaves the old file or the whole new one, never a part.

Reading checks the file it opened, by its descriptor (fstat), not the name (stat): a check on the
name and a read through a second open would let the file change in between. The open is
non-blocking, so a FIFO put in the file's place is refused as not a regular file instead of
blocking the start until something writes into it; on a regular file O_NONBLOCK changes nothing.
Python's open() is kept (with that flag added) for what it already says: a directory is an
OSError, "Is a directory", as before this module.

O_NOFOLLOW is not used. The checks that matter (a regular file, no permission bit for group or
others) are made on the file actually opened, so a symlink leads only to a file that passes them
too. Who can plant a link in the state directory can as well replace the file itself: refusing
links would protect nothing, while it would break a layout operators may rely on, the key or the
token kept on another volume (a mounted secret, which Kubernetes also makes of symlinks) and
linked into the state directory. Contrast executor/runtime/tasks.py, which reads files in a
directory an untrusted task writes to.

Writing goes to a new 0600 file beside the target, is fsynced, then put in place: renamed over
the target (replace=True: the admin token, which a new one supersedes), or linked to the target's
name only if that name is free (replace=False: the secret key, where two writers racing must
agree on the key linked first, and an existing key is never replaced). Opening the target itself
would keep the mode of a file already there, 0644 say. The directory is then fsynced, so the new
name survives a crash too, not only the new file's content.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class PrivateFileRefused(Exception):
    """PATH is there and readable, but not as a private file; the subclass says why."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path


class NotARegularFile(PrivateFileRefused):
    """A directory is not this (open() says "Is a directory", an OSError), a FIFO or device is."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "is not a regular file")


class OthersMayRead(PrivateFileRefused):
    """MODE: the file's permission bits (stat.S_IMODE), for a message that shows them."""

    def __init__(self, path: Path, mode: int) -> None:
        super().__init__(path, f"may be read by others (mode {mode:04o})")
        self.mode = mode


def read_private(path: Path, limit: int = 1024) -> bytes | None:
    """Up to LIMIT bytes of PATH, or None when there is no such file. NotARegularFile or
    OthersMayRead when PATH may not be read as a private file; any other OSError (permission
    denied, a directory) propagates as is, its strerror saying why."""
    try:
        f = open(path, "rb", opener=_open_nonblocking)
    except FileNotFoundError:
        return None
    with f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path)
        if mode & 0o077:
            raise OthersMayRead(path, stat.S_IMODE(mode))
        return f.read(limit)


def write_private(path: Path, data: bytes, *, replace: bool) -> bool:
    """DATA in PATH, readable by its owner only. With REPLACE, whatever PATH held is replaced and
    the answer is True. Without, PATH is written only if it does not exist yet: True when DATA
    went there, False when a file (another writer's, say) was there first and is left as it was."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # unlike a rename, fails where PATH exists
            except FileExistsError:
                return False
        _fsync_directory(path.parent)
        return True
    finally:
        temporary.unlink(missing_ok=True)


def _open_nonblocking(name: str, flags: int) -> int:
    return os.open(name, flags | os.O_NONBLOCK)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
