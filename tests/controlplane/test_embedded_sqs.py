"""The embedded SQS server answers visibility changes as AWS SQS does, through boto3 as the
executor calls it: the 12-hour cap counts from the receive, a receipt whose visibility lapsed or
that a later receive replaced changes nothing, and a batch entry SQS refuses fails alone."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

from controlplane import embedded_sqs
from controlplane.queues import EmbeddedSqs, QueueServerDidNotStart, Queues
from executor.consumer import SqsConsumer
from executor.leases import QueueRef

TWELVE_HOURS_S = 43200


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    sqs = EmbeddedSqs()
    try:
        yield sqs.start()
    finally:
        sqs.stop()


@pytest.fixture
def queue(endpoint) -> tuple[Any, str]:
    """A client and a fresh queue (moto's queues are one store per process: each test names its own)."""
    name = uuid.uuid4().hex[:12]
    queues = Queues(region="us-east-1", endpoint_url=endpoint, local=True, installation_id="esqs")
    url = queues.create_pool_queues(name, 30, 3).ingestion_url
    return queues.client, url


def _receive_one(client: Any, url: str, visibility_s: int) -> dict[str, Any]:
    (message,) = client.receive_message(QueueUrl=url, WaitTimeSeconds=5, VisibilityTimeout=visibility_s,
                                        MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"]
    return message


def _visible(client: Any, url: str) -> list[str]:
    return [m["Body"] for m in client.receive_message(QueueUrl=url, WaitTimeSeconds=0, MaxNumberOfMessages=10,
                                                      VisibilityTimeout=0).get("Messages", [])]


def _error(call) -> dict[str, str]:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]


def test_the_twelve_hour_cap_counts_from_the_receive_not_from_the_send(queue):
    """SQS allows a total visibility of 12 hours from the receive. moto counted it from the
    send: a message that waited in the queue before an executor took it (no executor running
    for a while, or a redelivery after a long first attempt) could not be held as long, and the
    extension the executor computed from its receive was refused near the end of a long run."""
    client, url = queue
    client.send_message(QueueUrl=url, MessageBody="waited")
    time.sleep(3)  # in the queue before anyone receives it
    message = _receive_one(client, url, 30)
    client.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                     VisibilityTimeout=TWELVE_HOURS_S - 2)
    assert _visible(client, url) == []
    error = _error(lambda: client.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                                            VisibilityTimeout=TWELVE_HOURS_S))
    assert error["Code"] == "InvalidParameterValue" and "43200" in error["Message"], error


def test_a_batch_entry_over_the_cap_fails_alone_and_the_others_are_extended(queue):
    """ChangeMessageVisibilityBatch answers per entry. An entry over the 12-hour cap failed the
    whole call: the extender took it for an SQS outage and extended none of the ten messages,
    whose running tasks' messages then became visible to other executors."""
    client, url = queue
    client.send_message(QueueUrl=url, MessageBody="near-cap")
    client.send_message(QueueUrl=url, MessageBody="running")
    messages = client.receive_message(QueueUrl=url, WaitTimeSeconds=5, MaxNumberOfMessages=2, VisibilityTimeout=2)["Messages"]
    if len(messages) == 1:
        messages += client.receive_message(QueueUrl=url, WaitTimeSeconds=5, VisibilityTimeout=2)["Messages"]
    by_body = {m["Body"]: m for m in messages}
    time.sleep(1.2)  # a full 12 hours from now is past the cap
    answer = client.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "over", "ReceiptHandle": by_body["near-cap"]["ReceiptHandle"], "VisibilityTimeout": TWELVE_HOURS_S},
        {"Id": "ok", "ReceiptHandle": by_body["running"]["ReceiptHandle"], "VisibilityTimeout": 60}])
    assert [entry["Id"] for entry in answer.get("Successful", [])] == ["ok"], answer
    (failed,) = answer["Failed"]
    assert failed["Id"] == "over" and failed["Code"] == "InvalidParameterValue" and failed["SenderFault"], failed
    time.sleep(1.5)  # past the receive's 2 s: only the message refused an extension is back
    assert _visible(client, url) == ["near-cap"]


def test_a_receipt_whose_visibility_lapsed_does_not_hide_the_message_again(queue):
    """SQS refuses a visibility change for a message no longer in flight ("the receipt handle has
    expired"). moto hid it again: a paused executor's extender, resuming, kept a message every
    other executor should have received hidden for another timeout."""
    client, url = queue
    client.send_message(QueueUrl=url, MessageBody="lapsed")
    message = _receive_one(client, url, 1)
    time.sleep(1.5)
    error = _error(lambda: client.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                                            VisibilityTimeout=60))
    assert error["Code"] == "InvalidParameterValue" and "expired" in error["Message"], error
    assert _visible(client, url) == ["lapsed"]


def test_a_receipt_from_an_earlier_receive_cannot_return_the_message_its_new_holder_runs(queue, endpoint):
    """Once a message is received again, only the latest receipt changes its visibility. moto
    took any earlier one: the first holder giving back a message it had lost (return_now, at a
    stop or a refused claim) made it visible at once while the second holder ran it, and a third
    executor received it."""
    client, url = queue
    client.send_message(QueueUrl=url, MessageBody="taken-over")
    first = _receive_one(client, url, 1)
    time.sleep(1.5)
    second = _receive_one(client, url, 30)
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    stale = SqsConsumer(url, "ingestion", region="us-east-1", endpoint_url=endpoint, visibility_timeout_s=30,
                        local_credentials=True)
    ref = QueueRef(task_class="ingestion", message_id=first["MessageId"], receipt_handle=first["ReceiptHandle"],
                   receive_count=1, first_received_ms=0, received_ms=int(time.time() * 1000))
    with pytest.raises(ClientError) as raised:
        stale.return_now(ref)
    assert raised.value.response["Error"]["Code"] == "InvalidParameterValue"
    refused = stale.extend([("e1", ref)], int(time.time() * 1000))
    assert list(refused) == ["e1"] and refused["e1"].startswith("InvalidParameterValue"), refused
    assert _visible(client, url) == [], "the new holder's message was made visible by an old receipt"
    client.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=0)
    assert _visible(client, url) == ["taken-over"]


def test_a_message_given_back_is_received_at_once_by_a_waiting_long_poll(queue, endpoint):
    """Found by review: a message given back (VisibilityTimeout 0: an executor's return_now at a
    stop or a refused claim) woke no waiting long poll, which saw it only at its next scan, up
    to a second later; on SQS a long poll returns a message as soon as it is available."""
    client, url = queue
    client.send_message(QueueUrl=url, MessageBody="given back")
    held = _receive_one(client, url, 300)
    poller = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="local",
                          aws_secret_access_key="local")
    poller.get_queue_url(QueueName=url.rsplit("/", 1)[1])  # its connection made before the poll
    answered: list[tuple[float, list[str]]] = []

    def poll() -> None:
        got = poller.receive_message(QueueUrl=url, WaitTimeSeconds=10).get("Messages", [])
        answered.append((time.monotonic(), [m["Body"] for m in got]))

    waiting = threading.Thread(target=poll)
    waiting.start()
    time.sleep(0.3)  # the poll is waiting in the server, its next scan most of a second away
    given_back = time.monotonic()
    client.change_message_visibility(QueueUrl=url, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=0)
    waiting.join(timeout=15)
    [(at, bodies)] = answered
    assert bodies == ["given back"]
    assert at - given_back < 0.4, f"the waiting poll returned the message {at - given_back:.2f} s after it was given back"


def test_a_receipt_that_never_existed_is_refused_as_invalid(queue):
    """`datahub-executor check` probes the queue with a receipt that cannot exist."""
    client, url = queue
    error = _error(lambda: client.change_message_visibility(QueueUrl=url, ReceiptHandle="datahub-executor-check",
                                                            VisibilityTimeout=0))
    assert error["Code"] == "ReceiptHandleIsInvalid", error


@pytest.mark.parametrize("entries, code", [
    ([], "AWS.SimpleQueueService.EmptyBatchRequest"),
    ([{"Id": str(i), "ReceiptHandle": f"r{i}", "VisibilityTimeout": 1} for i in range(11)],
     "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
    ([{"Id": "same", "ReceiptHandle": "r1", "VisibilityTimeout": 1}, {"Id": "same", "ReceiptHandle": "r2", "VisibilityTimeout": 1}],
     "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
    ([{"Id": "a b", "ReceiptHandle": "r1", "VisibilityTimeout": 1}], "AWS.SimpleQueueService.InvalidBatchEntryId"),
    ([{"Id": "x" * 81, "ReceiptHandle": "r1", "VisibilityTimeout": 1}], "AWS.SimpleQueueService.InvalidBatchEntryId"),
])
def test_a_visibility_batch_sqs_would_refuse_whole_is_refused(queue, entries, code):
    client, url = queue
    assert _error(lambda: client.change_message_visibility_batch(QueueUrl=url, Entries=entries))["Code"] == code


@pytest.mark.parametrize("attributes", [
    {"VisibilityTimeout": "43201"}, {"VisibilityTimeout": "-1"}, {"VisibilityTimeout": "soon"},
    {"MessageRetentionPeriod": "59"}, {"ReceiveMessageWaitTimeSeconds": "21"}, {"DelaySeconds": "901"},
    {"RedrivePolicy": "not json"}, {"RedrivePolicy": {"maxReceiveCount": 0}}, {"RedrivePolicy": {"maxReceiveCount": "x"}},
])
def test_a_queue_attribute_sqs_refuses_is_refused_with_sqs_s_error_and_changes_nothing(queue, attributes):
    """Found by review: moto took what SQS refuses with InvalidAttributeValue (a visibility
    timeout over 12 hours or negative, a maxReceiveCount of 0, which dead-letters every message
    before any receive), and failed on a value that is not a number or a policy that is not
    JSON: HTTP 500, retried by botocore, then a ClientError with code "500"."""
    client, url = queue
    before = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    if isinstance(attributes.get("RedrivePolicy"), dict):
        policy = json.loads(before["RedrivePolicy"]) | attributes["RedrivePolicy"]
        attributes = {"RedrivePolicy": json.dumps(policy)}
    with pytest.raises(client.exceptions.InvalidAttributeValue):
        client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    after = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert {name: after[name] for name in before if "Timestamp" not in name} == \
        {name: before[name] for name in before if "Timestamp" not in name}
    name = uuid.uuid4().hex[:12]
    with pytest.raises(client.exceptions.InvalidAttributeValue):
        client.create_queue(QueueName=name, Attributes=attributes)
    assert client.list_queues(QueueNamePrefix=name).get("QueueUrls", []) == []


def test_a_negative_visibility_timeout_is_refused(queue):
    """It made the message visible at once; SQS refuses it, as the batch call here already did."""
    client, url = queue
    client.send_message(QueueUrl=url, MessageBody="held")
    message = _receive_one(client, url, 30)
    error = _error(lambda: client.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                                            VisibilityTimeout=-5))
    assert error["Code"] == "InvalidParameterValue", error
    assert _visible(client, url) == [], "the message stays in flight"


def test_a_receive_with_a_negative_visibility_timeout_is_refused(queue):
    """The message was handed out and visible again at once (taken as 0): a client's bug that
    SQS reports became silent redeliveries."""
    client, url = queue
    client.send_message(QueueUrl=url, MessageBody="held")
    error = _error(lambda: client.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=-1))
    assert error["Code"] == "InvalidParameterValue", error
    assert _visible(client, url) == ["held"], "nothing was handed out by the refusal"


@pytest.mark.parametrize("entries, code", [
    ([{"Id": str(i), "ReceiptHandle": f"r{i}"} for i in range(11)], "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
    ([{"Id": "same", "ReceiptHandle": "r1"}, {"Id": "same", "ReceiptHandle": "r2"}],
     "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
    ([{"Id": "é", "ReceiptHandle": "r1"}], "AWS.SimpleQueueService.InvalidBatchEntryId"),
    ([{"Id": "x" * 81, "ReceiptHandle": "r1"}], "AWS.SimpleQueueService.InvalidBatchEntryId"),
])
def test_a_delete_batch_sqs_would_refuse_whole_is_refused(queue, entries, code):
    client, url = queue
    assert _error(lambda: client.delete_message_batch(QueueUrl=url, Entries=entries))["Code"] == code


def test_a_delete_batch_naming_one_receipt_twice_deletes_every_entry(queue):
    """Distinct Ids, one receipt given twice: moto refused the whole batch, so none of its
    messages went (each came back, a redelivery); SQS deletes each entry alone."""
    client, url = queue
    for body in ("first", "second"):
        client.send_message(QueueUrl=url, MessageBody=body)
    received = client.receive_message(QueueUrl=url, WaitTimeSeconds=5, MaxNumberOfMessages=10,
                                      VisibilityTimeout=1)["Messages"]
    while len(received) < 2:
        received += client.receive_message(QueueUrl=url, WaitTimeSeconds=5, VisibilityTimeout=1)["Messages"]
    first, second = (m["ReceiptHandle"] for m in received)
    answer = client.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "ReceiptHandle": first}, {"Id": "b", "ReceiptHandle": first}, {"Id": "c", "ReceiptHandle": second}])
    assert sorted(entry["Id"] for entry in answer["Successful"]) == ["a", "b", "c"] and not answer.get("Failed")
    time.sleep(1.5)  # past the receive's visibility timeout: a message not deleted would be back
    assert _visible(client, url) == []



def test_a_queue_server_that_cannot_bind_says_so_instead_of_waiting_for_ever():
    """moto's start waited without limit for a ready event its server thread never set when the
    bind failed: a control plane whose queue port was taken between its check and the bind hung
    there, deaf to Ctrl-C. The bind is the start's own now, and its failure is said at once."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    outcome: list[BaseException | str] = []

    def start() -> None:
        try:
            outcome.append(EmbeddedSqs(taken.getsockname()[1]).start())
        except BaseException as exc:
            outcome.append(exc)

    try:
        starting = threading.Thread(target=start, daemon=True)
        starting.start()
        starting.join(20)
        assert not starting.is_alive(), "still waiting for a server that cannot bind"
        assert len(outcome) == 1 and isinstance(outcome[0], QueueServerDidNotStart), outcome
        assert "is the port taken?" in str(outcome[0])
    finally:
        taken.close()


def _moto_queue(url: str):
    """moto's own record of the queue at URL (the server runs in this process)."""
    return sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].queues[url.rsplit("/", 1)[1]]


def test_a_message_past_the_queues_retention_period_is_not_received(queue):
    """The retention check now reads the one attribute it needs (a guard: moto's answer kept)."""
    client, url = queue
    client.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "60"})
    client.send_message(QueueUrl=url, MessageBody="expired")
    [message] = _moto_queue(url)._messages
    message.sent_timestamp -= 61_000  # sent 61 s ago
    assert _visible(client, url) == []
    client.send_message(QueueUrl=url, MessageBody="fresh")
    assert _visible(client, url) == ["fresh"]


def test_a_message_past_the_queues_retention_period_is_deleted_and_hides_no_message_behind_it(queue):
    """Found by review: SQS deletes a message its queue has kept for the retention period. moto
    only skipped it, after marking it received, and ended the receive there: a receive answered
    nothing while a fresh message waited behind it (the control plane's look at a dead-letter
    queue took that for an empty queue and stopped until its next round; with VisibilityTimeout
    0 no receive ever got past it), and the message stayed in the server's memory for good."""
    client, url = queue
    client.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "60"})
    client.send_message(QueueUrl=url, MessageBody="expired")
    [message] = _moto_queue(url)._messages
    message.sent_timestamp -= 61_000  # sent 61 s ago
    client.send_message(QueueUrl=url, MessageBody="fresh")
    got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                 VisibilityTimeout=10).get("Messages", [])
    assert [m["Body"] for m in got] == ["fresh"], "the expired message hid the fresh one from the receive"
    assert [m.body for m in _moto_queue(url)._messages] == ["fresh"], "the expired message is still kept"


def test_the_receipts_of_deleted_messages_are_kept_within_a_bound(queue, monkeypatch):
    """moto kept every receipt of every deleted message for the life of the process (about 300
    bytes a task). A delete with a recent one still succeeds; one older than the bound is
    refused as invalid, as SQS may refuse a receipt it no longer knows."""
    monkeypatch.setattr(embedded_sqs, "DELETED_RECEIPTS_KEPT", 20)
    client, url = queue
    receipts = []
    for index in range(30):
        client.send_message(QueueUrl=url, MessageBody=str(index))
        receipts.append(_receive_one(client, url, 30)["ReceiptHandle"])
        client.delete_message(QueueUrl=url, ReceiptHandle=receipts[-1])

    assert len(_moto_queue(url).deleted_messages) <= 20
    client.delete_message(QueueUrl=url, ReceiptHandle=receipts[-1])  # deleting again: still fine
    assert _error(lambda: client.delete_message(QueueUrl=url, ReceiptHandle=receipts[0]))["Code"] == \
        "ReceiptHandleIsInvalid"


def test_a_message_received_again_and_again_keeps_its_recent_receipts_only(endpoint, monkeypatch):
    """Found by review: moto kept every receipt a message was ever given. A dead-letter queue's
    message stays for the retention period (14 days) and the control plane looks at it every
    30 s, a receive each: ~40,000 receipts, ~10 MB a message, all of them copied at each
    receive. The latest ones are kept; a receipt older than those is refused as invalid, as
    SQS may refuse one it no longer knows."""
    monkeypatch.setattr(embedded_sqs, "OLD_RECEIPTS_KEPT", 5, raising=False)
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="local",
                          aws_secret_access_key="local")
    url = client.create_queue(QueueName=uuid.uuid4().hex[:12])["QueueUrl"]  # a dead-letter queue: no redrive
    client.send_message(QueueUrl=url, MessageBody="dead-lettered")
    receipts = [_receive_one(client, url, 0)["ReceiptHandle"] for _ in range(30)]
    [message] = _moto_queue(url)._messages
    assert len(message.all_receipt_handles) <= 6, "every receipt the message was given is kept"
    error = _error(lambda: client.change_message_visibility(QueueUrl=url, ReceiptHandle=receipts[-2],
                                                            VisibilityTimeout=60))
    assert error["Code"] == "InvalidParameterValue", error  # a recent earlier receipt: known, and refused
    assert _error(lambda: client.delete_message(QueueUrl=url, ReceiptHandle=receipts[0]))["Code"] == \
        "ReceiptHandleIsInvalid"
    client.delete_message(QueueUrl=url, ReceiptHandle=receipts[-1])
    assert _moto_queue(url)._messages == []


def test_the_server_finds_its_service_once_per_host_not_by_scanning_mocks_package_at_each_request(monkeypatch):
    """moto listed its package directory and stat'ed each of its ~200 entries at every request,
    under a lock all requests take, to find which service a request is for."""
    import moto.backends

    listings = []
    real = moto.backends.list_of_moto_modules

    def counted():
        listings.append(1)
        return real()

    monkeypatch.setattr(moto.backends, "list_of_moto_modules", counted)
    sqs = EmbeddedSqs()
    url = sqs.start()
    try:
        client = boto3.client("sqs", region_name="us-east-1", endpoint_url=url, aws_access_key_id="local",
                              aws_secret_access_key="local")
        queue_url = client.create_queue(QueueName=f"once-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        for _ in range(20):
            client.send_message(QueueUrl=queue_url, MessageBody="{}")
        assert client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"]["ApproximateNumberOfMessages"] == "20"
    finally:
        sqs.stop()
    assert len(listings) <= 2, f"moto's package was listed {len(listings)} times for 22 requests"
