"""Fixtures that give each test its own sandbox root below this process's own cgroup.

In CI (CI=true) a sandbox that cannot use cgroups is a failure, not a skip: the cgroup tests
are the point of this suite, and a green run that skipped them would prove nothing.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from sandbox import Sandbox, SandboxError

PYTHON = sys.executable


def _open_to_others(path: str) -> bool:
    """Whether a uid with no group of its own may exec PATH: every directory on the way, and
    the file, open to "others" (a venv under /root is not)."""
    real = os.path.realpath(path)
    parts = real.split("/")
    for depth in range(1, len(parts)):
        directory = "/".join(parts[:depth]) or "/"
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(real).st_mode & stat.S_IXOTH)


# An interpreter a task user (uid 61234, no passwd entry) can run, for scripts run as one.
TASK_PYTHON = next((p for p in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3")
                    if os.path.exists(p) and _open_to_others(p)), None)


def _open_or_skip(mode: str = "auto") -> Sandbox:
    name = f"test-{uuid.uuid4().hex[:10]}"
    try:
        sandbox = Sandbox.open(name, mode=mode)
    except SandboxError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI requires cgroups, but the sandbox cannot create one here: {exc}")
        pytest.skip(f"no usable cgroups here: {exc}")
    if mode == "auto" and sandbox.mode == "none":
        sandbox.close()
        if os.environ.get("CI") == "true":
            pytest.fail("CI requires cgroups, but no writable cgroup hierarchy was found (mode none)")
        pytest.skip("no writable cgroup hierarchy here")
    return sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    sb = _open_or_skip()
    yield sb
    leftovers = sb.sweep()
    sb.close()
    assert not leftovers, f"a test left task cgroups behind: {leftovers}"


@pytest.fixture
def none_sandbox() -> Iterator[Sandbox]:
    sb = Sandbox.open(f"test-{uuid.uuid4().hex[:10]}", mode="none")
    yield sb
    sb.close()


def leak_script(step_mb: int = 10, pause_s: float = 0.01) -> list[str]:
    """A process that allocates (and touches) STEP_MB at a time without end."""
    return [PYTHON, "-c", f"import time\nleak=[]\nwhile True:\n    leak.append(bytearray({step_mb} << 20)); time.sleep({pause_s})"]


@pytest.fixture
def task_python() -> str:
    if TASK_PYTHON is None:
        pytest.skip("no Python interpreter here that an unprivileged task user may run")
    return TASK_PYTHON


NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


@contextmanager
def next_pid(pid: int) -> Iterator[None]:
    """Inside, the next process forked on this machine gets PID (if it is free and no other fork
    comes first): the kernel's last pid is set, and put back after. Left wound back, it would
    hand every process forked after it (the other test worker's) a number in use a moment ago,
    which tests that watch a pid vanish would misread. Skips the test where it cannot be set."""
    try:
        counter = int(Path(NS_LAST_PID).read_text())
        Path(NS_LAST_PID).write_text(str(pid - 1))
    except OSError as exc:
        pytest.skip(f"cannot choose the next pid here ({exc.strerror}): needs CAP_CHECKPOINT_RESTORE")
    try:
        yield
    finally:
        Path(NS_LAST_PID).write_text(str(max(counter, int(Path(NS_LAST_PID).read_text()))))


def take_pid(pid: int, argv: list[str], *, tries: int = 100, **popen_args) -> subprocess.Popen | None:
    """Start ARGV with exactly PID (free at the time), as pid reuse would after a wrap-around;
    None if other processes kept taking it first."""
    for _ in range(tries):
        with next_pid(pid):
            started = subprocess.Popen(argv, **popen_args)
        if started.pid == pid:
            return started
        started.kill()
        started.wait()
    return None


def past_its_start_tick(pid: int) -> None:
    """Wait until PID started over 50 ms ago. Real pid reuse needs the pid space to wrap first,
    never within a clock tick (10 ms) of the first process's start; staged at once, the process
    taking the pid could start in the same tick, where start times cannot tell the two apart.
    (The CI failures this was first taken for were the sandbox's own race: psutil's lazily read
    create_time, mended in sandbox/no_cgroup.py SessionGroup._remember.)"""
    while time.time() - psutil.Process(pid).create_time() < 0.05:
        time.sleep(0.01)


def pass_pid_on(member: subprocess.Popen, kill: Callable[[int, int], None] = os.kill) -> subprocess.Popen:
    """Kill MEMBER (with KILL, for a test that has patched os.kill) and reap it, then start a
    `sleep` outside every test cgroup with its pid: the process a stale pid now names."""
    past_its_start_tick(member.pid)
    kill(member.pid, signal.SIGKILL)
    member.wait()
    return decoy_with_pid(member.pid)


def decoy_with_pid(pid: int) -> subprocess.Popen:
    """A `sleep` outside every test cgroup with PID, a dead member's, freed and reaped: the
    process a stale pid now names. Skips the test where other forks keep taking the pid."""
    decoy = take_pid(pid, ["sleep", "300"])
    if decoy is None:
        pytest.skip(f"could not fork a process with pid {pid}: other forks kept taking it")
    return decoy


def assert_spared(decoy: subprocess.Popen) -> None:
    """DECOY, which took a dead member's pid, is still alive half a second after the kill (a
    SIGKILL takes a moment to end a process)."""
    with pytest.raises(subprocess.TimeoutExpired):
        decoy.wait(timeout=0.5)
        pytest.fail("the kill signalled the process that took a dead member's pid")


@pytest.fixture
def writes_ns_last_pid() -> None:
    if not os.access(NS_LAST_PID, os.W_OK):
        pytest.skip("needs to choose the next pid (root, with CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE)")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
