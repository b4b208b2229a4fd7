"""services.VisibilityExtender on a real SQS-protocol server: every held message is extended,
an outage it notices ends when SQS answers it again, and a receipt SQS refuses is reported once."""
from __future__ import annotations

import socket
import time
from dataclasses import replace
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config
from loguru import logger

from executor.leases import Leases, State
from executor.master import Master
from executor.services import OutageLog, VisibilityExtender
from executor.settings import load_settings
from vocabulary.message import encode

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


def test_a_message_given_back_while_the_extender_is_extending_it_is_not_hidden_again(sqs_queue):
    """The extender reads the held leases, then calls SQS. A runner whose claim the control plane
    deferred gave its message back in between, to be received again in a few seconds, and the
    extension, read before, then hid it for a whole visibility timeout: the claim was not asked
    again in time (nor, at a stop, could another executor run the work until then)."""
    import threading
    from types import SimpleNamespace

    from executor.controlplane_client import ClaimDeferred
    from executor.runner import RunnerServices, TaskRunner

    consumer = sqs_queue(visibility_timeout_s=60, prefix="give-back")
    leases = Leases()
    consumer.client.send_message(QueueUrl=consumer.queue_url, MessageBody=(
        '{"v": 1, "execution_id": "exe_back", "task": "RUN_INGEST", "pool_id": "p"}'))
    (message,) = consumer.receive(1, wait_s=5)
    lease, _ = leases.receive("exe_back", message.ref)
    deferring = SimpleNamespace(claim=lambda execution_id, **_: ClaimDeferred(2.0, "its holder may be gone soon"))
    services = RunnerServices(
        settings=SimpleNamespace(executor_id="executor-1", pool_id="p"), client=deferring,
        consumers={"ingestion": consumer}, acks=None, ledgers={}, leases=leases, sandbox=None, prepare=None,
        logs=None, task_logs=None, metrics=None, instance_id="i1", private_tmp=False,
        task_users=SimpleNamespace(release=lambda execution_id: None),
        stopping=threading.Event(), kill_now=threading.Event())
    runner = TaskRunner(lease, services)
    extending, given_back = threading.Event(), threading.Event()
    giving_back = threading.Thread(target=lambda: (runner.run(), given_back.set()))

    def slow_extension(**_) -> None:  # a slow SQS answer: the runner gives the message back meanwhile
        extending.set()
        given_back.wait(3)

    consumer.client.meta.events.register("before-send.sqs.ChangeMessageVisibilityBatch", slow_extension)
    extender = VisibilityExtender({"ingestion": consumer}, leases, OutageLog())
    extension = threading.Thread(target=extender.step)
    extension.start()
    assert extending.wait(10)
    giving_back.start()
    extension.join(timeout=30)
    giving_back.join(timeout=30)
    assert given_back.is_set() and len(leases) == 0
    again = consumer.receive(1, wait_s=20)  # due after 2 s; hidden again, after 60
    assert [m.ref.message_id for m in again] == [message.ref.message_id], "the given-back message was hidden again"


def test_a_one_second_visibility_timeout_is_extended_before_it_lapses(sqs_queue):
    """A pool may set a 1 s timeout. The extender's period had a 1 s floor, so each extension
    came as the message lapsed; SQS refuses a lapsed receipt, and the running task's message was
    received again, toward the dead-letter queue (the poison-message fault test lost good runs
    to the DLQ on a loaded machine)."""
    consumer = sqs_queue(visibility_timeout_s=1, prefix="onesecond")
    leases = Leases()
    held_leases(consumer, leases, 1, through=State.RUNNING)
    extender = VisibilityExtender({"ingestion": consumer}, leases, OutageLog())
    until = time.monotonic() + 3
    while time.monotonic() < until:
        time.sleep(extender.step())
    assert consumer.receive(10, wait_s=0) == [], "the held message lapsed between extensions"


def test_a_message_sent_in_place_of_one_sqs_lost_is_kept_by_the_holder_not_deleted(consumer, tmp_path):
    """An embedded queue server that restarts loses the message of a run that goes on running,
    and once the holder has been silent for a visibility timeout the control plane sends one in
    its place (decision 68). A holder that then came back and received it took it for a
    duplicate and deleted it: had it crashed after, nothing was left for another executor, and
    the run ended EXECUTOR_LOST. Now the holder, whose own message SQS refuses to extend, takes
    the new one in its place: extended while the task runs, and there again once it stops."""
    leases = Leases()
    (lease,) = held_leases(consumer, leases, 1, through=State.RUNNING)
    consumer.client.delete_message(QueueUrl=consumer.queue_url, ReceiptHandle=lease.message.receipt_handle)  # lost
    extender = VisibilityExtender({"ingestion": consumer}, leases, OutageLog())
    extender.step()  # refused
    replacement = consumer.client.send_message(
        QueueUrl=consumer.queue_url,
        MessageBody=encode(lease.execution_id, "RUN_INGEST", "p", int(time.time() * 1000)))["MessageId"]
    master = Master(load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "unused",
                                   "DATAHUB_EXECUTOR_POOL_ID": "p", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)}))
    master.leases = leases
    master.services = SimpleNamespace(consumers={"ingestion": consumer})
    (received,) = consumer.receive(1, wait_s=2)
    master._offer(received)
    assert leases.current_message(lease).message_id == replacement
    for _ in range(3):  # the task runs on: the new message is extended, not seen again
        extender.step()
        assert consumer.receive(1, wait_s=1) == [], "the message in the lost one's place was visible while held"
    # The holder dies: the message comes back for another executor.
    again = []
    deadline = time.monotonic() + 10
    while not again and time.monotonic() < deadline:
        again = consumer.receive(1, wait_s=1)
    assert [m.ref.message_id for m in again] == [replacement], "nothing came back once the holder was gone"
