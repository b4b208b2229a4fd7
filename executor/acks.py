"""Deleting answered messages, ten to a call.

Once an execution's result is recorded its message only has to go. SQS's DeleteMessageBatch
takes ten receipt handles in one request, so the runner hands its lease over here and is done
(its weight is released at once); this service's thread deletes what has gathered, per queue,
when ten are waiting or the oldest has waited LINGER_S, and moves each lease to ACKED. Under
load that is one request for ten tasks instead of ten (SQS bills per request, and each costs
the executor ~2 ms of CPU in botocore); when idle a delete waits at most LINGER_S.

Until it is deleted the message is still held: its lease stays REPORTING, the visibility
extender keeps extending it, and a crash in that window only means a redelivery, which the
claim recognises as a duplicate (the execution is final) and deletes. A delete SQS refuses is
the same case, and is logged. A delete and the move to ACKED that follows its answer hold the
visibility lock (leases.py): the extender sees the message either held or gone, never deleted
and still held.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from loguru import logger

from .consumer import SqsConsumer
from .leases import IllegalTransition, Lease, Leases, QueueRef, State
from .text import printable

BATCH = 10  # SQS's limit for DeleteMessageBatch
LINGER_S = 0.5


class Acknowledger:
    def __init__(self, consumers: dict[str, SqsConsumer], leases: Leases, *, linger_s: float = LINGER_S) -> None:
        self.consumers = consumers
        self.leases = leases
        self.linger_s = linger_s
        self._waiting: deque[tuple[float, Lease]] = deque()
        self._changed = threading.Condition()

    def ack(self, lease: Lease) -> None:
        """LEASE's result is recorded (it is REPORTING): delete its message soon. The loop is
        woken only when this changes what it waits for: the first starts the linger, the tenth
        makes a batch due. Woken for every ack, it woke nine times a batch to wait again."""
        with self._changed:
            self._waiting.append((time.monotonic(), lease))
            if len(self._waiting) in (1, BATCH):
                self._changed.notify()

    def wake(self) -> None:
        """End an idle wait now (the stop): the loop then sees its stop flag."""
        with self._changed:
            self._changed.notify()

    def pending(self) -> int:
        with self._changed:
            return len(self._waiting)

    def step(self) -> float:
        """One batch, once one is due (the Loop's step): an idle second returns, so the Loop sees
        its stop; once something waits, until the oldest has waited its linger or ten wait. The
        wait is timed to the oldest's due time: a notify alone would not wake it then."""
        with self._changed:
            if not self._waiting:
                self._changed.wait(1.0)
            while self._waiting and not self._due():
                self._changed.wait(self._waiting[0][0] + self.linger_s - time.monotonic())
            batch = self._take()
        self._delete(batch)
        return 0

    def flush(self) -> None:
        """Everything waiting, now (at stop, once the runners are done)."""
        while True:
            with self._changed:
                batch = self._take()
            if not batch:
                return
            self._delete(batch)

    def _due(self) -> bool:
        return len(self._waiting) >= BATCH or (bool(self._waiting) and time.monotonic() - self._waiting[0][0] >= self.linger_s)

    def _take(self) -> list[Lease]:
        return [self._waiting.popleft()[1] for _ in range(min(BATCH, len(self._waiting)))]

    def _delete(self, batch: list[Lease]) -> None:
        if not batch:
            return
        # The deletes and the moves to ACKED under the visibility lock (leases.py), one step for
        # the extender: an extension it read before a delete and sent after it was refused (the
        # message is gone), and, the lease still held, warned about as a message that may be
        # delivered again, and the lease marked refused. Each message is read under it too, so
        # is the queue it is deleted from: a message that took another's place (Leases.receive)
        # may be on the other queue.
        with self.leases.visibility:
            by_queue: dict[str, list[tuple[Lease, QueueRef]]] = {}
            for lease in batch:
                message = self.leases.current_message(lease)
                by_queue.setdefault(message.task_class, []).append((lease, message))
            for task_class, held in by_queue.items():
                self._delete_from(task_class, held)

    def _delete_from(self, task_class: str, held: list[tuple[Lease, QueueRef]]) -> None:
        try:
            refused = self.consumers[task_class].delete_batch([(lease.execution_id, ref) for lease, ref in held])
        except Exception as exc:  # botocore: the messages come back and are recognised as duplicates
            refused = {}
            what = "message not deleted" if len(held) == 1 else f"{len(held)} messages not deleted"
            logger.warning("{} ({}); a redelivery will be recognised as a duplicate", what, type(exc).__name__)
        for lease, _ in held:
            log = logger.bind(execution_id=lease.execution_id)
            if lease.execution_id in refused:
                log.warning("message not deleted ({}); a redelivery will be recognised as a duplicate",
                            printable(refused[lease.execution_id]))
            try:
                self.leases.move(lease, State.ACKED)
            except IllegalTransition as exc:  # ended meanwhile (LOST): the others still end
                log.error("{}", exc)
