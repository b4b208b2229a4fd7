"""A real SQS-protocol server for the executor's unit tests, and a fresh queue on it per test."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from controlplane.queues import EmbeddedSqs
from executor.consumer import SqsConsumer
from executor.leases import Lease, Leases, State


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    server = EmbeddedSqs()
    yield server.start()
    server.stop()


@pytest.fixture
def sqs_queue(sqs_endpoint: str) -> Iterator[Callable[..., SqsConsumer]]:
    """make(visibility_timeout_s, prefix): an ingestion consumer on a new queue, deleted after the test."""
    made: list[SqsConsumer] = []

    def make(visibility_timeout_s: int, prefix: str) -> SqsConsumer:
        consumer = SqsConsumer("", "ingestion", region="us-east-1", endpoint_url=sqs_endpoint,
                               visibility_timeout_s=visibility_timeout_s, local_credentials=True)
        consumer.queue_url = consumer.client.create_queue(QueueName=f"{prefix}-{time.monotonic_ns()}")["QueueUrl"]
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.client.delete_queue(QueueUrl=consumer.queue_url)


def held_leases(consumer: SqsConsumer, leases: Leases, count: int, *, through: State) -> list[Lease]:
    """COUNT messages sent to CONSUMER's queue and received, each lease moved from CLAIMED on as
    far as THROUGH (RUNNING: what the visibility extender serves; REPORTING: what acks delete)."""
    for index in range(count):
        consumer.client.send_message(QueueUrl=consumer.queue_url,
                                     MessageBody=f'{{"v": 1, "execution_id": "exe_{index}", "task": "RUN_INGEST", '
                                                 f'"pool_id": "p"}}')
    path = (State.CLAIMED, State.ADMITTED, State.RUNNING, State.REPORTING)
    held = []
    while len(held) < count:
        for message in consumer.receive(10, wait_s=1):
            lease, _ = leases.receive(message.body.execution_id, message.ref)
            for state in path[: path.index(through) + 1]:
                leases.move(lease, state)
            held.append(lease)
    return held
