"""The acknowledger's delete and the visibility extender's extension of the same message, on a
real SQS-protocol server: a delete and the lease's move to ACKED are one step for the extender."""
from __future__ import annotations

import threading

from loguru import logger

from executor.acks import Acknowledger
from executor.leases import Leases, State
from executor.services import OutageLog, VisibilityExtender

from .conftest import held_leases

WAIT_S = 2.0  # how long each side waits for the other: a bound, not a timing


class DeleteBeforeExtend:
    """The real consumer, with its calls ordered as the race orders them: the extension, read
    before the delete, is sent once the delete has been, and the delete's answer comes back once
    the extender's turn is over. Each waits WAIT_S at most, for what may not happen meanwhile."""

    def __init__(self, consumer) -> None:
        self._consumer = consumer
        self.extending = threading.Event()
        self.deleted = threading.Event()
        self.turn_done = threading.Event()

    def __getattr__(self, name):
        return getattr(self._consumer, name)

    def extend(self, refs, now_ms):
        self.extending.set()
        self.deleted.wait(WAIT_S)
        return self._consumer.extend(refs, now_ms)

    def delete_batch(self, refs):
        refused = self._consumer.delete_batch(refs)
        self.deleted.set()
        self.turn_done.wait(WAIT_S)  # the answer on its way back: the lease is still REPORTING meanwhile
        return refused


def test_an_extension_read_before_a_delete_is_not_refused_and_warned_about_after_it(sqs_queue):
    """The acknowledger deleted without the visibility lock: the extension read before the delete
    reached SQS after it, was refused (the message was gone), and the lease, still REPORTING until
    the delete's answer, was marked refused with a warning that the message may come again."""
    consumer = DeleteBeforeExtend(sqs_queue(visibility_timeout_s=30, prefix="acks-extend"))
    leases = Leases()
    (lease,) = held_leases(consumer._consumer, leases, 1, through=State.REPORTING)
    acks = Acknowledger({"ingestion": consumer}, leases, linger_s=0)
    extender = VisibilityExtender({"ingestion": consumer}, leases, OutageLog())
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(str(message)), level="WARNING")
    try:
        extending = threading.Thread(target=lambda: (extender.step(), consumer.turn_done.set()))
        extending.start()
        assert consumer.extending.wait(10), "the extender did not read the lease"
        acks.ack(lease)
        deleting = threading.Thread(target=acks.flush)
        deleting.start()
        deleting.join(30)
        extending.join(30)
        assert not deleting.is_alive() and not extending.is_alive()
    finally:
        logger.remove(sink)
    assert lease.state is State.ACKED and len(leases) == 0
    assert not any("visibility not extended" in w for w in warnings), warnings
    assert not lease.message_refused, "the deleted message's lease was marked refused"
    assert consumer.receive(10, wait_s=1) == [], "the message was not deleted"
