"""What the intake of one queue counts as pending when a task arrives on the other class's queue,
on a real SQS-protocol server: a claimed task waits for its own class's ledger, and counts there."""
from __future__ import annotations

import threading
import time

from executor.controlplane_client import Claimed
from executor.leases import Leases, QueueRef, State
from executor.ledger import Ledger
from executor.services import Intake, OutageLog
from vocabulary.tasks import RUN_MONITOR


def test_a_monitor_task_delivered_on_the_ingestion_queue_does_not_hold_an_ingestion_slot(sqs_queue):
    """A monitor task received on the ingestion queue and claimed waits for the monitors ledger,
    full here. It was counted as pending for ingestion, its queue's class: with one ingestion
    slot, free, the ingestion intake received nothing for as long as the monitor task waited
    (behind monitors that may run for hours)."""
    consumer = sqs_queue(visibility_timeout_s=30, prefix="pending-class")
    consumer.client.send_message(QueueUrl=consumer.queue_url, MessageBody=(
        '{"v": 1, "execution_id": "exe_ingest", "task": "RUN_INGEST", "pool_id": "p"}'))
    ingestion, monitors, leases = Ledger("ingestion", 1), Ledger("monitors", 1), Leases()
    assert monitors.acquire("exe_monitor_running", monitors.default_weight)
    stray, _ = leases.receive("exe_monitor_stray", QueueRef("ingestion", "m-stray", "h", 1, 0))
    leases.move(stray, State.CLAIMED, claim=Claimed(execution_id="exe_monitor_stray", lease="l", task=RUN_MONITOR,
                                                    pool_id="p", args={}, ingest_token="t"))
    stop = threading.Event()
    waiting = threading.Thread(target=monitors.acquire, args=("exe_monitor_stray", monitors.default_weight),
                               kwargs={"cancelled": stop})
    waiting.start()
    try:
        deadline = time.monotonic() + 10
        while monitors.snapshot().waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert monitors.snapshot().waiting == 1, "the stray monitor task is not waiting for the monitors ledger"
        offered = []
        intake = Intake(consumer, ingestion, leases, offered.append, threading.Event(), OutageLog())
        intake.step()
        assert [m.body.execution_id for m in offered] == ["exe_ingest"], "the free ingestion slot received nothing"
        assert monitors.receive_capacity(leases.pending("monitors")) == 0
    finally:
        stop.set()
        monitors.wake()
        waiting.join(10)
