"""Master._stop: what the final heartbeat says, and what is deleted before it, with a real
SQS-protocol server, a real HTTP server for the control plane and the master's own loops."""
from __future__ import annotations

import json
import socket
import threading
import time

from controlplane.queues import EmbeddedSqs
from executor.acks import Acknowledger
from executor.consumer import SqsConsumer
from executor.controlplane_client import ControlPlaneClient
import executor.master as master_module
from executor.leases import QueueRef, State
from executor.master import Master
from executor.services import Heartbeat, Loop
from executor.settings import load_settings

from .test_heartbeat import StatusServer


def give_heartbeat(master: Master, client: ControlPlaneClient, gms_url: str) -> None:
    """The master's heartbeat, and its final one, through CLIENT, as _start wires them."""
    master.final_client = client
    master.heartbeat = Heartbeat(client=client, executor_id="exec-1", instance_id="i1", pool_id="p", interval_s=30,
                                 leases=master.leases, ledgers=master.ledgers, state=lambda: master.state,
                                 sandbox=dict, health=dict, log_delivery=False,
                                 started_at="2026-01-01T00:00:00+00:00", gms_url=gms_url)


def a_queue_with_one_message(endpoint: str, name: str, pool_id: str = "p") -> SqsConsumer:
    """A consumer of a new queue NAME-... on the SQS server at ENDPOINT, holding one message of
    ours (execution exe_1 of POOL_ID)."""
    consumer = SqsConsumer("", "ingestion", region="us-east-1", endpoint_url=endpoint, visibility_timeout_s=60,
                           local_credentials=True)
    consumer.queue_url = consumer.client.create_queue(QueueName=f"{name}-{time.monotonic_ns()}")["QueueUrl"]
    consumer.client.send_message(QueueUrl=consumer.queue_url, MessageBody=json.dumps(
        {"v": 1, "execution_id": "exe_1", "task": "RUN_INGEST", "pool_id": pool_id}))
    return consumer


def test_a_delete_in_flight_at_stop_ends_before_the_final_heartbeat(tmp_path):
    """The stop flushed what the acknowledger still held, but not the batch its thread was
    deleting at that moment: the STOPPED heartbeat listed that execution as running, and the
    process could exit with the delete unsent (a redelivery for the next executor)."""
    sqs = EmbeddedSqs()
    endpoint = sqs.start()
    try:
        with StatusServer() as server:
            consumer = a_queue_with_one_message(endpoint, "stop")
            deleting = threading.Event()

            def slow_delete(**_) -> None:
                deleting.set()
                time.sleep(2.0)  # a slow SQS answer, while the master stops

            consumer.client.meta.events.register("before-send.sqs.DeleteMessageBatch", slow_delete)
            settings = load_settings({"DATAHUB_GMS_URL": server.gms_url, "DATAHUB_GMS_TOKEN": "t",
                                      "DATAHUB_EXECUTOR_POOL_ID": "p", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)})
            master = Master(settings)
            (message,) = consumer.receive(1, wait_s=1)
            lease, _ = master.leases.receive("exe_1", message.ref)
            for state in (State.CLAIMED, State.ADMITTED, State.RUNNING, State.REPORTING):
                master.leases.move(lease, state)
            master.acks = Acknowledger({"ingestion": consumer}, master.leases, linger_s=0)
            sent: list[dict] = []
            client = ControlPlaneClient(server.gms_url, "t")
            recording = client.heartbeat
            client.heartbeat = lambda executor_id, status, properties: (sent.append(properties),
                                                                        recording(executor_id, status, properties))
            give_heartbeat(master, client, server.gms_url)
            master._stop_loops = threading.Event()
            master._threads = [Loop("acks", master.acks.step, master._stop_loops)]
            master._threads[0].start()
            master.acks.ack(lease)
            assert deleting.wait(10), "the acknowledger's thread is deleting"
            master._stop(abandoned=[])
            attributes = consumer.client.get_queue_attributes(QueueUrl=consumer.queue_url,
                                                              AttributeNames=["All"])["Attributes"]
            left = int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
            final = sent[-1]
            assert final["state"] == "STOPPED"
            assert json.loads(final["runningExecutions"]) == [], "the final list named a finished execution"
            assert left == 0, "the message was not deleted when the stop ended"
    finally:
        sqs.stop()


def test_an_sqs_that_never_answers_does_not_hold_the_stop(tmp_path, monkeypatch):
    """After a second SIGTERM (decision 60: an exit within seconds), the last deletes were
    flushed on the main thread with botocore's defaults, 60 s to read and three attempts: an
    SQS endpoint that accepts connections and never answers held the exit for three minutes."""
    monkeypatch.setattr(master_module, "ACKS_JOIN_S", 1.0)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:  # connections taken and never answered, until the test closes the socket
        try:
            while True:
                held.append(hole.accept()[0])
        except OSError:
            pass

    accepting = threading.Thread(target=accept, daemon=True)
    accepting.start()
    endpoint = f"http://127.0.0.1:{hole.getsockname()[1]}"
    try:
        with StatusServer() as server:
            settings = load_settings({"DATAHUB_GMS_URL": server.gms_url, "DATAHUB_GMS_TOKEN": "t",
                                      "DATAHUB_EXECUTOR_POOL_ID": "p", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)})
            master = Master(settings)
            consumer = SqsConsumer(f"{endpoint}/q", "ingestion", region="us-east-1", endpoint_url=endpoint,
                                   visibility_timeout_s=60, local_credentials=True)
            lease, _ = master.leases.receive("exe_1", QueueRef("ingestion", "m1", "h1", 1, 0))
            for state in (State.CLAIMED, State.ADMITTED, State.RUNNING, State.REPORTING):
                master.leases.move(lease, state)
            master.acks = Acknowledger({"ingestion": consumer}, master.leases)
            client = ControlPlaneClient(server.gms_url, "t")
            give_heartbeat(master, client, server.gms_url)
            master._stop_loops = threading.Event()
            master._threads = []
            master._signals = 2
            master.acks.ack(lease)  # a killed task's result, recorded in the last seconds
            began = time.monotonic()
            stopping = threading.Thread(target=master._stop, args=([],), daemon=True)
            stopping.start()
            stopping.join(timeout=30)
            assert not stopping.is_alive(), "the stop waited on an SQS that never answers"
            assert time.monotonic() - began < 10
            assert master.state == "STOPPED"
    finally:
        hole.close()
        for connection in held:
            connection.close()
