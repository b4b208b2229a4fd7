"""services.Intake on a real SQS-protocol server: how much it asks for, and what it reports."""
from __future__ import annotations

import threading

import pytest

from executor.leases import Leases, QueueRef, State
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


def test_a_receive_asks_for_the_slots_of_results_being_reported_too(consumer):
    """Three slots: one running task, one whose process has ended and whose result is being
    reported, one free. The receive asks for two (decision 87): the second slot is free within a
    call, and one receive for both costs the master less than two."""
    for number in range(3):
        consumer.client.send_message(QueueUrl=consumer.queue_url, MessageBody=(
            f'{{"v": 1, "execution_id": "exe_{number}", "task": "RUN_INGEST", "pool_id": "p"}}'))
    ledger, leases = Ledger("ingestion", 3), Leases()
    for name, state in (("exe_running", State.RUNNING), ("exe_reporting", State.REPORTING)):
        lease, _ = leases.receive(name, QueueRef("ingestion", f"m-{name}", "h", 1, 0))
        leases.move(lease, State.CLAIMED)
        assert ledger.acquire(name, ledger.default_weight)
        leases.move(lease, State.ADMITTED, weight=ledger.default_weight, task_class="ingestion")
        leases.move(lease, State.RUNNING)
        if state is State.REPORTING:
            leases.move(lease, State.REPORTING)
    offered = []
    intake = Intake(consumer, ledger, leases, offered.append, threading.Event(), OutageLog())
    intake.step()
    assert len(offered) == 2, [m.body.execution_id for m in offered]
