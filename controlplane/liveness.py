"""An executor's liveness, judged by the heartbeat interval it declared itself.

An executor that heartbeats every 15 s and one that does every 5 min are judged each by its
own clock: STALE after missing 3 of its heartbeats, OFFLINE after 6. Only OFFLINE executors
lose their RUNNING executions (EXECUTOR_LOST); a STALE holder's execution may be claimed by
another executor once its message comes back. Heartbeats cannot arrive while the control plane
itself is down, so an executor is judged from the control plane's own start at the earliest
(NOT_BEFORE): an outage of ours never makes executors "lost".
"""
from __future__ import annotations

ONLINE = "ONLINE"
STALE = "STALE"
OFFLINE = "OFFLINE"
STALE_AFTER_MISSED = 3
OFFLINE_AFTER_MISSED = 6


def liveness(last_seen: float, interval_s: float, now: float, state: str | None = None, not_before: float = 0.0) -> str:
    if state == "STOPPED":
        return OFFLINE
    age = now - max(last_seen, not_before)
    if age <= STALE_AFTER_MISSED * interval_s:
        return ONLINE
    if age <= OFFLINE_AFTER_MISSED * interval_s:
        return STALE
    return OFFLINE
