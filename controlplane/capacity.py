"""The threads the API's blocking work runs in, split so that one kind of wait cannot take them
all (decision 70).

Starlette runs a sync route, a sync exception handler and run_in_threadpool's callable in anyio's
default thread limiter: 40 threads for the whole process. A call that waits there for a thread
waits for whatever holds them, so claims hung on an upstream DataHub held up every GMS read (an
executor's cancel check and pool read), log upload, claim without secrets, error answer and
/health until DataHub's client gave up. Now:

- a claim asks an upstream DataHub (its run's secrets) in one of DATAHUB_CALLS slots; one that
  finds every slot taken is answered 503 at once with retry_after_s (the executor keeps the
  message and asks again, as through a DataHub outage), never queued behind the ones that hang;
- the executor API's blocking work (claims, full logs) runs in EXECUTOR_THREADS threads of its
  own, outside the default limiter, which is left to GraphQL, the admin API and the web page:
  neither side's waits (DataHub, a queue service that hangs under an admin's pool change) take
  the other's threads;
- GMS reads (an executor's cancel check and pool read, DataHub's client reading what a run
  wrote) run in GMS_READ_THREADS threads of their own too: they read the store and nothing
  else, and a pool change or pool delete waiting on a hanging queue service, or GraphQL
  queries, held every default thread and them with it;
- heartbeats, results, releases, error answers, /health and GMS's /config need no thread:
  they run on the event loop.
"""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from loguru import logger

from .errors import Unavailable

DATAHUB_CALLS = 8
# A slot frees when its call ends: DataHub's answer, or its client's timeout (upstream/gms.py's
# TIMEOUT_S, 15 s) at worst. Asked again sooner, most claims would be refused again.
DATAHUB_RETRY_AFTER_S = 5.0
REFUSALS_LOGGED_EVERY_S = 60.0
EXECUTOR_THREADS = 40
GMS_READ_THREADS = 16  # each a short read of the store: a few threads go far
T = TypeVar("T")


class DataHubSlots:
    """At most SLOTS calls to an upstream DataHub at once, from worker threads. A call that finds
    every slot taken is refused at once (Unavailable: 503 with retry_after_s), never queued: a
    DataHub that hangs holds SLOTS threads, each until its client's timeout, and no more.
    Refusals are logged once a minute at most, with their count."""

    def __init__(self, slots: int = DATAHUB_CALLS, retry_after_s: float = DATAHUB_RETRY_AFTER_S) -> None:
        self.slots = slots
        self.retry_after_s = retry_after_s
        self._free = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._refused = 0
        self._logged_at = -REFUSALS_LOGGED_EVERY_S

    @contextmanager
    def slot(self, what: str) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            self._count_refusal()
            raise Unavailable(f"{what}, and all {self.slots} of this control plane's calls to DataHub are waiting on "
                              "it (DataHub slow or not answering); ask again", retry_after_s=self.retry_after_s)
        try:
            yield
        finally:
            self._free.release()

    def _count_refusal(self) -> None:
        with self._lock:
            self._refused += 1
            now = time.monotonic()
            if now - self._logged_at < REFUSALS_LOGGED_EVERY_S:
                return
            refused, self._refused, self._logged_at = self._refused, 0, now
        logger.warning("all {} of this control plane's calls to DataHub are waiting on it (slow or not answering): "
                       "{} claim(s) answered 503 since the last line like this, each to ask again in {:.0f} s; claims of runs whose recipes name no "
                       "secrets, and every other call, are answered as usual", self.slots, refused, self.retry_after_s)


class Threads:
    """SIZE worker threads of their own for one kind of blocking work, out of anyio's default
    limiter. The limiter is made in the server's event loop, at first use: anyio binds one to
    the loop it is made in (several control planes, each with its loop, share a test process)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.size)
        return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs), limiter=self._limiter)
