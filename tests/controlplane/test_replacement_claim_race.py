"""Decision 68's last sentence, performed: a RUNNING run whose message the queue lost is sent
again once its holder falls silent, and the replacement becomes the run's `message_id` only
once the queue's answer to the send is back. An executor that receives the replacement and
claims it before that mark, just as the holder comes back, is judged against the holder's
*old* message: refused for good ("running on live executor", no retry_after_s), so it deletes
the replacement, and the run then has no message behind it should its holder crash after all.
Once marked, the same claim is deferred and the message kept (decision 8). The moment between
send and mark is held open by wrapping the queue's send: the real message is sent, and the
holder's heartbeat and the other executor's claim happen before the send returns."""
from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import pytest

from controlplane import server
from controlplane.testing import ControlPlaneHandle, running_controlplane
from vocabulary import message

from .conftest import RECIPE


@pytest.fixture
def cp(tmp_path, monkeypatch) -> Iterator[ControlPlaneHandle]:
    monkeypatch.setattr(server, "SWEEP_INTERVAL_S", 3600.0)  # the holder is judged by the claim, not swept
    with running_controlplane(tmp_path / "cp") as handle:
        yield handle


def test_a_replacement_claimed_as_its_holder_comes_back_before_it_is_marked_is_kept(cp, executor_double, monkeypatch):
    visibility_s = 2
    pool = cp.create_pool("p", default=True, visibility_timeout_s=visibility_s)
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                          aws_access_key_id="local", aws_secret_access_key="local")
    holder, other = executor_double("p", "holder", interval_s=1.0), executor_double("p", "other", interval_s=1.0)
    holder.heartbeat()
    other.heartbeat()
    run = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    first = client.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=10)["Messages"][0]
    assert holder.client.claim(run, executor_id="holder", instance_id=holder.instance_id, pool_id="p",
                               receive_count=1, message_id=first["MessageId"]) is not None
    client.delete_message(QueueUrl=pool["queue_url"], ReceiptHandle=first["ReceiptHandle"])

    send = cp.cp.queues.send_text
    in_the_moment: list = []

    def send_then_holder_back_and_claimed(queue_url: str, body: str) -> str:
        message_id = send(queue_url, body)
        if message.decode(body).execution_id == run and not in_the_moment:
            holder.heartbeat(running=[run])  # back, just after the replacement went out
            other.heartbeat()
            in_the_moment.append(other.client.claim(run, executor_id="other", instance_id=other.instance_id,
                                                    pool_id="p", receive_count=1, message_id=message_id))
        return message_id

    monkeypatch.setattr(cp.cp.queues, "send_text", send_then_holder_back_and_claimed)
    cp.cp.executions.forget_queued()  # the embedded queue server's restart: the holder now falls silent
    deadline = time.monotonic() + 30
    while not in_the_moment:
        assert time.monotonic() < deadline, "never sent again once its holder fell silent"
        time.sleep(0.1)
    claim = in_the_moment[0]
    assert claim is not None and claim.retry_after_s > 0, \
        "the replacement's claim was refused for good: its executor deletes the run's only message"


def test_a_true_second_copy_of_a_run_marked_unsent_is_refused_not_deferred_into_the_dead_letter_queue(
        cp, executor_double):
    """Only the moment of a replacement's send defers a claim of an unmarked message (found by
    review): a run marked unsent (a queue of its pool deleted and made again, decision 66) and
    still held by a live executor stays so, and a real second copy of its message (decision 80's
    resend) was deferred at every receive until SQS dead-lettered it, where nothing judges it."""
    pool = cp.create_pool("p", default=True, visibility_timeout_s=30, max_receive_count=3)
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                          aws_access_key_id="local", aws_secret_access_key="local")
    holder, other = executor_double("p", "holder", interval_s=5.0), executor_double("p", "other", interval_s=5.0)
    holder.heartbeat()
    other.heartbeat()
    run = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    first = client.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=10)["Messages"][0]
    assert holder.client.claim(run, executor_id="holder", instance_id=holder.instance_id, pool_id="p",
                               receive_count=1, message_id=first["MessageId"]) is not None
    cp.cp.queues.send_text(pool["queue_url"], first["Body"])  # the second copy
    cp.cp.executions.forget_queued("p")
    holder.heartbeat(running=[run])
    other.heartbeat()
    (copy,) = client.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=5,
                                     VisibilityTimeout=0)["Messages"]
    claim = other.client.claim(run, executor_id="other", instance_id=other.instance_id, pool_id="p",
                               receive_count=1, message_id=copy["MessageId"])
    assert claim is None, "the copy was deferred: it goes round until the dead-letter queue takes it"
    assert cp.execution(run)["status"] == "RUNNING"
