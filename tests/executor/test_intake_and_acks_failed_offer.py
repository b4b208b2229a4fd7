"""A hand-over that fails for one message of a received batch, on a real SQS-protocol server:
the rest of the batch is still handed over, and nothing is left hidden with no one holding it."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

import executor.master as master_module
import executor.services as services_module
from executor.leases import Leases
from executor.ledger import Ledger
from executor.master import Master
from executor.services import Intake, OutageLog
from executor.settings import load_settings


@pytest.fixture
def consumer(sqs_queue):
    return sqs_queue(visibility_timeout_s=60, prefix="failed-offer")


def send(consumer, *execution_ids: str, pool_id: str = "p") -> None:
    for execution_id in execution_ids:
        consumer.client.send_message(QueueUrl=consumer.queue_url, MessageBody=(
            f'{{"v": 1, "execution_id": "{execution_id}", "task": "RUN_INGEST", "pool_id": "{pool_id}"}}'))


def test_an_offer_that_raises_for_the_first_message_of_a_batch_leaves_the_others_offered(consumer, monkeypatch):
    """The intake handed a received batch over in a plain loop: the first offer that raised
    ended the step, and every message after it in the batch stayed invisible for a whole
    visibility timeout (60 s here), offered to no one. The one that raised goes back soon."""
    monkeypatch.setattr(services_module, "FAILED_OFFER_RETURN_S", 1, raising=False)
    send(consumer, "exe_1", "exe_2", "exe_3")
    batches: list[int] = []
    receive = consumer.receive
    consumer.receive = lambda *args, **kwargs: batches.append(len(got := receive(*args, **kwargs))) or got
    offered: list[str] = []
    raised_for: list[str] = []

    def offer(message) -> None:
        if not raised_for:
            raised_for.append(message.body.execution_id)
            raise RuntimeError("a bug in the hand-over")
        offered.append(message.body.execution_id)

    intake = Intake(consumer, Ledger("ingestion", 3), Leases(), offer, threading.Event(), OutageLog())
    while not batches or batches[-1] == 0:
        try:
            intake.step()
        except RuntimeError:  # what the Loop would catch: the step ended there
            pass
    assert batches[-1] == 3, f"the server did not answer the three in one batch: {batches}"
    (raised,) = raised_for
    assert sorted(offered) == sorted({"exe_1", "exe_2", "exe_3"} - {raised}), "the rest of the batch was not offered"
    again = [m.body.execution_id for m in receive(10, wait_s=10)]
    assert again == [raised], f"the message whose offer raised is not back on the queue: {again}"


class RunnerThatCannotBeMade:
    def __init__(self, lease, services) -> None:
        raise TypeError("a bug in the runner's set-up")


def test_a_runner_that_cannot_be_made_leaves_no_lease_and_its_message_goes_back(consumer, tmp_path, monkeypatch):
    """Master._offer caught only RuntimeError from starting the runner: any other failure made
    after the lease left it RECEIVED with no runner, extended and listed in every heartbeat for
    ever, and its message hidden as long as the process lived."""
    monkeypatch.setattr(master_module, "TaskRunner", RunnerThatCannotBeMade)
    master = Master(load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "unused",
                                   "DATAHUB_EXECUTOR_POOL_ID": "pool", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)}))
    master.services = SimpleNamespace(consumers={"ingestion": consumer})
    send(consumer, "exe_1", pool_id="pool")
    intake = Intake(consumer, Ledger("ingestion", 1), master.leases, master._offer, threading.Event(), OutageLog())
    received = []
    receive = consumer.receive
    consumer.receive = lambda *args, **kwargs: received.extend(got := receive(*args, **kwargs)) or got
    while not received:
        try:
            intake.step()
        except TypeError:
            pass
    assert len(master.leases) == 0, f"a lease no runner holds: {master.leases.counts()}"
    assert [m.body.execution_id for m in receive(10, wait_s=5)] == ["exe_1"], "the message was not given back"
