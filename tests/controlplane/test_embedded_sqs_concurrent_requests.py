"""The embedded SQS server serves concurrent requests as SQS does: moto's backend assumes one
request at a time, and the server runs each connection on a thread of its own. Eight receivers take and delete
messages of one queue at once, through boto3 with retries off (a 500 is seen, not retried); the
switch interval is shortened so that the threads interleave inside moto's receive, as they do
now and then under a busy executor."""
from __future__ import annotations

import collections
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from controlplane.queues import EmbeddedSqs

MESSAGES = 600
RECEIVERS = 8


@pytest.fixture
def endpoint() -> Iterator[str]:
    sqs = EmbeddedSqs()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # the server's threads are this process's
    try:
        yield sqs.start()
    finally:
        sys.setswitchinterval(interval)
        sqs.stop()


def _client(endpoint: str):
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="local",
                        aws_secret_access_key="local", config=Config(retries={"mode": "standard", "max_attempts": 1}))


def test_concurrent_receivers_get_each_message_once_and_every_delete_is_taken(endpoint):
    setup = _client(endpoint)
    url = setup.create_queue(QueueName=uuid.uuid4().hex[:12], Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    for start in range(0, MESSAGES, 10):
        setup.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"}
                                                        for i in range(10)])
    clients = [_client(endpoint) for _ in range(RECEIVERS)]  # made here: client creation is not thread-safe
    delivered: list[str] = []
    errors: list[str] = []

    def receive_and_delete(client) -> None:
        held: list[dict] = []  # the previous batch, deleted after the next receive: many in flight at once
        while True:
            try:
                got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(f"receive: {exc}")
                continue
            delivered.extend(message["Body"] for message in got)
            for message in held:
                try:
                    client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"delete: {exc}")
            if not got:
                return
            held = got

    threads = [threading.Thread(target=receive_and_delete, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    twice = [body for body, n in collections.Counter(delivered).items() if n > 1]
    assert not errors, errors[:3]
    assert not twice, f"{len(twice)} messages delivered to two receivers while invisible (visibility 300 s)"
    assert sorted(delivered) == sorted(f"m{i}" for i in range(MESSAGES))


def test_a_long_poll_does_not_hold_other_requests_up(endpoint):
    client, poller = _client(endpoint), _client(endpoint)
    url = client.create_queue(QueueName=uuid.uuid4().hex[:12])["QueueUrl"]
    answered: list[float] = []
    waiting = threading.Thread(target=lambda: answered.append(
        len(poller.receive_message(QueueUrl=url, WaitTimeSeconds=3).get("Messages", []))))
    waiting.start()
    time.sleep(0.5)  # the poll is waiting in the server
    client.send_message(QueueUrl=url, MessageBody="wake")  # would wait the poll's 3 s out behind a held lock
    waiting.join(timeout=10)
    assert answered == [1]
