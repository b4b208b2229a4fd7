"""services.VisibilityExtender on a real SQS-protocol server: every held message is extended,
an outage it notices ends when SQS answers it again, and a receipt SQS refuses is reported once."""
from __future__ import annotations

import socket
import time
from dataclasses import replace

import boto3
import pytest
from botocore.config import Config
from loguru import logger

from executor.leases import Leases, State
from executor.services import OutageLog, VisibilityExtender

from .conftest import held_leases


@pytest.fixture
def consumer(sqs_queue):
    return sqs_queue(visibility_timeout_s=2, prefix="visibility")


def unreachable_sqs_client():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=1))


def test_many_held_messages_stay_invisible_past_their_timeout(consumer):
    leases = Leases()
    held_leases(consumer, leases, 23, through=State.RUNNING)  # three ChangeMessageVisibilityBatch calls
    extender = VisibilityExtender({"ingestion": consumer}, leases, OutageLog())
    for _ in range(3):
        extender.step()
        time.sleep(1.0)
    assert consumer.receive(10, wait_s=1) == [], "a held message became visible again"


def test_an_outage_the_extender_noticed_ends_when_sqs_answers_it_again(consumer):
    """With every slot busy the intake does not call SQS, so only the extender can see it is
    back: it never said so, and the heartbeat reported SQS unreachable until a slot freed."""
    leases = Leases()
    held_leases(consumer, leases, 1, through=State.RUNNING)
    outage = OutageLog()
    extender = VisibilityExtender({"ingestion": consumer}, leases, outage)
    live = consumer.client
    consumer.client = unreachable_sqs_client()
    extender.step()
    assert outage.is_down
    consumer.client = live
    extender.step()
    assert not outage.is_down, "SQS answered the extender, yet the outage was still reported"


def test_a_receipt_sqs_refuses_is_reported_once_not_every_turn(consumer):
    """A receipt SQS refuses stays refused (its message was deleted, or received again by
    someone else): warning about it on every turn (a third of the visibility timeout) for the
    rest of a long task buried the log."""
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(str(message)), level="WARNING")
    try:
        leases = Leases()
        gone, kept = held_leases(consumer, leases, 2, through=State.RUNNING)
        consumer.client.delete_message(QueueUrl=consumer.queue_url, ReceiptHandle=gone.message.receipt_handle)
        extender = VisibilityExtender({"ingestion": consumer}, leases, OutageLog())
        for _ in range(3):
            extender.step()
    finally:
        logger.remove(sink)
    refused = [w for w in warnings if "visibility not extended" in w]
    assert len(refused) == 1 and "ReceiptHandleIsInvalid" in refused[0], warnings


def test_a_redelivered_message_first_received_twelve_hours_ago_is_still_held(consumer):
    """SQS's 12-hour cap counts from the receive that gave the receipt. The extender counted it
    from the message's first receive ever (ApproximateFirstReceiveTimestamp): for a message
    redelivered after a long first attempt it found no time left and set the visibility to 0,
    making the message of a running task visible at once, on every turn."""
    leases = Leases()
    (lease,) = held_leases(consumer, leases, 1, through=State.RUNNING)
    twelve_hours_ago_ms = int(time.time() * 1000) - 12 * 3600 * 1000
    lease.message = replace(lease.message, first_received_ms=twelve_hours_ago_ms)  # as SQS reports a redelivery
    VisibilityExtender({"ingestion": consumer}, leases, OutageLog()).step()
    assert consumer.receive(10, wait_s=1) == [], "the running task's message was made visible"
