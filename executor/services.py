"""The master's background threads: intake (one per queue), heartbeat, visibility extender and
the watch for cancels of claimed runs that have not started.

Each loop survives any exception: it logs it once (the same error again is not logged again
until the loop has had a good turn), waits a moment and carries on. A thread that is gone
anyway makes /health fail (Master.health), so a supervisor restarts the executor.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

from loguru import logger

from . import __version__, datahub_aspects
from .consumer import Received, SqsConsumer
from .controlplane_client import ControlPlaneClient, ControlPlaneError
from .credentials import Credentials
from .leases import Leases
from .ledger import Ledger
from .operability import ExecutorMetrics
from .text import printable


# An empty receive that came back sooner than this is followed by a wait for the rest of it: a
# long poll (20 s) answers empty only at its end, unless the endpoint ignores long polling.
EMPTY_RECEIVE_MIN_S = 1.0
# A message the master failed to take over (Intake._offer_failed) is visible again after this
# long (as runner.FAILED_RUNNER_RETURN_S), and the intake pauses as a Loop does after a failure.
FAILED_OFFER_RETURN_S = 10
FAILED_OFFER_PAUSE_S = 2.0


class Loop(threading.Thread):
    """A daemon thread running STEP until STOP is set; STEP returns how long to wait before the next turn."""

    def __init__(self, name: str, step: Callable[[], float], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._step = step
        self._stop_event = stop  # not `_stop`: Thread has a method of that name, which is_alive() calls
        self._last_error: str | None = None

    @property
    def died(self) -> bool:
        """Started, ended, and not because it was told to stop."""
        return self.ident is not None and not self.is_alive() and not self._stop_event.is_set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                wait_s = self._step()
                self._last_error = None
            except Exception as exc:  # the loop must outlive any one failure
                text = f"{type(exc).__name__}: {exc}"
                if text != self._last_error:
                    logger.opt(exception=exc).error("{} loop failed; carrying on", self.name)
                    self._last_error = text
                wait_s = 2.0
            if wait_s:
                self._stop_event.wait(wait_s)


class Intake:
    """Receives from one queue only what its ledger can admit, or will once the results being
    reported are recorded (ledger.py), and hands each message over; nothing while the control
    plane refuses our token (a receive would only spend the message's receive count toward the
    dead-letter queue: credentials.py). A task beginning to report does not wake it: woken then,
    it received one message at a time again, and the saving went (decision 87)."""

    def __init__(self, consumer: SqsConsumer, ledger: Ledger, leases: Leases, offer: Callable, stop: threading.Event,
                 outage: "OutageLog", *, metrics: ExecutorMetrics | None = None,
                 credentials: Credentials | None = None) -> None:
        self.consumer = consumer
        self.ledger = ledger
        self.leases = leases
        self.offer = offer
        self.stop = stop
        self.outage = outage
        self.metrics = metrics
        self.credentials = credentials

    def step(self) -> float:
        if self.credentials is not None and self.credentials.refusal is not None:
            self.credentials.wait_accepted(1.0)
            return 0
        capacity = self.ledger.receive_capacity(self.leases.pending(self.consumer.task_class),
                                                finishing=self.leases.reporting(self.ledger.task_class))
        if capacity <= 0:
            self.ledger.wait_for_change(1.0)
            return 0
        asked = time.monotonic()
        try:
            received = self.consumer.receive(capacity)
        except Exception as exc:  # botocore: endpoint down, throttled, credentials
            self.outage.down(exc)
            return 2.0
        self.outage.up(asked)
        took = time.monotonic() - asked
        if self.metrics is not None:
            self.metrics.receive_latency.observe(took)
        if not received and took < EMPTY_RECEIVE_MIN_S:
            # A long poll answered empty at once: an endpoint (or a proxy) that ignores long
            # polling. Asked again at once, it was asked tens of times a second, for nothing.
            return EMPTY_RECEIVE_MIN_S - took
        failed = False
        for message in received:
            if self.stop.is_set():  # a long poll that returned after the stop: give it straight back
                self._give_back(message)
                continue
            try:
                self.offer(message)
            except Exception as exc:  # a bug: the rest of the batch is still offered (not left hidden)
                failed = True
                self._offer_failed(message, exc)
        # After a failed offer, the Loop's pause after a failure: a failure that repeats does not
        # receive, fail and give back in a tight loop.
        return FAILED_OFFER_PAUSE_S if failed else 0

    def _offer_failed(self, message: Received, exc: Exception) -> None:
        """OFFER raised for MESSAGE. Had it stopped the batch, the messages after it stayed hidden
        for a whole visibility timeout, offered to no one. MESSAGE itself goes back unless a lease
        holds it (the offer got as far as that: the lease's runner, or its give-back, has it),
        after FAILED_OFFER_RETURN_S: not at once, or a failure that repeats would spend its
        receive count toward the dead-letter queue in seconds."""
        held = self.leases.holds(message.ref.message_id)
        logger.bind(execution_id=message.body.execution_id).opt(exception=exc).error(
            "message {} could not be handed over ({}: {}); {}", printable(message.ref.message_id),
            type(exc).__name__, printable(str(exc)),
            "its lease has it" if held else f"it is returned to the queue in {FAILED_OFFER_RETURN_S} s")
        if not held:
            self._give_back(message, FAILED_OFFER_RETURN_S)

    def _give_back(self, message: Received, after_s: float = 0) -> None:
        try:
            self.consumer.return_now(message.ref, after_s)
        except Exception:  # botocore: it comes back after its visibility timeout anyway
            pass


def sqs_failure(exc: Exception) -> str:
    """EXC, a failed SQS call, as an operator can act on it: SQS's own code and words where it
    answered (AccessDenied, an expired token: credentials to fix, not a network), else what the
    client could not reach, which botocore's message names (the endpoint's URL). The type's name
    alone ("ClientError", "EndpointConnectionError") said neither where nor what."""
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    if isinstance(error, dict) and error.get("Code"):
        return (f"it refused the call, {printable(str(error.get('Code')))[:80]}: "
                f"{printable(str(error.get('Message') or ''))[:200]}")
    return f"{type(exc).__name__}: {printable(str(exc))[:300]}"


class OutageLog:
    """One line when SQS becomes unreachable and one when it is back, not one per failed call.

    Only a call that began after the outage was noticed proves SQS is back: a long poll already
    in flight when the server went away may still end well (an empty answer as it shuts down),
    and taking that for recovery made the two queues' intakes flap the log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.is_down = False
        self._down_since = 0.0

    def down(self, exc: Exception) -> None:
        with self._lock:
            first, self.is_down = not self.is_down, True
            if first:
                self._down_since = time.monotonic()
        if first:
            logger.warning("SQS unreachable: {}; retrying (`datahub-executor check` tests the queue and its "
                           "credentials)", sqs_failure(exc))

    def down_for(self) -> float:
        """Seconds since SQS was noticed unreachable (0 while it answers)."""
        with self._lock:
            return time.monotonic() - self._down_since if self.is_down else 0.0

    def up(self, asked_at: float) -> None:
        """A call begun at ASKED_AT (time.monotonic()) succeeded."""
        with self._lock:
            was = self.is_down and asked_at >= self._down_since
            if was:
                self.is_down = False
        if was:
            logger.info("SQS reachable again")


MIN_EXTEND_PERIOD_S = 0.25


class VisibilityExtender:
    """Extends every held message well before it lapses: a third of the timeout, at most.

    A call that succeeds tells the outage log SQS is back: with every slot busy the intakes do
    not call SQS at all, and only this loop would see it. A receipt SQS refuses (its message
    was deleted, or received again elsewhere after it lapsed) stays refused, so it is warned
    about once (its lease keeps the mark: Leases.refused), not on every turn of a long task; a
    new receipt for the same execution (our own
    intake received the message again) is extended, and warned about afresh if refused."""

    def __init__(self, consumers: dict[str, SqsConsumer], leases: Leases, outage: OutageLog) -> None:
        self.consumers = consumers
        self.leases = leases
        self.outage = outage
        # A third of the shortest timeout, floored only to bound the calls: a floor of 1 s met a
        # pool's 1 s timeout at its very end, so each held message lapsed and was received again
        # (toward the dead-letter queue) whenever an extension came a moment late.
        self.period_s = max(MIN_EXTEND_PERIOD_S, min(c.visibility_timeout_s for c in consumers.values()) / 3)

    def step(self) -> float:
        with self.leases.visibility:  # no give-back between our look and our calls (leases.py)
            return self._extend()

    def _extend(self) -> float:
        by_queue: dict[str, list] = {}
        for lease in self.leases.all():
            message = self.leases.current_message(lease)
            by_queue.setdefault(message.task_class, []).append((lease.execution_id, message))
        for task_class, refs in by_queue.items():
            asked = time.monotonic()
            try:
                failed = self.consumers[task_class].extend(refs, int(time.time() * 1000))
            except Exception as exc:
                self.outage.down(exc)
                continue
            self.outage.up(asked)
            handles = dict(refs)
            for execution_id, reason in failed.items():
                if self.leases.refused(execution_id, handles[execution_id].receipt_handle):
                    logger.bind(execution_id=execution_id).warning(
                        "visibility not extended: SQS refused the receipt ({}); the message may be delivered again "
                        "while the task runs, and the claim will refuse it elsewhere; a new message for it received here "
                        "takes its place", printable(reason))
        return self.period_s


class CancelWatch:
    """Cancels of runs claimed but not started. A running task's runner asks for its own cancel
    at each progress report; a claimed one that waits for capacity (behind tasks that may run
    for hours), for a task user, or for its virtualenv build has no one asking, and was started
    anyway once its turn came, to be cancelled only then. This loop asks for each of them every
    INTERVAL_S, marks the lease of each one cancelled and wakes the waits, and its runner gives
    it back unstarted: the control plane ends it CANCELLED (CANCELLED_BEFORE_START).

    A question that fails (the control plane is down) is asked again next turn."""

    def __init__(self, client: ControlPlaneClient, leases: Leases, wake: Callable[[], None], interval_s: float) -> None:
        self.client = client
        self.leases = leases
        self.wake = wake
        self.interval_s = interval_s

    def step(self) -> float:
        asked = False
        for execution_id in self.leases.unstarted_claims():
            try:
                cancelled = self.client.cancel_requested(execution_id)
            except ControlPlaneError:
                continue
            if cancelled and self.leases.ask_cancel(execution_id):
                logger.bind(execution_id=execution_id).info("cancel requested before the task started: giving it back "
                                                            "unstarted")
                asked = True
        if asked:
            self.wake()
        return self.interval_s


class ExecutorIdInUse(RuntimeError):
    """Another live process heartbeats with this executor id."""


class Heartbeat:
    """This process's dataHubRemoteExecutorStatus, every interval, with what DataHub has no field
    for in the system metadata properties (docs/protocol.md)."""

    def __init__(self, *, client: ControlPlaneClient, executor_id: str, instance_id: str, pool_id: str,
                 interval_s: float, leases: Leases, ledgers: dict[str, Ledger], state: Callable[[], str],
                 sandbox: Callable[[], dict], health: Callable[[], dict], log_delivery: bool,
                 started_at: str, gms_url: str) -> None:
        self.client = client
        self.executor_id = executor_id
        self.instance_id = instance_id
        self.pool_id = pool_id
        self.interval_s = interval_s
        self.leases = leases
        self.ledgers = ledgers
        self.state = state
        self.sandbox = sandbox
        self.health = health
        self.log_delivery = log_delivery
        self.started_at = started_at
        self._started = time.monotonic()
        self.address = _outbound_address(gms_url)
        self._one_at_a_time = threading.Lock()
        self._stopped_sent = False

    def properties(self, state: str) -> dict[str, str]:
        capacity = {}
        for name, ledger in self.ledgers.items():
            snap = ledger.snapshot()
            capacity[name] = {"max_workers": snap.max_workers, "used_weight": float(snap.used), "running": snap.running,
                              "waiting": snap.waiting}
        listed = self.leases.listed_ids(last=state == "STOPPED")  # the STOPPED one's list is final
        return {"instanceId": self.instance_id, "heartbeatIntervalSeconds": str(self.interval_s), "state": state,
                "startedAt": self.started_at, "runningExecutions": json.dumps(listed),
                "capacity": json.dumps(capacity), "sandbox": json.dumps(self.sandbox()),
                "health": json.dumps(self.health())}

    def beat(self, via: ControlPlaneClient | None = None, *, wait_s: float | None = None) -> bool:
        """One heartbeat (through VIA, else the heartbeat's client); ExecutorIdInUse on 409,
        ControlPlaneError otherwise.

        Beats go one at a time, and none after the one saying STOPPED: the control plane keeps
        the state of whichever heartbeat arrives last, so a DRAINING beat still being retried
        by the heartbeat thread (its client retries 5xx and timeouts) must land before the
        final one, or the stopped executor looks alive again. A beat waits at most WAIT_S
        (None: as long as it takes) for one in flight; False when it gave up and sent nothing.
        The final beat gives up after a few seconds, so an unanswering control plane does not
        hold a stopping executor, and then no heartbeat is sent again."""
        if not self._one_at_a_time.acquire(timeout=-1 if wait_s is None else wait_s):
            self._stopped_sent = self._stopped_sent or self.state() == "STOPPED"
            return False
        try:
            if self._stopped_sent:
                return False
            state = self.state()
            self._stopped_sent = state == "STOPPED"
            self._send(via or self.client, state)
            return True
        finally:
            self._one_at_a_time.release()

    def _send(self, client: ControlPlaneClient, state: str) -> None:
        status = datahub_aspects.executor_status(pool_id=self.pool_id, version=__version__, address=self.address,
                                                 hostname=socket.gethostname(), uptime_s=time.monotonic() - self._started,
                                                 stopped=state == "STOPPED", log_delivery=self.log_delivery)
        try:
            client.heartbeat(self.executor_id, status, self.properties(state))
        except ControlPlaneError as exc:
            if exc.status == 409:
                raise ExecutorIdInUse(printable(exc)) from None
            raise


def _outbound_address(gms_url: str) -> str:
    """The address this host reaches the control plane from (what DataHub shows as executorAddress)."""
    from urllib.parse import urlparse

    parsed = urlparse(gms_url)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((parsed.hostname or "127.0.0.1", parsed.port or 443))
            return probe.getsockname()[0]
    except OSError:
        return "unknown"
