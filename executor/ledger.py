"""The weight ledger: which tasks may run now, so running weights never exceed 1.0.

One ledger per task class (ingestion, monitors), shared by the intake thread that asks how much
to receive and the runner threads that wait for admission and release their weight: every
method holds the ledger's one lock, and admission waits on its condition.

Weights are exact rationals (fractions.Fraction): 3 x 1/3 fills a ledger exactly, and a
thousand admissions and releases leave it at exactly zero. Admission is strictly first come,
first served: a task that does not fit waits at the head, and nothing behind it is admitted
until it starts. So a weight-1.0 task waits at most until the tasks already running end,
however many small tasks keep arriving (no starvation).

Receiving runs a little ahead of admission: when the intake looks (woken by an admission or a
release, or at the end of its wait), the weight that tasks whose process has ended and whose
result is being reported still hold counts as free for receiving (`receive_capacity`'s
FINISHING), though not for admission; it comes back within a call. So a receive asks for every
slot that is free or about to be, not only for the one a release has just freed: ~3 messages a
receive instead of ~1.15 in the throughput benchmark, and ~0.6 ms less of the master's CPU a
task (decision 87). A task received so waits for its weight in line, as any other.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from vocabulary.weights import FULL, InvalidWeight


class StopFlag(Protocol):
    """What ends a wait early, read as a threading.Event's is_set() (the runner's combines the
    executor's stop with the run's cancel)."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class LedgerSnapshot:
    task_class: str
    max_workers: int
    used: Fraction
    running: int
    waiting: int


class Ledger:
    def __init__(self, task_class: str, max_workers: int) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.task_class = task_class
        self.max_workers = max_workers
        self.default_weight = Fraction(1, max_workers)
        self._running: dict[str, Fraction] = {}
        self._waiting: OrderedDict[str, Fraction] = OrderedDict()
        self._changed = threading.Condition(threading.Lock())

    def _used(self) -> Fraction:
        return sum(self._running.values(), Fraction(0))

    def _admissible(self, key: str) -> bool:
        head, weight = next(iter(self._waiting.items()))
        return head == key and weight <= FULL - self._used()

    def acquire(self, key: str, weight: Fraction, *, cancelled: StopFlag | None = None,
                poll_s: float = 0.5) -> bool:
        """Wait, in arrival order, until KEY's WEIGHT fits; True once admitted. False once
        CANCELLED is set (KEY is then no longer waiting), even when the weight fits by then.

        The cancel is looked at before the fit: admitted when its turn came, a cancelled task
        (a cancel, the stop) took the weight only for its runner to give it back, and meanwhile
        held back every task behind it; at a stop, each waiter in turn took the weight the one
        before had just returned."""
        if not 0 < weight <= FULL:
            raise InvalidWeight(f"weight {weight} is outside (0, 1.0]")
        with self._changed:
            if key in self._running or key in self._waiting:
                raise KeyError(f"{key} is already in the {self.task_class} ledger")
            self._waiting[key] = weight
            while True:
                if cancelled is not None and cancelled.is_set():
                    del self._waiting[key]
                    self._changed.notify_all()  # the next in line may fit now
                    return False
                if self._admissible(key):
                    break
                self._changed.wait(poll_s if cancelled is not None else None)
            del self._waiting[key]
            self._running[key] = weight
            self._changed.notify_all()
            return True

    def set_aside(self, key: str) -> str:
        """KEY's weight stays taken, under a key of its own (returned, for its release): the task
        has ended, but processes of it that would not die still hold what the weight stands for
        (runner.py). The execution's own key is free again: a run of it queued again may be
        admitted beside what its last run left."""
        with self._changed:
            if key not in self._running:
                raise KeyError(f"{key} is not running in the {self.task_class} ledger")
            aside = f"left-behind:{key}"
            while aside in self._running:
                aside += "+"
            self._running[aside] = self._running.pop(key)
            return aside

    def release(self, key: str) -> None:
        with self._changed:
            if key not in self._running:
                raise KeyError(f"{key} is not running in the {self.task_class} ledger")
            del self._running[key]
            self._changed.notify_all()

    def wait_for_change(self, timeout_s: float) -> None:
        """Block until an admission or a release (or TIMEOUT_S): the intake waits here when full."""
        with self._changed:
            self._changed.wait(timeout_s)

    def wake(self) -> None:
        """Let every waiter look at its cancel flag now rather than at its next poll."""
        with self._changed:
            self._changed.notify_all()

    def receive_capacity(self, pending: int = 0, most: int = 10, finishing: Collection[str] = ()) -> int:
        """How many messages to receive now: none while a task waits for admission, else the
        default-weight slots that are free or held by FINISHING tasks (their process has ended
        and their result is being reported: free within one call), less PENDING (received, not
        yet admitted). SQS hands out at most 10 per receive."""
        with self._changed:
            if self._waiting:
                return 0
            free_slots = int(self._free_soon(finishing) / self.default_weight)
        return max(0, min(most, free_slots - pending))

    def fits_soon(self, weight: Fraction, finishing: Collection[str] = ()) -> bool:
        """Whether a task of WEIGHT arriving now is admitted at once, or as soon as the FINISHING
        tasks give their weight back (with every task already waiting admitted before it)."""
        with self._changed:
            return sum(self._waiting.values(), Fraction(0)) + weight <= self._free_soon(finishing)

    def _free_soon(self, finishing: Collection[str]) -> Fraction:
        return FULL - self._used() + sum((self._running[key] for key in finishing if key in self._running), Fraction(0))

    def snapshot(self) -> LedgerSnapshot:
        with self._changed:
            return LedgerSnapshot(self.task_class, self.max_workers, self._used(), len(self._running), len(self._waiting))

    def running_keys(self) -> list[str]:
        with self._changed:
            return list(self._running)
