"""Jobs on reused threads (sandbox/reused_threads.py): each still gets what a thread of its own
gave it, on real threads."""
from __future__ import annotations

import contextvars
import gc
import threading
import time
import weakref

from sandbox.reused_threads import IDLE_NAME, ReusedThreads

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="unset")


def wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.005)


def test_a_job_takes_the_thread_a_finished_job_left_idle():
    threads = ReusedThreads()
    first = threads.start(lambda: None, name="first")
    first.join(5)
    wait_until(lambda: threads.idle() == 1)
    ran_on = []
    second = threads.start(lambda: ran_on.append(threading.get_native_id()), name="second")
    second.join(5)
    assert ran_on == [first.native_id] == [second.native_id]


def test_jobs_at_once_each_get_a_thread_and_none_waits_for_another():
    threads = ReusedThreads()
    release = threading.Event()
    running = []

    def blocked(index: int) -> None:
        running.append(index)
        release.wait(10)

    jobs = [threads.start(blocked, index, name=f"job-{index}") for index in range(5)]
    wait_until(lambda: len(running) == 5)
    assert len({job.native_id for job in jobs}) == 5
    assert all(job.is_alive() for job in jobs)
    release.set()
    for job in jobs:
        job.join(5)
    assert not any(job.is_alive() for job in jobs)


def test_a_thread_bears_the_jobs_name_while_it_is_the_jobs_then_the_idle_name():
    threads = ReusedThreads()
    seen = []
    threads.start(lambda: seen.append(threading.current_thread().name), name="task-log-a").join(5)
    job = threads.start(lambda: seen.append(threading.current_thread().name), name="sandbox-reaper-b")
    job.join(5)
    assert seen == ["task-log-a", "sandbox-reaper-b"]
    wait_until(lambda: threads.idle() == 1)
    assert [t.name for t in threading.enumerate() if t.native_id == job.native_id] == [IDLE_NAME]


def test_a_job_that_raises_goes_to_the_excepthook_and_the_thread_serves_the_next(monkeypatch):
    threads = ReusedThreads()
    hooked = []
    monkeypatch.setattr(threading, "excepthook", lambda args: hooked.append((args.exc_type, args.thread.name)))

    def fails() -> None:
        raise ValueError("boom")

    failed = threads.start(fails, name="failing")
    failed.join(5)
    assert not failed.is_alive()
    assert hooked == [(ValueError, "failing")]
    after = threads.start(lambda: None, name="after")
    after.join(5)
    assert after.native_id == failed.native_id


def test_each_job_runs_in_a_fresh_context_as_on_a_new_thread():
    threads = ReusedThreads()
    seen = []

    def marks() -> None:
        seen.append(MARK.get())
        MARK.set("set by the first job")

    threads.start(marks, name="one").join(5)
    threads.start(marks, name="two").join(5)
    assert seen == ["unset", "unset"]


def test_an_idle_thread_ends_after_its_idle_time():
    threads = ReusedThreads(idle_s=0.2)
    job = threads.start(lambda: None, name="short")
    job.join(5)
    wait_until(lambda: threads.idle() == 1)
    wait_until(lambda: threads.idle() == 0 and job.native_id not in {t.native_id for t in threading.enumerate()})
    again = threads.start(lambda: None, name="again")
    again.join(5)
    assert not again.is_alive()


def test_a_finished_jobs_callable_is_let_go():
    """As Thread.run drops its target: a job that refers to its owner (a reaper's bound method)
    leaves no cycle for the garbage collector once it has run."""
    threads = ReusedThreads()

    class Owner:
        def work(self) -> None:
            pass

    owner = Owner()
    gone = weakref.ref(owner)
    gc.disable()
    try:
        owner.job = threads.start(owner.work, name="owned")
        owner.job.join(5)
        del owner
        assert gone() is None, "only the garbage collector would free it: a reference cycle"
    finally:
        gc.enable()


def test_join_with_a_timeout_returns_while_the_job_still_runs():
    threads = ReusedThreads()
    release = threading.Event()
    job = threads.start(release.wait, 10, name="slow")
    started = time.monotonic()
    job.join(0.1)
    assert job.is_alive() and time.monotonic() - started < 2
    release.set()
    job.join(5)
    assert not job.is_alive()
