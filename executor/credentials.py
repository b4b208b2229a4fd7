"""Whether the control plane accepts this executor's token, and what is held back while it does not.

A token revoked, or replaced, or narrowed to other pools while executors still run with it makes
every claim answer 401 or 403. Taken message by message, each refusal left its message for the
dead-letter redrive: the intake kept receiving, every receive raised the message's receive count,
and queued work went to the DLQ, never to run even after the executors restarted with a good
token. So a refusal that is about the token, not about one execution, closes this gate:

- the intakes receive nothing while it is closed (no receive counts are spent), and a message
  already received is returned at once, unclaimed, for an executor whose token works;
- a result refused for it is kept and sent again once the gate opens (like an outage, decision 7);
- /health answers 503 naming the cause, and the log says so when it starts, every
  REMIND_S while it lasts, and when it ends.

The gate opens by itself: the heartbeat, an authenticated call made every interval anyway, is
the periodic check, and its first success opens it. A 401 is always about the token. A 403 may be
about one execution (a claim for another pool's execution); it closes the gate only when a read
of this executor's own pool (`PROBE`, cheap and authenticated, which an executor token may always
make for its pools) is refused too.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from loguru import logger

from .controlplane_client import ControlPlaneError
from .text import printable

REFUSING = (401, 403)
REMIND_S = 300.0


class Credentials:
    def __init__(self, probe: Callable[[], object], *, what: str) -> None:
        """PROBE: a cheap authenticated call that any working token for this executor's pool may
        make; WHAT: the settings an operator fixes, named in the log and in /health."""
        self._probe = probe
        self._what = what
        self._lock = threading.Lock()
        self._accepted = threading.Event()
        self._accepted.set()
        self._cause: str | None = None
        self._since = 0.0
        self._reminded = 0.0

    @property
    def refusal(self) -> str | None:
        """Why the control plane refuses this executor's token; None while it accepts it."""
        with self._lock:
            return self._cause

    def describe(self) -> str:
        """For /health: the cause and the fix, in one line."""
        cause = self.refusal
        if cause is None:
            return "accepted"
        return (f"the control plane refuses this executor's token ({cause}) for {time.monotonic() - self._since:.0f}s: "
                f"not consuming; {self._what}")

    def refuses(self, error: ControlPlaneError) -> bool:
        """ERROR (a final answer) is about the token rather than one execution: the gate is closed
        and True. A 401 says so alone; a 403 only if a read of our own pool is refused as well."""
        if error.status not in REFUSING:
            return False
        if error.status == 403:
            try:
                self._probe()
            except ControlPlaneError as probed:
                if probed.status not in REFUSING:
                    return False  # an outage or another answer: nothing proves the token wrong
                error = probed
            else:
                return False
        self.refused(error)
        return True

    def refused(self, error: ControlPlaneError) -> None:
        """A 401 or 403 from a call every working token may make (the heartbeat, the probe)."""
        cause = printable(str(error), 300)
        now = time.monotonic()
        with self._lock:
            first = self._cause is None
            self._cause = cause
            if first:
                self._since = self._reminded = now
            remind = not first and now - self._reminded >= REMIND_S
            if remind:
                self._reminded = now
            self._accepted.clear()
        if first:
            logger.error("the control plane refuses this executor's token ({}): no more messages are received, and "
                         "messages already received are returned unclaimed, so queued work does not spend its "
                         "receives toward the dead-letter queue; {} Checked at every heartbeat: consuming resumes by "
                         "itself once the token is accepted again", cause, self._what)
        elif remind:
            logger.error("the control plane still refuses this executor's token after {:.0f} s ({}); not consuming; {}",
                         now - self._since, cause, self._what)

    def accepted(self) -> None:
        """A call every working token may make succeeded: the gate opens (said once)."""
        with self._lock:
            was = self._cause is not None
            self._cause = None
            self._accepted.set()
            since = self._since
        if was:
            logger.info("the control plane accepts this executor's token again after {:.0f} s; consuming",
                        time.monotonic() - since)

    def wait_accepted(self, timeout_s: float) -> bool:
        return self._accepted.wait(timeout_s)
