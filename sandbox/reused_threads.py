"""Short-lived jobs on threads that earlier jobs left idle, instead of a new thread each.

The master runs three threads for every task (its runner, its log pump, its reaper), each for
the task's life. Starting a thread and ending it costs ~0.15 ms of CPU, half of it the kernel's
(clone, the new stack, the exit), and the starter waits for the new thread to run: ~0.45 ms of
every trivial task's. A job started here takes an idle thread where there is one and hands it
the job, which costs a wake-up; a thread left without a job for IDLE_S ends. Nothing is kept
beyond what the busiest moment needed, and that for IDLE_S.

What a thread of its own gave a job, each job still gets: it may block as long as it likes
(nothing waits for a thread to come free: one is made), it runs in a fresh contextvars context,
its thread bears its name while it is the job's, an exception it raises goes to threading.excepthook
and ends only the job, and join()/is_alive() say when it is done. The job's callable and
arguments are let go as it ends, as Thread.run does, so a job that refers to its owner makes no
reference cycle. The threads are daemon threads, as every thread the master starts per task is.

A job must not fork a child with a parent-death signal itself: the signal follows the thread
that forked, and a reused thread ends up to IDLE_S after its job, killing the child then (shown
in review). Children are forked by the sandbox's spawner thread, which lives as long as it.
"""
from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable
from typing import Any

# How long a thread stays for the next job before it ends: longer than the gap between tasks on
# a busy executor, short enough that an idle one keeps no thread of a past burst for long.
IDLE_S = 30.0
IDLE_NAME = "idle-reusable"


class Job:
    """One job: join() and is_alive() as a Thread's; native_id is the id of its thread."""

    def __init__(self, target: Callable[..., Any], args: tuple, name: str) -> None:
        self.name = name
        self.native_id: int | None = None
        self._target: Callable[..., Any] | None = target
        self._args: tuple | None = args
        self._done = threading.Event()

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()

    def _run(self) -> None:
        thread = threading.current_thread()
        target, args = self._target, self._args
        self._target = self._args = None  # let go of them as Thread.run does, whatever happens
        try:
            contextvars.Context().run(target, *args)
        except BaseException:
            threading.excepthook(threading.ExceptHookArgs((*sys.exc_info(), thread)))
        finally:
            del target, args
            thread.name = IDLE_NAME
            self._done.set()


class _Worker:
    """A thread and the lock its next job is handed over by (held while it has none)."""

    def __init__(self, job: Job) -> None:
        self.job: Job | None = job
        self.thread: threading.Thread | None = None
        self.native_id: int | None = None
        self.handed = threading.Lock()
        self.handed.acquire()


class ReusedThreads:
    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # the last to go idle is handed the next job: its stack is warm

    def start(self, target: Callable[..., Any], *args: Any, name: str) -> Job:
        """Run TARGET(*ARGS) now on an idle thread, or on a new one (RuntimeError, as from
        Thread.start, when none can be made)."""
        job = Job(target, args, name)
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            assert worker.thread is not None
            worker.thread.name = name  # before it runs, as a new thread's: named while it is the job's
            job.native_id = worker.native_id
            worker.job = job
            worker.handed.release()
            return job
        worker = _Worker(job)
        worker.thread = threading.Thread(target=self._serve, args=(worker,), name=name, daemon=True)
        worker.thread.start()  # returns once the thread runs: its native_id is known
        job.native_id = worker.thread.native_id
        return job

    def idle(self) -> int:
        """Threads waiting for a job."""
        with self._lock:
            return len(self._idle)

    def _serve(self, worker: _Worker) -> None:
        worker.native_id = threading.get_native_id()
        while True:
            job, worker.job = worker.job, None
            assert job is not None
            job._run()
            del job
            with self._lock:
                self._idle.append(worker)
            if worker.handed.acquire(timeout=self.idle_s):
                continue
            with self._lock:
                if worker in self._idle:  # not handed a job in the meantime: this thread ends
                    self._idle.remove(worker)
                    return
            worker.handed.acquire()  # handed one just as the wait ended: it is on its way


THREADS = ReusedThreads()


def start(target: Callable[..., Any], *args: Any, name: str) -> Job:
    """TARGET(*ARGS) on a thread of the process's one set of reusable threads."""
    return THREADS.start(target, *args, name=name)
