"""services.Intake on a real SQS-protocol server: how much it asks for, and what it reports."""
from __future__ import annotations

import threading

import pytest

from executor.leases import Leases
from executor.ledger import Ledger
from executor.operability import ExecutorMetrics
from executor.services import Intake, OutageLog


@pytest.fixture
def consumer(sqs_queue):
    return sqs_queue(visibility_timeout_s=30, prefix="intake")


def test_each_receive_is_measured_in_the_receive_latency_histogram(consumer):
    """/metrics has datahub_executor_sqs_receive_seconds, which nothing observed: it stayed
    empty however many receives the intakes made."""
    consumer.client.send_message(QueueUrl=consumer.queue_url,
                                 MessageBody='{"v": 1, "execution_id": "exe_1", "task": "RUN_INGEST", "pool_id": "p"}')
    metrics = ExecutorMetrics()
    offered = []
    intake = Intake(consumer, Ledger("ingestion", 2), Leases(), offered.append, threading.Event(), OutageLog(),
                    metrics=metrics)
    while not offered:
        intake.step()
    assert metrics.registry.get_sample_value("datahub_executor_sqs_receive_seconds_count") >= 1
