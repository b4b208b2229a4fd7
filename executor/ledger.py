"""The weight ledger: which tasks may run now, so running weights never exceed 1.0.

Pure logic, no I/O. Weights are exact rationals (fractions.Fraction: integer numerator and
denominator), not floats: 3 x 1/3 fills the ledger exactly, and a thousand admissions and
releases leave it at exactly zero, with no drift to round away.

Admission is strictly first come, first served: a task that does not fit waits at the head,
and nothing behind it is admitted until it starts. So a weight-1.0 task waits at most until
the tasks already running end, however many small tasks keep arriving (no starvation). The
consumer asks `receive_capacity()` and receives only what it can admit: it never holds
messages it cannot start.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Generic, TypeVar

from vocabulary.weights import FULL, InvalidWeight

T = TypeVar("T")


@dataclass(frozen=True)
class Admitted(Generic[T]):
    key: str
    weight: Fraction
    item: T


class Ledger(Generic[T]):
    """One task class's ledger (ingestion, monitors)."""

    def __init__(self, task_class: str, max_workers: int) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.task_class = task_class
        self.max_workers = max_workers
        self.default_weight = Fraction(1, max_workers)
        self._running: dict[str, Fraction] = {}
        self._waiting: OrderedDict[str, tuple[Fraction, T]] = OrderedDict()

    @property
    def used(self) -> Fraction:
        return sum(self._running.values(), Fraction(0))

    @property
    def free(self) -> Fraction:
        return FULL - self.used

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def running_keys(self) -> list[str]:
        return list(self._running)

    def offer(self, key: str, weight: Fraction, item: T) -> None:
        """Queue a task for admission, behind every task already waiting."""
        if not 0 < weight <= FULL:
            raise InvalidWeight(f"weight {weight} is outside (0, 1.0]")
        if key in self._running or key in self._waiting:
            raise KeyError(f"{key} is already in the {self.task_class} ledger")
        self._waiting[key] = (weight, item)

    def withdraw(self, key: str) -> T | None:
        """Take a waiting task back out (shutdown, cancel before start)."""
        entry = self._waiting.pop(key, None)
        return entry[1] if entry else None

    def waiting_items(self) -> list[tuple[str, T]]:
        return [(key, item) for key, (_, item) in self._waiting.items()]

    def admit(self) -> list[Admitted[T]]:
        """Admit waiting tasks in arrival order while they fit; stop at the first that does not."""
        admitted: list[Admitted[T]] = []
        while self._waiting:
            key, (weight, item) = next(iter(self._waiting.items()))
            if weight > self.free:
                break
            del self._waiting[key]
            self._running[key] = weight
            admitted.append(Admitted(key, weight, item))
        return admitted

    def release(self, key: str) -> None:
        if key not in self._running:
            raise KeyError(f"{key} is not running in the {self.task_class} ledger")
        del self._running[key]

    def receive_capacity(self, most: int = 10) -> int:
        """How many messages the consumer may receive now: none while a task waits, else the
        default-weight slots that are free (SQS hands out at most 10 per receive)."""
        if self._waiting:
            return 0
        return min(most, int(self.free / self.default_weight))
