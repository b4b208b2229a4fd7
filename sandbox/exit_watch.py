"""Wait for a child's exit, a wake-up from another thread, or a timeout, whichever comes first.

The reaper must notice three things promptly: the main process exiting, a kill() or
terminate() from another thread, and its own deadlines (timeout, watchdog, kill retries).
A pidfd (Linux 5.3+) becomes readable when the process exits, so one poll(2) on it and on a
wake-up pipe covers all three without polling. Where pidfd_open is missing, Popen.wait is
called in slices of at most 50 ms, as CPython's own Popen.wait(timeout) does.
"""
from __future__ import annotations

import math
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable

FALLBACK_SLICE_S = 0.05
# poll(2) takes its timeout as a C int of milliseconds (at most about 24.8 days); a longer wait
# is done in slices of at most a day, each returning None like a wake-up so the caller, which
# keeps its own deadlines, simply waits again.
MAX_POLL_SLICE_S = 86400.0


class ExitWatch:
    def __init__(self, popen: subprocess.Popen, before_reap: Callable[[], None] = lambda: None) -> None:
        self._popen = popen
        self._before_reap = before_reap  # called once the process has exited, before it is reaped
        # wake() may race close(): without the lock it could write into a descriptor number
        # that close() has just freed and something else has reused.
        self._lock = threading.Lock()
        self._closed = False
        self._looked = False  # BEFORE_REAP has been called
        # The main process has exited but cannot be reaped yet: a process that traces it (one of
        # the task's, attached with ptrace) is told of the exit first, and the kernel lets the
        # parent reap it only once the tracer lets go. The pidfd stays readable meanwhile, so
        # the wait goes on in slices, and the caller ends the tree, the tracer with it.
        self.held_by_tracer = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._poller = select.poll()
        self._poller.register(self._wake_read, select.POLLIN)
        try:
            # Safe against pid reuse: only the reaper waits for this child, and it has not yet.
            self._pidfd: int | None = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            self._pidfd = None
        if self._pidfd is not None:
            self._poller.register(self._pidfd, select.POLLIN)

    def wait(self, timeout: float | None) -> int | None:
        """The main process's return code once it has exited (reaped here); None after a
        wake-up, once TIMEOUT seconds have passed, or after MAX_POLL_SLICE_S of a longer wait."""
        if self._pidfd is None or self.held_by_tracer:
            return self._wait_in_slices(timeout)
        millis = None if timeout is None else max(0, math.ceil(min(timeout, MAX_POLL_SLICE_S) * 1000))
        ready = {fd for fd, _ in self._poller.poll(millis)}
        if self._wake_read in ready:
            self._drain()
        if self._pidfd in ready:
            return self._reap()
        return None

    def _reap(self) -> int | None:
        """The exited process's return code, reaping it after BEFORE_REAP has looked; None while
        it cannot be reaped (held_by_tracer). A blocking wait there waited for as long as the
        tracer chose: the reaper never acted on the timeout or a kill again, nor ended the tree."""
        if self._popen.returncode is None:
            if not self._looked:
                self._looked = True
                self._before_reap()
            if not self._has_exited_unreaped():
                if not self.held_by_tracer and self._pidfd is not None:
                    self.held_by_tracer = True
                    self._poller.unregister(self._pidfd)
                return None
        return self._popen.wait()

    def kill(self) -> None:
        """SIGKILL the main process itself, wherever it is: through its pidfd, or by number while
        it is unreaped (only the reaper, which calls this, reaps it, so the number is still its).
        A task running as root can write its own pid into a cgroup outside its task's, and a kill
        of the task's cgroups then missed it: the reaper spent its kill budget on an empty cgroup,
        published no signal and no unkillable pid, and left it running."""
        with self._lock:
            if self._closed or self._popen.returncode is not None:
                return
            try:
                if self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                else:
                    os.kill(self._popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # exited already (a zombie takes no signal): the wait reaps it

    def exited(self) -> bool:
        """Whether the main process has exited (reaped or not), without waiting or reaping;
        callable from any thread. The pidfd says it race-free; without one, a zombie's state
        is read from /proc (its pid cannot be reused before the reaper reaps it)."""
        with self._lock:
            if self._closed or self._popen.returncode is not None:
                return True
            if self._pidfd is not None:
                probe = select.poll()
                probe.register(self._pidfd, select.POLLIN)
                return bool(probe.poll(0))
        return self._zombie()

    def _zombie(self) -> bool:
        """Whether /proc shows the (unreaped) main process exited."""
        try:
            with open(f"/proc/{self._popen.pid}/stat") as f:
                return f.read().rsplit(") ", 1)[1][0] in "ZX"
        except OSError:
            return True

    def _wait_in_slices(self, timeout: float | None) -> int | None:
        """Without a pidfd: waitid(WNOWAIT) says the process exited without reaping it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._popen.returncode is not None or self._has_exited_unreaped():
                return self._reap()
            if not self.held_by_tracer and self._pidfd is None and self._zombie():
                self.held_by_tracer = True  # exited, yet waitid does not offer it: traced
                return None
            remaining = FALLBACK_SLICE_S if deadline is None else min(FALLBACK_SLICE_S, deadline - time.monotonic())
            time.sleep(max(remaining, 0))
            if self._drain() or (deadline is not None and time.monotonic() >= deadline):
                return None

    def _has_exited_unreaped(self) -> bool:
        try:
            return os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True  # reaped already (by Popen's own poll): wait() returns its code

    def wake(self) -> None:
        """Make a current or the next wait() return now (callable from any thread)."""
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._wake_write, b"!")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already

    def sleep(self, timeout: float) -> bool:
        """Wait up to TIMEOUT seconds for a wake-up alone (the main process has exited and been
        reaped: its pidfd would answer every poll at once); True if woken."""
        waiting = select.poll()
        waiting.register(self._wake_read, select.POLLIN)
        if waiting.poll(max(0, math.ceil(min(timeout, MAX_POLL_SLICE_S) * 1000))):
            return self._drain()
        return False

    def _drain(self) -> bool:
        woken = False
        while True:
            try:
                if not os.read(self._wake_read, 512):
                    return woken
                woken = True
            except BlockingIOError:
                return woken

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._wake_read, self._wake_write, self._pidfd):
                if fd is not None:
                    os.close(fd)
