"""The acknowledger deletes answered messages ten to a call (DeleteMessageBatch), on a real
SQS-protocol server, and every lease it is given ends ACKED, whether SQS deleted it or not."""
from __future__ import annotations

import threading
import time

import pytest
from loguru import logger

from executor.acks import BATCH, Acknowledger
from executor.consumer import SqsConsumer
from executor.leases import Leases, State

from .conftest import held_leases


@pytest.fixture
def queue(sqs_queue):
    consumer = sqs_queue(visibility_timeout_s=60, prefix="acks")
    calls: list[int] = []
    consumer.client.meta.events.register("before-parameter-build.sqs.DeleteMessageBatch",
                                         lambda params, **_: calls.append(len(params["Entries"])))
    return consumer, calls


def messages_left(consumer: SqsConsumer) -> int:
    attributes = consumer.client.get_queue_attributes(QueueUrl=consumer.queue_url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_ten_waiting_go_in_one_call_at_once_and_the_rest_after_the_linger(queue):
    consumer, calls = queue
    leases = Leases()
    acks = Acknowledger({"ingestion": consumer}, leases, linger_s=0.5)
    held = held_leases(consumer, leases, 13, through=State.REPORTING)
    for lease in held:
        acks.ack(lease)
    began = time.monotonic()
    acks.step()
    assert calls == [BATCH] and time.monotonic() - began < 0.5, "a full batch does not wait for the linger"
    assert len(leases) == 3 and all(lease.state is State.ACKED for lease in held[:10])
    acks.step()
    assert calls == [BATCH, 3] and time.monotonic() - began >= 0.5, "the rest waited for the oldest's linger"
    assert len(leases) == 0 and messages_left(consumer) == 0


def test_a_delete_sqs_refuses_still_ends_the_lease_and_the_others_are_deleted(queue):
    consumer, calls = queue
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(str(message)), level="WARNING")
    leases = Leases()
    acks = Acknowledger({"ingestion": consumer}, leases, linger_s=0)
    good, stale = held_leases(consumer, leases, 2, through=State.REPORTING)
    consumer.client.delete_message(QueueUrl=consumer.queue_url, ReceiptHandle=stale.message.receipt_handle)
    stale.message = type(stale.message)(**{**stale.message.__dict__, "receipt_handle": "not-a-receipt-handle"})
    acks.ack(good)
    acks.ack(stale)
    acks.flush()
    logger.remove(sink)
    assert calls == [2]
    assert len(warnings) == 1 and "ReceiptHandleIsInvalid" in warnings[0], warnings
    assert good.state is State.ACKED and stale.state is State.ACKED and len(leases) == 0
    assert messages_left(consumer) == 0


def test_acks_from_many_runner_threads_are_all_deleted_by_one_loop_and_a_flush(queue):
    consumer, calls = queue
    leases = Leases()
    acks = Acknowledger({"ingestion": consumer}, leases, linger_s=0.05)
    held = held_leases(consumer, leases, 25, through=State.REPORTING)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            acks.step()

    deleter = threading.Thread(target=loop)
    deleter.start()
    runners = [threading.Thread(target=acks.ack, args=(lease,)) for lease in held]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    stop.set()
    deleter.join()
    acks.flush()
    assert sum(calls) == 25 and all(n <= BATCH for n in calls)
    assert len(leases) == 0 and acks.pending() == 0 and messages_left(consumer) == 0


def test_a_lease_that_ended_while_waiting_does_not_keep_the_others_from_ending(queue):
    consumer, calls = queue
    leases = Leases()
    acks = Acknowledger({"ingestion": consumer}, leases, linger_s=0)
    first, lost, last = held_leases(consumer, leases, 3, through=State.REPORTING)
    for lease in (first, lost, last):
        acks.ack(lease)
    leases.move(lost, State.LOST)
    acks.flush()
    assert first.state is State.ACKED and last.state is State.ACKED and lost.state is State.LOST
    assert len(leases) == 0 and calls == [3]


def test_an_ack_that_arrives_while_the_loop_waits_is_deleted_after_its_linger_not_the_wait(queue):
    """The loop's idle wait is a second; an ack notified during it was deleted only when that
    second ran out, twice the documented linger (decision 41)."""
    consumer, calls = queue
    leases = Leases()
    acks = Acknowledger({"ingestion": consumer}, leases, linger_s=0.1)
    (lease,) = held_leases(consumer, leases, 1, through=State.REPORTING)
    started = time.monotonic()
    stepping = threading.Thread(target=acks.step)
    stepping.start()
    time.sleep(0.2)  # the loop is in its idle wait now
    acks.ack(lease)
    stepping.join(timeout=5)
    assert lease.state is State.ACKED
    assert time.monotonic() - started < 0.8, "deleted when the idle second ran out, not after the 0.1 s linger"


def test_the_loop_waiting_is_woken_by_the_first_ack_and_by_the_tenth(queue):
    """Acks given while the loop waits: the first starts the linger (not the loop's idle second),
    the tenth sends the batch at once (not at the linger's end)."""
    consumer, calls = queue
    leases = Leases()
    acks = Acknowledger({"ingestion": consumer}, leases, linger_s=0.3)
    held = held_leases(consumer, leases, 11, through=State.REPORTING)
    loop = threading.Thread(target=acks.step)
    loop.start()
    time.sleep(0.1)  # the loop waits, idle
    began = time.monotonic()
    acks.ack(held[0])
    loop.join(5)
    assert calls == [1] and 0.3 <= time.monotonic() - began < 0.9, "deleted at the linger's end"
    loop = threading.Thread(target=acks.step)
    loop.start()
    time.sleep(0.1)
    began = time.monotonic()
    for lease in held[1:]:
        acks.ack(lease)
    loop.join(5)
    assert calls == [1, BATCH] and time.monotonic() - began < 0.25, "a full batch does not wait for the linger"
    assert len(leases) == 0
