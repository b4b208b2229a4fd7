"""Growing pauses within a fixed budget, for loops that wait on the kernel.

A kill that cannot empty a cgroup (a process stuck in D state, a frozen one, a cgroup.kill
that keeps failing) must not make a thread spin: each retry waits twice as long as the last,
up to a cap, and the whole loop gives up when the budget is spent.
"""
from __future__ import annotations

import time


class Backoff:
    """Pauses of FIRST_S, doubling up to CAP_S, until BUDGET_S seconds have passed since creation."""

    def __init__(self, budget_s: float, *, first_s: float = 0.001, cap_s: float = 0.5) -> None:
        self._deadline = time.monotonic() + budget_s
        self._next = first_s
        self._cap = cap_s
        self.attempts = 0

    def next_pause(self) -> float | None:
        """The next pause, or None once the budget is spent (the caller gives up)."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            return None
        pause = min(self._next, remaining)
        self._next = min(self._next * 2, self._cap)
        self.attempts += 1
        return pause

    def exhausted(self) -> bool:
        return time.monotonic() >= self._deadline
