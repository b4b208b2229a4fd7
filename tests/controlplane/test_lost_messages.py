"""PENDING runs whose message leaves its queue with no claim (controlplane/lost_messages.py),
against a running control plane and its embedded SQS: the queue's retention running out, and
SQS's redrive moving the message to the pool's dead-letter queue. Each left its run PENDING for
good, with no message anywhere."""
from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import pytest

from controlplane import server
from controlplane.queues import LOCAL_CREDENTIALS
from controlplane.testing import ControlPlaneHandle, running_controlplane
from vocabulary import message

from .conftest import RECIPE
from .test_queue_outbox import aws_mode_control_plane

FOURTEEN_DAYS_S = "1209600"
SQS_DEFAULT_RETENTION_S = "345600"  # what a queue made without a retention keeps: 4 days


@pytest.fixture
def cp(tmp_path, monkeypatch) -> Iterator[ControlPlaneHandle]:
    """A control plane that looks at its queues every second (every 30 s in service), its
    lost-executor sweep run only by hand."""
    monkeypatch.setattr(server, "SWEEP_INTERVAL_S", 3600.0)
    monkeypatch.setattr(server, "QUEUE_LOOK_INTERVAL_S", 1.0, raising=False)
    with running_controlplane(tmp_path / "cp") as handle:
        yield handle


def _sqs(cp: ControlPlaneHandle):
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url, **LOCAL_CREDENTIALS)


def _sent(cp: ControlPlaneHandle, execution_id: str) -> dict:
    deadline = time.monotonic() + 10
    while (shown := cp.execution(execution_id))["enqueued_at"] is None:
        assert time.monotonic() < deadline, "never sent to its queue"
        time.sleep(0.05)
    return shown


def _messages_in(sqs, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_a_pools_queues_keep_messages_14_days_and_queues_made_before_are_given_it_at_start(tmp_path):
    """SQS's default retention is 4 days: a pool with no executor over a long weekend lost its
    queued runs. Queues made before keep the default until the control plane's next start, which
    gives every queue the pool's settings (decision 53)."""
    with aws_mode_control_plane(tmp_path) as cp:
        cp.create_default_pool("p")
        sqs = cp.sqs_client()
        queues = [cp.queue_url(sqs, "p"), cp.queue_url(sqs, "p") + "-monitors"]
        for url in queues + [url + "-dlq" for url in queues]:
            kept = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["MessageRetentionPeriod"])["Attributes"]
            assert kept["MessageRetentionPeriod"] == FOURTEEN_DAYS_S, url
        for url in queues:  # as an earlier version made them
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": SQS_DEFAULT_RETENTION_S})
        cp.kill()
        cp.start()
        for url in queues:
            kept = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["MessageRetentionPeriod"])["Attributes"]
            assert kept["MessageRetentionPeriod"] == FOURTEEN_DAYS_S, url


def test_a_run_that_waits_longer_than_its_queue_keeps_a_message_is_sent_again_and_runs_once(cp, executor_double):
    """No executor takes the run while its queue keeps its message (here SQS's shortest
    retention, 60 s, set on the queue by hand): past half of it the message is sent again, and
    the run is claimed from the new one once an executor comes; the first message, received too,
    is refused at the claim, as any other of its messages. Before, SQS dropped the message and the
    run waited PENDING for good. The looks are made here, at chosen times (the control plane's own
    thread makes them every QUEUE_LOOK_INTERVAL_S): waiting out the retention in real time made
    the test a minute long, and late on a loaded machine."""
    pool = cp.create_pool("p", default=True)
    sqs = _sqs(cp)
    sqs.set_queue_attributes(QueueUrl=pool["queue_url"], Attributes={"MessageRetentionPeriod": "60"})
    run = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    first = _sent(cp, run)
    looks = cp.cp.lost_messages
    assert run not in looks.check(now=first["enqueued_at"] + 25)["resent"], "sent again before half its retention"
    assert run in looks.check(now=first["enqueued_at"] + 35)["resent"]
    deadline = time.monotonic() + 10
    while (again := cp.execution(run))["message_id"] == first["message_id"] or again["enqueued_at"] is None:
        assert time.monotonic() < deadline, "never sent again"
        time.sleep(0.05)
    received: dict[str, str] = {}
    while got := sqs.receive_message(QueueUrl=pool["queue_url"], MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     VisibilityTimeout=30).get("Messages", []):
        received.update({m["MessageId"]: message.decode(m["Body"]).execution_id for m in got})
    assert set(received.values()) == {run} and {first["message_id"], again["message_id"]} <= set(received)
    taker, latecomer = executor_double("p", "taker", interval_s=30), executor_double("p", "latecomer", interval_s=30)
    taker.heartbeat()
    latecomer.heartbeat()
    claimed = taker.client.claim(run, executor_id="taker", instance_id=taker.instance_id, pool_id="p", receive_count=1,
                                 message_id=again["message_id"])
    assert claimed is not None and claimed.lease
    for other in set(received) - {again["message_id"]}:
        assert latecomer.client.claim(run, executor_id="latecomer", instance_id=latecomer.instance_id, pool_id="p",
                                      receive_count=1, message_id=other) is None, "another message of it: refused"
    shown = cp.execution(run)
    assert (shown["status"], shown["executor_id"], shown["lease_epoch"]) == ("RUNNING", "taker", 1)


def test_a_run_whose_message_is_dead_lettered_unclaimed_ends_failure_and_the_message_stays(cp, executor_double):
    """An executor cut off from the control plane (its heartbeats stop landing: OFFLINE) whose
    intake still receives has each claim deferred; at the pool's redrive limit SQS moves the
    message to the dead-letter queue. The run ends FAILURE (MESSAGE_DEAD_LETTERED), saying so,
    rather than waiting PENDING with no message anywhere; the message stays for operators and is
    judged once."""
    pool = cp.create_pool("p", default=True, max_receive_count=3, visibility_timeout_s=30)
    sqs = _sqs(cp)
    cut_off = executor_double("p", "cut-off", interval_s=0.2)
    cut_off.heartbeat()
    run = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    _sent(cp, run)
    time.sleep(1.5)  # six of its intervals without a heartbeat: OFFLINE
    receives = 0
    while got := sqs.receive_message(QueueUrl=pool["queue_url"], MaxNumberOfMessages=1, WaitTimeSeconds=2,
                                     AttributeNames=["ApproximateReceiveCount"]).get("Messages", []):
        receives += 1
        assert receives <= pool["max_receive_count"], "received past the redrive limit"
        deferred = cut_off.client.claim(run, executor_id="cut-off", instance_id=cut_off.instance_id, pool_id="p",
                                        receive_count=int(got[0]["Attributes"]["ApproximateReceiveCount"]),
                                        message_id=got[0]["MessageId"])
        assert deferred is not None and deferred.retry_after_s, "a claim of an OFFLINE executor is deferred"
        # as the executor's runner gives a deferred message back (_give_back_unclaimed)
        sqs.change_message_visibility(QueueUrl=pool["queue_url"], ReceiptHandle=got[0]["ReceiptHandle"],
                                      VisibilityTimeout=0)
    assert receives == pool["max_receive_count"]
    ended = cp.wait_for_status(run, {"FAILURE"}, timeout_s=15)
    assert ended["reason"] == "MESSAGE_DEAD_LETTERED"
    assert "dead-letter queue" in ended["log_tail"] and f"received {pool['max_receive_count']} times" in ended["log_tail"]
    assert _messages_in(sqs, pool["dlq_url"]) == 1, "the message stays in the dead-letter queue"
    assert cp.cp.lost_messages.check()["dead_lettered"] == [], "judged once"
    assert cp.cp.store.query("SELECT execution_id, outcome FROM dead_letters") == [{"execution_id": run,
                                                                                   "outcome": "FAILURE"}]
    assert _messages_in(sqs, pool["queue_url"]) == 0, "not sent again"


def test_dead_lettered_messages_that_are_not_a_waiting_runs_latest_are_left_alone(cp, executor_double):
    """A message of a run that was sent another since (a release, a send again before expiry),
    of a run that ended, or no message of ours: each is left in the dead-letter queue, noted
    once, and ends nothing."""
    pool = cp.create_pool("p", default=True)
    sqs = _sqs(cp)
    source = cp.create_source("s", RECIPE)["id"]
    waiting = cp.run_source(source)["id"]
    _sent(cp, waiting)
    executor = executor_double("p", "e", interval_s=30)
    executor.heartbeat()
    done = cp.run_source(cp.create_source("t", RECIPE)["id"])["id"]
    executor.finish(executor.claim(done))
    bodies = {"an older message of a waiting run": message.encode(waiting, "RUN_INGEST", "p", 0),
              "a message of a finished run": message.encode(done, "RUN_INGEST", "p", 0),
              "no message of ours": "{not json"}
    for body in bodies.values():
        sqs.send_message(QueueUrl=pool["dlq_url"], MessageBody=body)
    for _ in range(2):
        assert cp.cp.lost_messages.check()["dead_lettered"] == []
    assert cp.execution(waiting)["status"] == "PENDING"
    assert cp.execution(done)["status"] == "SUCCESS"
    noted = cp.cp.store.query("SELECT execution_id, outcome FROM dead_letters ORDER BY outcome")
    assert len(noted) == 3, noted
    assert {n["execution_id"] for n in noted} == {waiting, done, None}
    assert _messages_in(sqs, pool["dlq_url"]) == 3


def test_a_second_message_of_a_run_does_not_take_it_over_from_a_holder_that_is_only_stale(cp, executor_double):
    """A run sent again before its queue's retention ran out has two messages; its holder claimed
    one and keeps it (extending it), and the other waits in the queue. The holder misses three
    heartbeats (STALE: paused, a slow network), not gone: its own message has not come back.
    The other message's claim took the run over, with a new lease, and the run ran twice (the
    holder learnt it only at its next write). It is a second copy, refused for good, as while
    the holder is ONLINE; the holder's own message, back once it stops extending it, is the one
    that may take the run over (decision 6)."""
    pool = cp.create_pool("p", default=True)
    sqs = _sqs(cp)
    sqs.set_queue_attributes(QueueUrl=pool["queue_url"], Attributes={"MessageRetentionPeriod": "60"})
    run = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    first = _sent(cp, run)
    assert run in cp.cp.lost_messages.check(now=first["enqueued_at"] + 35)["resent"]
    deadline = time.monotonic() + 10
    while (again := cp.execution(run))["message_id"] == first["message_id"] or again["enqueued_at"] is None:
        assert time.monotonic() < deadline, "never sent again"
        time.sleep(0.05)
    holder, other = executor_double("p", "holder", interval_s=0.2), executor_double("p", "other", interval_s=30)
    holder.heartbeat()
    other.heartbeat()
    held = holder.client.claim(run, executor_id="holder", instance_id=holder.instance_id, pool_id="p",
                               receive_count=1, message_id=again["message_id"])
    assert held is not None
    holder.heartbeat(running=[run])
    time.sleep(0.8)  # more than three of its intervals: STALE, not yet OFFLINE
    assert other.client.claim(run, executor_id="other", instance_id=other.instance_id, pool_id="p", receive_count=1,
                              message_id=first["message_id"]) is None, "a second copy: refused for good"
    shown = cp.execution(run)
    assert (shown["status"], shown["executor_id"], shown["lease_epoch"]) == ("RUNNING", "holder", 1)
    holder.heartbeat(running=[run])
    holder.finish(held)
    assert cp.execution(run)["status"] == "SUCCESS"


def test_a_run_whose_queue_was_deleted_is_sent_again_though_no_other_run_is_sent_to_it(cp):
    """A pool's queue deleted (by hand, a clean-up script) with a run's message in it, and no
    run sent to the pool after: the queue was made again only when a send to it failed, so the
    run, marked sent, waited PENDING with no message anywhere until the pool's next run, while
    the look at the queues found that very queue gone every round and only said so. Found gone
    by the look, it is made again as by a send (decision 66), and the run sent to it."""
    pool = cp.create_pool("p", default=True)
    sqs = _sqs(cp)
    run = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    first = _sent(cp, run)
    sqs.delete_queue(QueueUrl=pool["queue_url"])  # the run's message goes with it
    deadline = time.monotonic() + 15
    received: list[dict] = []
    while not received:
        assert time.monotonic() < deadline, "the run was never sent to a queue made again"
        try:
            received = sqs.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=1).get("Messages", [])
        except sqs.exceptions.QueueDoesNotExist:
            time.sleep(0.2)
    assert message.decode(received[0]["Body"]).execution_id == run
    shown = cp.execution(run)
    assert shown["status"] == "PENDING" and shown["message_id"] == received[0]["MessageId"] != first["message_id"]
