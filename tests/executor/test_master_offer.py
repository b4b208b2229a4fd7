"""Master._offer, where a message becomes a lease and a runner, from both intake threads at once.
The runner is a stand-in thread: what is under test is the master's own book of runners (the
drain waits on it) and what happens to a lease whose runner cannot start."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import executor.master as master_module
from executor.consumer import Received
from executor.leases import QueueRef
from executor.master import Master
from executor.settings import load_settings


def a_master(tmp_path) -> Master:
    settings = load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "unused",
                              "DATAHUB_EXECUTOR_POOL_ID": "pool", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)})
    return Master(settings)


def message(task_class: str, index: int) -> Received:
    body = SimpleNamespace(execution_id=f"exe_{task_class}_{index}", pool_id="pool")
    return Received(ref=QueueRef(task_class, f"m-{task_class}-{index}", "handle", 1, 0), body=body)


class Task(threading.Thread):
    """A runner that runs until the test lets it end."""

    finish = threading.Event()

    def __init__(self, lease, services) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        Task.finish.wait(60)


def test_both_intake_threads_offering_at_once_lose_no_runner_from_the_drain(tmp_path, monkeypatch):
    """Each intake thread rebuilt the runner list without a lock: one's update overwrote the
    other's, and a runner missing from it was not waited for by the drain (its task killed at
    exit, its result never reported). Measured on the old code: 74 to 184 of 600 missing."""
    monkeypatch.setattr(master_module, "TaskRunner", Task)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # switch threads often, as a loaded machine does
    master = a_master(tmp_path)
    master.services = SimpleNamespace(consumers={})
    try:
        intakes = [threading.Thread(target=lambda c=task_class: [master._offer(message(c, i)) for i in range(300)])
                   for task_class in ("ingestion", "monitors")]
        for intake in intakes:
            intake.start()
        for intake in intakes:
            intake.join()
        running = [thread for thread in threading.enumerate() if isinstance(thread, Task)]
        assert len(running) == 600
        assert len(master._live_runners()) == 600, "runners the drain would not wait for"
    finally:
        sys.setswitchinterval(switch_interval)
        Task.finish.set()


def master_giving_back(tmp_path, task_class: str) -> tuple[Master, list[str]]:
    """A master whose TASK_CLASS consumer records the message ids given back to it."""
    returned: list[str] = []
    master = a_master(tmp_path)
    master.services = SimpleNamespace(consumers={task_class: SimpleNamespace(
        return_now=lambda ref, after_s=0: returned.append(ref.message_id))})
    return master, returned


def test_a_runner_that_cannot_start_returns_its_message_and_holds_nothing(tmp_path, monkeypatch):
    """"can't start new thread" (the master at its own pids limit): the lease was already
    registered and stayed RECEIVED for good, extended, counted as pending by the intake."""
    class NoThread(Task):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(master_module, "TaskRunner", NoThread)
    master, returned = master_giving_back(tmp_path, "ingestion")
    master._offer(message("ingestion", 1))
    assert returned == ["m-ingestion-1"]
    assert len(master.leases) == 0 and master.leases.pending("ingestion") == 0
    assert master._live_runners() == []


def test_a_message_offered_once_the_stop_began_is_given_back_without_a_runner(tmp_path, monkeypatch):
    """A long poll that returned just as the stop began: its runner could start after the drain
    had looked, and the master ended with it unseen. Now no runner starts once stopping is set."""
    monkeypatch.setattr(master_module, "TaskRunner", Task)
    master, returned = master_giving_back(tmp_path, "monitors")
    master.stopping.set()
    master._offer(message("monitors", 7))
    assert returned == ["m-monitors-7"] and len(master.leases) == 0 and master._live_runners() == []


def test_a_give_back_waiting_for_the_extender_does_not_hold_the_drain(tmp_path, monkeypatch):
    """A give-back waits for the visibility extender's call in flight (leases.py). Made under the
    runners' lock, it held the main thread too, which reads that list on every turn of its loop:
    no watchdog, no second signal, for as long as SQS took to answer the extender."""
    monkeypatch.setattr(master_module, "TaskRunner", Task)
    master, returned = master_giving_back(tmp_path, "ingestion")
    master.stopping.set()
    with master.leases.visibility:  # the extender, mid-call
        offering = threading.Thread(target=master._offer, args=(message("ingestion", 3),), daemon=True)
        offering.start()
        offering.join(timeout=0.5)
        looking = threading.Thread(target=master._live_runners, daemon=True)
        looking.start()
        looking.join(timeout=30)
        assert not looking.is_alive(), "the main thread waited on the extender"
    offering.join(timeout=30)
    assert returned == ["m-ingestion-3"] and len(master.leases) == 0


def test_a_message_given_back_and_received_again_at_once_is_new_work(tmp_path, monkeypatch):
    """Given back while its lease was still registered, the message our own intake received the
    moment it was visible was taken for our own message back (no runner), and the lease then
    vanished: the message in flight under a receipt nobody held."""
    class NoThread(Task):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(master_module, "TaskRunner", NoThread)
    master = a_master(tmp_path)
    offered: list[str] = []

    def return_now(ref, after_s=0):  # SQS and our long-polling intake: received within the call
        offered.append(master.leases.receive("exe_ingestion_1", QueueRef("ingestion", ref.message_id, "again", 2, 0))[1])

    master.services = SimpleNamespace(consumers={"ingestion": SimpleNamespace(return_now=return_now)})
    master._offer(message("ingestion", 1))
    assert offered == ["new"]



@contextmanager
def stopping_master_with_a_received_message(tmp_path):
    """(a master whose stop has begun, wired to a real SQS-protocol queue and heartbeat server
    as _start wires it, a message received from that queue and not yet offered, the queue)."""
    from controlplane.queues import EmbeddedSqs
    from executor.acks import Acknowledger
    from executor.controlplane_client import ControlPlaneClient

    from .test_heartbeat import StatusServer
    from .test_master_stop import a_queue_with_one_message, give_heartbeat

    sqs = EmbeddedSqs()
    endpoint = sqs.start()
    try:
        with StatusServer() as server:
            consumer = a_queue_with_one_message(endpoint, "offer", pool_id="pool")
            (received,) = consumer.receive(1, wait_s=1)
            master = a_master(tmp_path)
            master.services = SimpleNamespace(consumers={"ingestion": consumer})
            master.acks = Acknowledger({"ingestion": consumer}, master.leases)
            give_heartbeat(master, ControlPlaneClient(server.gms_url, "t"), server.gms_url)
            master._stop_loops = threading.Event()
            master._threads = []
            master._stop_requested = True  # the stop has begun; the intake's poll returned just before
            master._begin_drain()
            yield master, received, consumer
    finally:
        sqs.stop()


def visible(consumer) -> int:
    return int(consumer.client.get_queue_attributes(QueueUrl=consumer.queue_url, AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])


def test_a_give_back_waiting_for_the_extender_at_the_stop_is_made_before_the_process_ends(tmp_path, monkeypatch):
    """A long poll's message offered as the stop began is given back, and that give-back waits
    for the visibility extender's call in flight. The drain did not wait for it: with no runner
    left it stopped at once, and the process ended before the message was returned, which then
    stayed hidden for its whole visibility timeout (one more receive spent toward the DLQ)."""
    monkeypatch.setattr(master_module, "TaskRunner", Task)
    with stopping_master_with_a_received_message(tmp_path) as (master, received, consumer):
        with master.leases.visibility:  # the extender, mid-call
            offering = threading.Thread(target=master._offer, args=(received,), daemon=True)
            offering.start()
            offering.join(timeout=0.5)
            assert offering.is_alive(), "the give-back waits for the extender"
            draining = threading.Thread(target=lambda: master._stop(master._wait_and_drain()), daemon=True)
            draining.start()
            draining.join(timeout=1.5)
            stopped_early = not draining.is_alive()
        draining.join(timeout=30)
        assert not draining.is_alive()
        assert not stopped_early, "the stop ended (the process exits) with a give-back still to be made"
        assert visible(consumer) == 1, "the message was returned before the stop ended"


def test_a_give_back_that_cannot_be_made_holds_the_stop_no_longer_than_the_last_deletes(tmp_path, monkeypatch):
    """The drain waits for a give-back as for the last deletes, ACKS_JOIN_S at most: an SQS
    that does not answer (the extender's call holds its lock for good) must not hold the exit."""
    monkeypatch.setattr(master_module, "TaskRunner", Task)
    monkeypatch.setattr(master_module, "ACKS_JOIN_S", 1.0)
    with stopping_master_with_a_received_message(tmp_path) as (master, received, consumer):
        with master.leases.visibility:  # the extender, mid-call, for good
            threading.Thread(target=master._offer, args=(received,), daemon=True).start()
            began = time.monotonic()
            assert master._wait_and_drain() == []
            assert time.monotonic() - began < 5
