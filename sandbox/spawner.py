"""The one long-lived thread that forks every task of a Sandbox.

Why a thread of its own: PR_SET_PDEATHSIG fires when the *thread* that forked the child
exits, not the process. A task started from a short-lived thread (a request handler, a
supervisor) would be SIGKILLed the moment that thread returned. Forking only here makes
`Sandbox.start()` callable from any thread, concurrently, while the parent-death signal still
means "the master died": this thread lives until the sandbox is closed and its last direct
child has been reaped (or until the process dies).

It is also the only thread that enters per-task mount namespaces (mount_ns.py), so no other
thread of the master ever sees a task's /tmp.

Races handled here:
- A caller interrupted while waiting (KeyboardInterrupt, say) would leave a held child that
  nobody releases or reaps: the request's future gets a callback that disposes of it.
- close() while tasks still run must not end this thread (that would SIGKILL them): the
  thread exits only once every child it forked has been reaped.
- A task's main process that forks with CLONE_PARENT makes its children this thread's, where
  nothing waits for them: killed with the task's tree, each stayed a zombie, holding a pid of
  the host's, until the master exited (a run could leave its pids limit of them, and a few runs
  the host without pids). Once a child forked here is reaped, this thread reaps the zombies among
  its children that it never forked (_reap_strays).
- A child is counted out (`reaped()`) only after its reaper has also ended its tree and removed
  its cgroups, milliseconds after the wait that freed its pid: a task forked meanwhile may get
  that pid. Children are counted per pid, each fork one more, each `reaped()` one fewer, so the
  late `reaped()` of the first does not count out the second (counted as a set, it did: close()
  then ended this thread under a running task, whose parent-death signal killed it, and
  _reap_strays took it for a stray).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from .errors import SandboxError
from .low_fds import LowDescriptors
from .mount_ns import MountNamespaces

log = logging.getLogger("sandbox")
T = TypeVar("T")


_REAP_STRAYS = object()  # a request: reap the zombies among this thread's children it never forked


class _Request(Generic[T]):
    def __init__(self, work: Callable[[Spawner], T]) -> None:
        self.work = work
        self.future: Future[T] = Future()


class Spawner:
    """Runs fork+exec work items on its own thread and hands each result back to the caller."""

    def __init__(self, name: str) -> None:
        self._requests: queue.SimpleQueue[_Request | object | None] = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._children: Counter[int] = Counter()  # direct children forked here and not yet reaped, by pid
        self._closed = False
        self.namespaces: MountNamespaces | None = None
        self.namespaces_unavailable: str | None = None
        self._ready = threading.Event()
        # Taken first, before this thread opens anything of its own: numbers below 10 go early.
        self.low: LowDescriptors | None = LowDescriptors.reserve()
        self._thread = threading.Thread(target=self._run, name=f"sandbox-spawner-{name}", daemon=True)
        self._thread.start()
        self._ready.wait()

    def run(self, work: Callable[[Spawner], T], dispose: Callable[[T], None]) -> T:
        """Run WORK on the spawner thread and return its result (or raise its exception) here.

        WORK must fork at most one child and call `forked()` once it has. If this caller is
        interrupted before the result arrives, DISPOSE is called with it instead.
        """
        request: _Request[T] = _Request(work)
        with self._lock:
            self._refuse_if_closed()
            self._requests.put(request)
        try:
            return request.future.result()
        except BaseException:
            # Either WORK failed (nothing to dispose of) or this caller was interrupted while
            # the child is being forked: whoever finishes last disposes of it.
            request.future.add_done_callback(lambda f: dispose(f.result()) if f.exception() is None else None)
            raise

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise SandboxError("this sandbox is closed: open a new one to start tasks")

    def refuse_if_closed(self) -> None:
        """Raise SandboxError once close() has been called (before any work for a start)."""
        with self._lock:
            self._refuse_if_closed()

    def forked(self, pid: int) -> None:
        """Called by a work item on the spawner thread right after a successful fork of PID."""
        with self._lock:
            self._children[pid] += 1

    def reaped(self, pid: int) -> None:
        """Called (from any thread) once the child PID forked here has been waited for. The
        zombies its task may have made this thread's are reaped next, on this thread."""
        with self._lock:
            self._children[pid] -= 1
            if self._children[pid] <= 0:
                del self._children[pid]
            self._lock.notify_all()
            if not self._closed:
                self._requests.put(_REAP_STRAYS)

    def _reap_strays(self) -> None:
        """Reap the exited children of this thread that it never forked (a task's CLONE_PARENT
        offspring; see the module's docstring). On this thread alone: every child forked here is
        in _children before any other request runs, so no task's main process is ever taken
        for one; those still running are reaped at a later call, once their task's tree is
        killed."""
        try:
            with open(f"/proc/self/task/{threading.get_native_id()}/children") as f:
                pids = [int(pid) for pid in f.read().split()]
        except (OSError, ValueError):  # no CONFIG_PROC_CHILDREN: they stay zombies, as before
            return
        with self._lock:
            ours = set(self._children)
        for pid in pids:
            if pid in ours:
                continue
            try:
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                pass

    @property
    def live(self) -> int:
        """Direct children forked here and not yet reaped."""
        with self._lock:
            return self._children.total()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def close(self, timeout_s: float = 1.0) -> None:
        """Accept no more work; the thread ends once its last child is reaped. Waits up to
        TIMEOUT_S for that when no child is left, so that a closed sandbox leaves no thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            live = self._children.total()
        self._requests.put(None)
        if live == 0:
            self._thread.join(timeout_s)
        else:
            log.info("sandbox closed with %d task(s) still running; their parent-death signal keeps the "
                     "spawner thread until they end", live)

    def _run(self) -> None:
        try:
            self.namespaces = MountNamespaces()
        except OSError as exc:
            self.namespaces_unavailable = f"cannot prepare the spawner thread for mount namespaces: {exc.strerror}"
        self._ready.set()
        while True:
            request = self._requests.get()
            if request is None:
                break
            if request is _REAP_STRAYS:
                self._reap_strays()
                continue
            assert isinstance(request, _Request)
            if not request.future.set_running_or_notify_cancel():
                continue
            try:
                if self.namespaces is not None and self.namespaces.stranded:
                    raise SandboxError(self.namespaces.stranded)
                result = request.work(self)
            except BaseException as exc:  # handed to the caller, who raises it
                request.future.set_exception(exc)
            else:
                request.future.set_result(result)
        with self._lock:
            while self._children:
                self._lock.wait()
        if self.namespaces is not None:
            self.namespaces.close()
        if self.low is not None:
            self.low.close()
            self.low = None
