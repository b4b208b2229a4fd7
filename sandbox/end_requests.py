"""What has been asked of a task's end, and the phases the reaper moves it through.

Requests come from any thread (kill(), terminate()) and from the reaper itself (the timeout,
the memory watchdog); only the reaper acts on them. Its phases, and what moves it on:

    RUNNING      --terminate(grace)------------------------->  TERMINATING (SIGTERM sent)
    RUNNING      --kill() / timeout / watchdog--------------->  KILLING
    TERMINATING  --kill() / timeout / watchdog, or the grace ends-->  KILLING
    KILLING      SIGKILL rounds, with growing pauses, until the main process is gone

A later request can only move the task further down (a kill() during a terminate's grace kills
at once); it never moves it back, and it never changes what the outcome names as the cause: the
first request that was reported. A request is not reported when it came too late to be the
cause (see ConfinedProcess.kill): the sandbox then still ends the tree, but the outcome tells
how the task really ended.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum


class Phase(Enum):
    RUNNING = "running"
    TERMINATING = "terminating"
    KILLING = "killing"


@dataclass(frozen=True)
class Asked:
    """A snapshot of the requests so far."""

    kill: bool  # SIGKILL the tree now
    grace_s: float | None  # a terminate() with this grace was asked
    reported_by: str | None  # the outcome's killed_by: the first request that was reported


class EndRequests:
    """Thread-safe record of the requests to end one task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kill = False
        self._grace_s: float | None = None
        self._reported_by: str | None = None

    def ask_kill(self, by: str, *, reported: bool = True) -> bool:
        """Record a request to SIGKILL the tree now; True when it changes what the reaper must do."""
        with self._lock:
            self._report(by, reported)
            changed = not self._kill
            self._kill = True
            return changed

    def ask_terminate(self, grace_s: float, *, reported: bool = True) -> bool:
        """Record a request to SIGTERM, then SIGKILL after GRACE_S; True when it changes what the
        reaper must do (not after an earlier terminate or kill)."""
        with self._lock:
            self._report("terminate()", reported)
            if self._kill or self._grace_s is not None:
                return False
            self._grace_s = grace_s
            return True

    def _report(self, by: str, reported: bool) -> None:
        if reported and self._reported_by is None and not self._kill and self._grace_s is None:
            self._reported_by = by

    def snapshot(self) -> Asked:
        with self._lock:
            return Asked(self._kill, self._grace_s, self._reported_by)


def next_phase(phase: Phase, asked: Asked, grace_over: bool) -> Phase:
    """Where the reaper goes from PHASE, given what has been asked and whether a terminate's
    grace has run out. Never backwards."""
    if phase is Phase.KILLING or asked.kill or (phase is Phase.TERMINATING and grace_over):
        return Phase.KILLING
    if asked.grace_s is not None:
        return Phase.TERMINATING
    return Phase.RUNNING
