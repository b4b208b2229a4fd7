"""An executor's liveness, judged by the heartbeat interval it declared itself.

An executor that heartbeats every 15 s and one that does every 5 min are judged each by its
own clock: STALE after missing 3 of its heartbeats, OFFLINE after 6. Only OFFLINE executors
lose their RUNNING executions (EXECUTOR_LOST); a STALE holder's execution may be claimed by
another executor once its message comes back. Heartbeats cannot arrive while the control plane
itself is down, so an executor is judged from the control plane's own start at the earliest
(NOT_BEFORE): an outage of ours never makes executors "lost". A step of our wall clock forward
(NTP stepping it, our host resumed from a pause) is such an outage too (WallClockSteps).
"""
from __future__ import annotations

import threading
import time

ONLINE = "ONLINE"
STALE = "STALE"
OFFLINE = "OFFLINE"
STALE_AFTER_MISSED = 3
OFFLINE_AFTER_MISSED = 6
# How far the wall clock must move against the monotonic one between two looks to be a step. NTP's
# slewing moves it at most 0.5 ms a second, and the sweep looks every few seconds.
CLOCK_STEP_S = 1.0


def liveness(last_seen: float, interval_s: float, now: float, state: str | None = None, not_before: float = 0.0) -> str:
    if state == "STOPPED":
        return OFFLINE
    age = now - max(last_seen, not_before)
    if age <= STALE_AFTER_MISSED * interval_s:
        return ONLINE
    if age <= OFFLINE_AFTER_MISSED * interval_s:
        return STALE
    return OFFLINE


class WallClockSteps:
    """When the wall clock last stepped forward, told from time passing by the monotonic clock.

    Heartbeats are stamped with the wall clock (last_seen is stored, and must mean something
    after a restart, which a monotonic reading does not). A step forward made every executor's
    last heartbeat look that much older at once, and the next sweep ended every run ABORTED
    (EXECUTOR_LOST) while its executor ran it. Judged from the step at the earliest
    (`not_before`), as from our own start, executors get their intervals to be heard again. A
    step back moves the remembered step with the clock, so it keeps naming the same instant."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = time.time() - time.monotonic()
        self._stepped_at = 0.0

    def not_before(self, started_at: float) -> float:
        """STARTED_AT, or the wall clock's last forward step if later; looks at the clocks now."""
        wall, monotonic = time.time(), time.monotonic()
        with self._lock:
            step = (wall - monotonic) - self._offset
            self._offset = wall - monotonic
            if step > CLOCK_STEP_S:
                self._stepped_at = wall
            elif step < -CLOCK_STEP_S and self._stepped_at:
                self._stepped_at += step
            return max(started_at, self._stepped_at)
