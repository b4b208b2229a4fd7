"""An executor's liveness, judged by the heartbeat interval it declared itself.

An executor that heartbeats every 15 s and one that does every 5 min are judged each by its
own clock: STALE after missing 3 of its heartbeats, OFFLINE after 6. Only OFFLINE executors
lose their RUNNING executions (EXECUTOR_LOST); STALE is a warning an operator can see.
"""
from __future__ import annotations

STALE_AFTER_MISSED = 3
OFFLINE_AFTER_MISSED = 6


def liveness(last_seen: float, interval_s: float, now: float, state: str | None = None) -> str:
    if state == "STOPPED":
        return "OFFLINE"
    age = now - last_seen
    if age <= STALE_AFTER_MISSED * interval_s:
        return "ONLINE"
    if age <= OFFLINE_AFTER_MISSED * interval_s:
        return "STALE"
    return "OFFLINE"
