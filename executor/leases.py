"""One lease per held queue message: the only place the master keeps "this execution is ours".

A lease holds the message (and its latest receipt handle: only the latest surely deletes it; or
the message that took its place once SQS refused it: `receive`),
the claim once made (the control plane's lease token, the task, its arguments, its ingest
token), the weight it takes in its ledger, and its state:

    RECEIVED --claim--> CLAIMED --admit--> ADMITTED --start--> RUNNING --> REPORTING --> ACKED
       |                   |                  |                              (result recorded,
       |                   |                  +--> REPORTING (refused before  message deleted)
       |                   |                  |     it could start)          REPORTING --> RELEASED
       |                   |                  |                              (the result refused for
       |                   |                  |                               good: given back)
       |                   +--> REPORTING     +--> RELEASED (stopping: given back to the
       |                   +--> RELEASED            control plane, which queues it again)
       +--> ACKED     (not ours to run: a duplicate delivery, already final)
       +--> RETURNED  (stopping, or our token refused, before the claim: visible on the queue
                       again at once)
       +--> DROPPED   (refused: left for the queue's dead-letter redrive)
    CLAIMED / ADMITTED / RUNNING / REPORTING --> LOST (another run holds the execution now)

Transitions go through `move`, which checks the state they leave under the registry's one lock;
terminal states (ACKED, RETURNED, RELEASED, DROPPED, LOST) remove the lease. The visibility
extender, the heartbeat, the drain and the runners read leases; nothing else holds task state.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from fractions import Fraction
from typing import Any

from vocabulary import tasks


class State(Enum):
    RECEIVED = "RECEIVED"
    CLAIMED = "CLAIMED"
    ADMITTED = "ADMITTED"
    RUNNING = "RUNNING"
    REPORTING = "REPORTING"
    ACKED = "ACKED"
    RETURNED = "RETURNED"
    RELEASED = "RELEASED"
    DROPPED = "DROPPED"
    LOST = "LOST"


S = State
ALLOWED: dict[State, frozenset[State]] = {
    S.RECEIVED: frozenset({S.CLAIMED, S.ACKED, S.RETURNED, S.DROPPED}),
    S.CLAIMED: frozenset({S.ADMITTED, S.REPORTING, S.RELEASED, S.LOST}),
    S.ADMITTED: frozenset({S.RUNNING, S.REPORTING, S.RELEASED, S.LOST}),
    S.RUNNING: frozenset({S.REPORTING, S.LOST}),
    S.REPORTING: frozenset({S.ACKED, S.RELEASED, S.LOST}),
}
TERMINAL = frozenset({S.ACKED, S.RETURNED, S.RELEASED, S.DROPPED, S.LOST})
CLAIMED_STATES = frozenset({S.CLAIMED, S.ADMITTED, S.RUNNING, S.REPORTING})
UNSTARTED = frozenset({S.RECEIVED, S.CLAIMED, S.ADMITTED})
CLAIMED_UNSTARTED = CLAIMED_STATES & UNSTARTED  # whose cancels CancelWatch asks for
LISTED = CLAIMED_STATES | {S.RECEIVED}  # what the heartbeat lists: claims held or on their way
LISTED_LAST = CLAIMED_STATES - UNSTARTED  # what the last heartbeat (STOPPED) lists: what started


class IllegalTransition(RuntimeError):
    """A move from a state that does not allow it: a bug, named with both states."""


@dataclass(frozen=True)
class QueueRef:
    """Where a message came from: the task class of its queue, and the message's identity."""

    task_class: str
    message_id: str
    receipt_handle: str
    receive_count: int
    first_received_ms: int
    received_ms: int = 0  # when this receipt was received (time.time() in ms): SQS's 12-hour cap counts from it


@dataclass
class Lease:
    execution_id: str
    message: QueueRef
    state: State = S.RECEIVED
    claim: Any = None  # controlplane_client.Claimed, once claimed
    weight: Fraction | None = None
    task_class: str | None = None  # the ledger the claimed task uses (the claim decides, not the queue)
    received_at: float = field(default_factory=time.monotonic)
    # SQS refused to extend this receipt: the queue no longer holds the message for us (an
    # embedded queue server that restarted lost it, or it lapsed and went elsewhere).
    message_refused: bool = False
    # The run was cancelled while claimed but not started (services.CancelWatch): its runner
    # gives it back unstarted instead of starting it.
    cancel_asked: bool = False


def _awaits(lease: Lease) -> str | None:
    """The ledger LEASE waits to be admitted to, or None once admitted (or never to be: its claimed
    task is one no executor runs, reported as failed without a ledger)."""
    if lease.state is S.RECEIVED or (lease.state is S.CLAIMED and lease.claim is None):
        return lease.message.task_class
    if lease.state is S.CLAIMED:
        try:
            return tasks.task_class(lease.claim.task)
        except tasks.UnknownTask:
            return None
    return None


class Leases:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_execution: dict[str, Lease] = {}
        # Held around every change of a held message's visibility: the extender's look at the
        # leases and its calls, a give-back with the move out of the registry, and a delete with
        # the move to ACKED (acks.py). An extension read before a give-back and sent after it
        # would hide the message again for a whole visibility timeout; one read before a delete
        # and sent after it is refused, and warned about as a message that may come again.
        # Taken before `_lock`, never while holding it.
        self.visibility = threading.Lock()

    def receive(self, execution_id: str, message: QueueRef) -> tuple[Lease | None, str]:
        """A received message. Returns (a new lease, "new"); (None, "refreshed") when it is our own
        message back again (its latest receipt handle is kept); (None, "replaced") when another
        message names an execution we hold whose own message SQS no longer holds for us (the new
        one takes its place: extended while the task runs, deleted when it ends, there for
        another executor if this one dies); (None, "duplicate") for another message otherwise."""
        with self._lock:
            held = self._by_execution.get(execution_id)
            if held is None:
                lease = Lease(execution_id, message)
                self._by_execution[execution_id] = lease
                return lease, "new"
            if held.message.message_id == message.message_id:
                held.message = replace(held.message, receipt_handle=message.receipt_handle,
                                       receive_count=message.receive_count, received_ms=message.received_ms)
                held.message_refused = False
                return None, "refreshed"
            if held.message_refused:
                held.message, held.message_refused = message, False
                return None, "replaced"
            return None, "duplicate"

    def refused(self, execution_id: str, receipt_handle: str) -> bool:
        """SQS refused to extend RECEIPT_HANDLE (the visibility extender). True the first time for
        the held message's current receipt, which is when it is worth a warning: a receipt stays
        refused, and a long task would repeat it every turn; a new receipt is warned about afresh."""
        with self._lock:
            held = self._by_execution.get(execution_id)
            if held is None or held.message.receipt_handle != receipt_handle or held.message_refused:
                return False
            held.message_refused = True
            return True

    def move(self, lease: Lease, to: State, **changes: Any) -> Lease:
        with self._lock:
            if to not in ALLOWED.get(lease.state, frozenset()):
                raise IllegalTransition(f"execution {lease.execution_id}: {lease.state.value} -> {to.value} is not allowed")
            for name, value in changes.items():
                setattr(lease, name, value)
            lease.state = to
            if to in TERMINAL:
                self._by_execution.pop(lease.execution_id, None)
            return lease

    def holds(self, message_id: str) -> bool:
        """Whether a lease holds the message MESSAGE_ID."""
        with self._lock:
            return any(lease.message.message_id == message_id for lease in self._by_execution.values())

    def current_message(self, lease: Lease) -> QueueRef:
        with self._lock:
            return lease.message

    def all(self) -> list[Lease]:
        with self._lock:
            return list(self._by_execution.values())

    def claimed_ids(self) -> list[str]:
        """Executions this process holds a claim on."""
        with self._lock:
            return sorted(e for e, lease in self._by_execution.items() if lease.state in CLAIMED_STATES)

    def listed_ids(self, *, last: bool = False) -> list[str]:
        """What the heartbeat lists as this process's: the executions it holds a claim on, and
        those it is claiming. A claim granted whose answer is still on its way is ours; left
        out of two heartbeats, the control plane took it for a lost claim and queued the run
        again, while this process went on to run it on a lease no longer valid. A received
        message whose claim is refused leaves the registry, and the next heartbeat with it.

        LAST: the list of the last heartbeat (STOPPED), which the control plane takes as final,
        only what started. Anything else still held then is a claim the process gave up on as
        it exits (a second stop signal): listed, it stayed held by a stopped executor and ended
        ABORTED (EXECUTOR_LOST) without having run; left out, it is queued again at once."""
        states = LISTED_LAST if last else LISTED
        with self._lock:
            return sorted(e for e, lease in self._by_execution.items() if lease.state in states)

    def unstarted_claims(self) -> list[str]:
        """Executions claimed but not started (waiting for capacity or a task user, or being
        prepared): no runner asks for their cancels, CancelWatch does."""
        with self._lock:
            return sorted(e for e, lease in self._by_execution.items() if lease.state in CLAIMED_UNSTARTED)

    def ask_cancel(self, execution_id: str) -> bool:
        """Mark a claimed, unstarted execution cancelled; True when that changed something."""
        with self._lock:
            lease = self._by_execution.get(execution_id)
            if lease is None or lease.state not in CLAIMED_UNSTARTED or lease.cancel_asked:
                return False
            lease.cancel_asked = True
            return True

    def pending(self, task_class: str) -> int:
        """Leases on their way to TASK_CLASS's ledger, not yet admitted: capacity the intake must not
        offer again. A received one is counted by its queue's class, the only guess before the
        claim; a claimed one by its task's, which is the ledger it waits for: a monitor task
        delivered on the ingestion queue, counted by its queue, took an ingestion slot for as
        long as it waited for a monitors one, and the ingestion intake received nothing meanwhile."""
        with self._lock:
            return sum(1 for lease in self._by_execution.values() if _awaits(lease) == task_class)

    def reporting(self, task_class: str) -> set[str]:
        """Executions of TASK_CLASS's ledger reporting their result (their process has ended):
        the weight they still hold there is given back within one call to the control plane,
        so the intake may receive for it already (ledger.py)."""
        with self._lock:
            return {execution_id for execution_id, lease in self._by_execution.items()
                    if lease.state is S.REPORTING and lease.task_class == task_class}

    def counts(self) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for lease in self._by_execution.values():
                counts[lease.state.value] = counts.get(lease.state.value, 0) + 1
            return counts

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_execution)
