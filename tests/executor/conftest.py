"""A real SQS-protocol server for the executor's unit tests, and a fresh queue on it per test."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from controlplane.queues import EmbeddedSqs
from executor.consumer import SqsConsumer


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
