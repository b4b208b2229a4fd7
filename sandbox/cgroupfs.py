"""Small, careful file operations on a cgroup filesystem, shared by the v1 and v2 drivers.

Every write names the file and value in its error, because "Invalid argument" alone tells
an operator nothing at 3 a.m. Reads and writes are single os-level calls, not file objects: a
task's start and end make about a dozen of them, and open()'s buffered text layers cost
several times the system call itself.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import time
from collections.abc import Collection

from .errors import SandboxError

log = logging.getLogger("sandbox")

DELEGATION_FIX = (
    "run as root, or give the service a delegated cgroup "
    "(systemd Delegate=yes, or a container with a writable cgroup namespace)"
)


def write(path: str, value: str, *, what: str = "") -> None:
    data = value.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)  # as open(path, "w")
        try:
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
    except OSError as exc:
        label = f" ({what})" if what else ""
        if exc.errno == errno.EINVAL:
            raise SandboxError(f"the kernel refused {value.strip()!r} for {path}{label}: the value is out of range") from exc
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise SandboxError(f"no permission to write {path}{label}: {DELEGATION_FIX}") from exc
        raise SandboxError(f"cannot write {value.strip()!r} to {path}{label}: {exc.strerror}") from exc


def read_text(path: str) -> str | None:
    """PATH's text, or None where it cannot be read for any reason (a limit or counter that
    this kernel or hierarchy lacks). Whether a task's processes are there is read strictly
    instead (read_pids, is_populated)."""
    try:
        return _read_existing(path)
    except OSError:
        return None


def read_int(path: str) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def read_keyed(path: str) -> dict[str, int]:
    """Parse flat-keyed files such as memory.events or memory.oom_control ("key value" lines)."""
    return _keyed(read_text(path) or "")


def _keyed(text: str) -> dict[str, int]:
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def read_pids(procs_file: str) -> list[int]:
    """The pids in PROCS_FILE; none when the cgroup is gone. Any other failure to read it (out of
    descriptors: a task can make the master run out) raises: it says nothing of what is in the
    cgroup, and taken for "none" it let a task's processes outlive it, their uid given to the
    next task."""
    return [int(p) for p in (_read_existing(procs_file) or "").split()]


def _read_existing(path: str) -> str | None:
    """PATH's text; None only when it is not there. Other failures raise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def subtree(path: str) -> list[str]:
    """PATH and every cgroup below it, deepest first. A task running as root may make cgroups of
    its own below its task cgroup (a nested sandbox, any cgroup-aware tool); they are the task's.

    Nearly no task makes any, so the walk (a listing of some thirty files per directory, twice for
    each task's end) is taken only when PATH has subdirectories: kernfs, which serves both cgroup
    versions, counts them in a directory's link count, 2 for none (as tmpfs and ext4 do; a file
    system that reports 1, as btrfs does, is walked)."""
    try:
        if os.stat(path).st_nlink == 2:
            return [path]
    except FileNotFoundError:
        return []
    except OSError:
        pass
    return [directory for directory, _, _ in os.walk(path, topdown=False)]


def read_subtree_pids(path: str) -> list[int]:
    """The processes of the cgroup PATH and of every cgroup below it (cgroup.procs lists a
    cgroup's own members only)."""
    return [pid for directory in subtree(path) for pid in read_pids(os.path.join(directory, "cgroup.procs"))]


def is_populated(path: str) -> bool | None:
    """Whether any process is in the cgroup2 PATH or below it (cgroup.events "populated", which
    the kernel keeps for the whole subtree); None where the file is not there or says nothing of
    it. A file that is there but cannot be read raises (see read_pids)."""
    events = _keyed(_read_existing(os.path.join(path, "cgroup.events")) or "")
    return None if "populated" not in events else events["populated"] == 1


def make_dir(path: str, *, exist_ok: bool = True) -> None:
    """Create the cgroup PATH. A task's own cgroup is made with EXIST_OK false: one that is
    still there belongs to an earlier task of that name whose processes would not die (kept for
    the next sweep), and a new task put into it would count, and be killed with, those."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not exist_ok:
            raise SandboxError(f"cgroup {path} is still there, kept from an earlier task of that name whose processes "
                               "would not die: start this one under another name, or after a sweep has cleared it") from None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise SandboxError(f"no permission to create cgroup {path}: {DELEGATION_FIX}") from exc
        raise SandboxError(f"cannot create cgroup {path}: {exc.strerror}") from exc


def remove_dir(path: str, timeout_s: float = 2.0) -> None:
    """rmdir, retrying EBUSY briefly: an exiting task leaves its cgroup a moment after SIGKILL."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise SandboxError(f"cannot remove cgroup {path}: {exc.strerror} (processes still in it?)") from exc
            time.sleep(0.005)


def remove_tree(path: str) -> None:
    """Remove the cgroup PATH and every cgroup below it, deepest first (rmdir refuses a cgroup
    that still has children). Nearly every task's cgroup has none and goes with its first rmdir;
    only a refused one is listed (a cgroup v1 directory holds ~30 files) and removed the careful
    way, with retries while its last processes leave."""
    try:
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    for directory in subtree(path):
        remove_dir(directory)


def remove_root(path: str) -> None:
    """Remove a sandbox root at shutdown; a root still busy stays, and that is logged, not raised.

    Busy means a task is still running (the master is stopping without waiting for it): its
    cgroup keeps the root, and the next start-up's sweep kills it and clears both.
    """
    try:
        remove_dir(path, timeout_s=0.2)
    except SandboxError as exc:
        log.warning("%s; the next start-up's sweep will clear it", exc)


# How many of a cgroup's processes signal_members holds a pidfd for at once: a tree as large as
# pids.max allows is signalled batch by batch, well inside any descriptor limit.
PIDFD_BATCH = 64


def signal_members(path: str, sig: int = signal.SIGKILL, *, skip: Collection[int] = ()) -> list[int]:
    """Send SIG to every process of the cgroup PATH and of every cgroup below it, and to no
    other process; the pids signalled (those in SKIP are left alone).

    A pid read from cgroup.procs can name someone else by the time it is signalled: a member
    killed a moment before (cgroup.kill, an earlier round) is reaped by its parent or by init,
    and with pid_max at 32768, still the default on many hosts, a busy machine hands its number
    to an unrelated process within seconds. So each pid is pinned first with a pidfd, which
    names one process for good; the cgroup is read again, and a pidfd is signalled only if its
    pid is still listed there. A pid listed then is the pinned process (a reused pid listed in
    the cgroup would be a process forked inside it, the task's own), and a signal to a pidfd
    whose process has gone meanwhile reaches nobody. Where pidfd_open is missing (Linux before
    5.3) or refused, the pid is signalled by number after the same second read: the window is
    then only the time between that read and the kill. A second read that fails leaves the
    kill to what the first listed."""
    members = [pid for pid in read_subtree_pids(path) if pid not in skip]
    signalled: list[int] = []
    for start in range(0, len(members), PIDFD_BATCH):
        pinned: dict[int, int | None] = {}  # pid -> its pidfd, or None where none can be had
        try:
            for pid in members[start:start + PIDFD_BATCH]:
                try:
                    pinned[pid] = os.pidfd_open(pid)
                except ProcessLookupError:
                    continue  # gone already: nothing to signal
                except (AttributeError, OSError):
                    pinned[pid] = None
            if not pinned:
                continue
            try:
                listed = set(read_subtree_pids(path))
            except OSError:
                # Out of descriptors (a task can make the master run out): the kill still goes
                # to what the first read listed, as it did before pids were pinned.
                listed = set(pinned)
            signalled += [pid for pid, fd in pinned.items() if pid in listed and _send(pid, fd, sig)]
        finally:
            for fd in pinned.values():
                if fd is not None:
                    os.close(fd)
    return signalled


def _send(pid: int, pidfd: int | None, sig: int) -> bool:
    """Signal the process PIDFD pins (PID itself where there is no pidfd); whether it was there."""
    try:
        if pidfd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False


def wait_for(condition, timeout_s: float) -> bool:
    """Poll CONDITION with growing pauses (0.5 ms doubling to 20 ms) until true or TIMEOUT_S."""
    deadline = time.monotonic() + timeout_s
    pause = 0.0005
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    return True
