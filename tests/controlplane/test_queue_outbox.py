"""The outbox that sends PENDING executions to their pool's queue, against a queue service that
fails: it refuses, or it hangs (a network partition: connections open, answers never come).
Neither may hold up the control plane's API, which executors heartbeat and report through."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import boto3
import pytest
import requests
from loguru import logger

from controlplane import server
from controlplane.queues import EmbeddedSqs
from controlplane.testing import ControlPlaneHandle, running_controlplane
from executor.testing import free_port
from vocabulary import message

from .conftest import RECIPE, ExecutorDouble


@pytest.fixture
def cp(tmp_path, monkeypatch) -> Iterator[ControlPlaneHandle]:
    """A control plane whose lost-executor sweep runs only when a test calls it: what is judged
    here is the API and the outbox, not the sweep."""
    monkeypatch.setattr(server, "SWEEP_INTERVAL_S", 3600.0)
    with running_controlplane(tmp_path / "cp") as handle:
        yield handle


@contextmanager
def hung_queue_service(cp: ControlPlaneHandle) -> Iterator[None]:
    """The embedded SQS server replaced, on its port, by a socket that takes connections (the
    kernel completes them) and never answers; the real server back on the port afterwards."""
    cp.stop_queue()
    try:
        with hung_port(int(cp.sqs_endpoint_url.rsplit(":", 1)[1])):
            yield
    finally:
        cp.start_queue()


def _timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_a_hung_queue_service_holds_up_neither_the_run_request_nor_heartbeats(cp):
    cp.create_pool("p", default=True)
    executor = ExecutorDouble(cp, "p", "e1", interval_s=1)
    executor.heartbeat()
    source = cp.create_source("s", RECIPE)["id"]
    with hung_queue_service(cp):
        created: list[dict] = []
        request = threading.Thread(target=lambda: created.append(cp.run_source(source)), daemon=True)
        request.start()
        request.join(timeout=3)
        assert created, "the request that creates a run waits on the queue service"
        assert _timed(executor.heartbeat) < 2, "heartbeats wait while a send hangs"
        assert cp.execution(created[0]["id"])["status"] == "PENDING"
    deadline = time.monotonic() + 60
    while cp.execution(created[0]["id"])["enqueued_at"] is None:
        assert time.monotonic() < deadline, "the run was not sent once the queue service answered again"
        time.sleep(0.1)


def test_a_healthy_executors_run_survives_a_hung_queue_service(tmp_path):
    """Heartbeats that could not land while a send blocked the API made the sweep judge a live
    executor OFFLINE and end its run ABORTED (EXECUTOR_LOST)."""
    with running_controlplane(tmp_path / "cp") as cp:
        cp.create_pool("p", default=True)
        executor = ExecutorDouble(cp, "p", "e1", interval_s=0.5)
        executor.heartbeat()
        running = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
        assert executor.claim(running) is not None
        stop = threading.Event()
        beating = threading.Thread(target=_heartbeat_until, args=(executor, running, stop))
        beating.start()
        try:
            with hung_queue_service(cp):
                threading.Thread(target=cp.run_source, args=(cp.create_source("t", RECIPE)["id"],), daemon=True).start()
                time.sleep(6)  # twice the six intervals after which a silent executor is OFFLINE
        finally:
            stop.set()
            beating.join()
        shown = cp.execution(running)
        assert (shown["status"], shown["reason"]) == ("RUNNING", None)


def _heartbeat_until(executor: ExecutorDouble, running: str, stop: threading.Event) -> None:
    """An executor's heartbeat loop: every interval, whatever became of the last one."""
    while not stop.wait(executor.interval_s / 2):
        try:
            executor.heartbeat(running=[running])
        except Exception:  # the control plane unreachable: the executor tries again next interval
            pass


@pytest.mark.parametrize("change", ["create", "queue settings", "delete"])
def test_a_pool_change_waiting_on_a_hung_queue_service_does_not_hold_up_heartbeats(cp, change):
    """A pool's create, queue settings and delete call the queue service: from the API's event
    loop, one that hung froze every other call until botocore gave up."""
    cp.create_pool("p", default=True)
    cp.create_pool("idle")
    executor = ExecutorDouble(cp, "p", "e1", interval_s=1)
    executor.heartbeat()
    calls = {"create": lambda: cp.create_pool("q"),
             "queue settings": lambda: cp._admin("PUT", "/pools/idle/queues", json={"visibility_timeout_s": 30}),
             "delete": lambda: cp.http.post(f"{cp.gms_url}/entities?action=delete",
                                            json={"urn": "urn:li:dataHubRemoteExecutorPool:idle"}, timeout=120)}
    with hung_queue_service(cp):
        admin = threading.Thread(target=_swallowing(calls[change]), daemon=True)
        admin.start()
        time.sleep(0.5)  # the change is waiting on the queue service
        assert admin.is_alive(), f"the pool {change} did not wait on the hung queue service"
        assert _timed(executor.heartbeat) < 2, f"heartbeats wait while a pool {change} waits on the queue service"
    admin.join(timeout=60)


def _swallowing(call):
    """CALL, whatever it answers: what the queue service's hang does to the call itself is not
    judged here."""
    def run() -> None:
        try:
            call()
        except Exception:
            pass
    return run


SERVE_WITH_AWS_QUEUES = """
import sys, time
from pathlib import Path
from controlplane.server import ControlPlaneServer, ServerConfig
server = ControlPlaneServer(ServerConfig(state_dir=Path(sys.argv[1]), queue="aws", port=int(sys.argv[2])))
server.start()
print("started", flush=True)
while True:
    time.sleep(1)
"""


class AwsModeControlPlane:
    """A control plane process with `queue: aws` (real SQS's code path: queues kept across its
    restarts, nothing sent again at start), its SQS the embedded server on SQS_PORT, which a test
    may stop and start again (the server's queues live in this process and survive that)."""

    def __init__(self, state_dir: Path, sqs_port: int) -> None:
        self.state_dir, self.port, self.sqs_port = state_dir, free_port(), sqs_port
        self.env = {**os.environ, "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{sqs_port}", "AWS_ACCESS_KEY_ID": "local",
                    "AWS_SECRET_ACCESS_KEY": "local", "PYTHONPATH": str(Path(server.__file__).parents[1])}
        self.process: subprocess.Popen | None = None
        self.sqs: EmbeddedSqs | None = None

    def start_sqs(self) -> None:
        self.sqs = EmbeddedSqs(self.sqs_port)
        self.sqs.start()

    def stop_sqs(self) -> None:
        if self.sqs is not None:
            self.sqs.stop()
            self.sqs = None

    def sqs_client(self) -> Any:
        return boto3.client("sqs", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{self.sqs_port}",
                            aws_access_key_id="local", aws_secret_access_key="local")

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", SERVE_WITH_AWS_QUEUES, str(self.state_dir), str(self.port)],
                                        env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout.readline().strip() == "started"

    def queue_url(self, client: Any, pool_id: str) -> str:
        """POOL_ID's ingestion queue (moto's queues are one store per test process: every test's)."""
        installation = (self.state_dir / "installation-id").read_text().strip()
        return client.get_queue_url(QueueName=f"dhx-{installation}-{pool_id}")["QueueUrl"]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        token = (self.state_dir / "admin-token").read_text().strip()
        answer = requests.post(f"http://127.0.0.1:{self.port}/gms/api/graphql", timeout=30,
                               headers={"Authorization": f"Bearer {token}"},
                               json={"query": query, "variables": variables}).json()
        assert not answer.get("errors"), answer
        return answer["data"]

    def create_default_pool(self, pool_id: str) -> None:
        self.graphql("mutation($i: CreateRemoteExecutorPoolInput!) { createRemoteExecutorPool(input: $i) }",
                     i={"executorPoolId": pool_id, "isDefault": True})


@contextmanager
def aws_mode_control_plane(tmp_path: Path) -> Iterator[AwsModeControlPlane]:
    """The embedded SQS server and an AWS-mode control plane on it, started; both ended after."""
    cp = AwsModeControlPlane(tmp_path / "cp", free_port())
    cp.start_sqs()
    try:
        cp.start()
        try:
            yield cp
        finally:
            cp.kill()
    finally:
        cp.stop_sqs()


@contextmanager
def hung_port(port: int) -> Iterator[None]:
    """PORT taking connections (the kernel completes them) and never answering. Closed, the
    connections it holds are reset: a send waiting on one fails and is retried."""
    hung = socket.socket()
    hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hung.bind(("127.0.0.1", port))
    hung.listen(128)
    try:
        yield
    finally:
        hung.close()


def test_a_run_whose_send_a_crash_cut_short_is_sent_after_the_restart(tmp_path):
    """Marked sent before the send, a run whose send was in flight when the control plane died
    (kill -9, or a stop while a hung send held the outbox) stayed PENDING for good on real SQS."""
    with aws_mode_control_plane(tmp_path) as cp:
        cp.create_default_pool("p")
        source = cp.graphql("mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }",
                            i={"name": "s", "type": "datahub-mock-data",
                               "config": {"recipe": RECIPE, "executorId": "default"}})["createIngestionSource"]
        cp.stop_sqs()
        with hung_port(cp.sqs_port):
            cp.graphql("mutation($u: String!) { createIngestionExecutionRequest(input: {ingestionSourceUrn: $u}) }",
                       u=source)
            time.sleep(1)  # its send is in flight, and hangs
            cp.kill()
        cp.start_sqs()  # moto's queues live in this process: they are all still there
        cp.start()
        client = cp.sqs_client()
        queue = cp.queue_url(client, "p")
        received = client.receive_message(QueueUrl=queue, WaitTimeSeconds=10).get("Messages", [])
        assert len(received) == 1, "the run was never sent"


def test_a_run_of_a_task_we_do_not_know_is_sent_for_its_executor_to_refuse(cp, executor_double):
    """A run stored for an executor elsewhere is not checked (DataHub takes any task); once a pool
    of ours takes its id, the outbox failed on its task every 2 s for good, with a warning each
    time, and the run stayed PENDING. It goes to the pool's queue (DataHub's one queue for a
    pool), and the executor that claims it fails it UNKNOWN_TASK."""
    cp.create_pool("p", default=True)
    urn = f"urn:li:dataHubExecutionRequest:{cp.cp.executions.new_id()}"
    cp.ingest(urn, "dataHubExecutionRequestInput", {"task": "RUN_ASSERTIONS", "args": {}, "executorId": "q",
                                                    "source": {"type": "MANUAL_INGESTION_SOURCE"},
                                                    "requestedAt": int(time.time() * 1000)})
    pool = cp.create_pool("q")
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                          aws_access_key_id="local", aws_secret_access_key="local")
    received = client.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=5).get("Messages", [])
    assert len(received) == 1, "the run was never sent"
    executor = executor_double("q", "e1")
    executor.heartbeat()
    claimed = executor.claim(urn.rsplit(":", 1)[1])
    assert claimed is not None and claimed.task == "RUN_ASSERTIONS"
    assert message.decode(received[0]["Body"]).task == "RUN_ASSERTIONS", "an executor reads the message"
    executor.finish(claimed, "FAILURE", "UNKNOWN_TASK")
    assert cp.execution(claimed.execution_id)["status"] == "FAILURE"


def test_a_run_claimed_before_its_send_returned_is_still_marked_sent(cp, executor_double, monkeypatch):
    """An executor long-polling the queue gets the message, and claims, before the queue's answer
    to the send is back. The mark's check (no claim since, so that a release in between gets a
    new message) left such a run with no `enqueued_at` for good: the bench's upstream row
    crashed on it."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    send = cp.cp.queues.send_text
    claimed: list = []

    def send_then_claim_before_returning(queue_url: str, body: str) -> None:
        send(queue_url, body)
        claimed.append(executor.claim(message.decode(body).execution_id))

    monkeypatch.setattr(cp.cp.queues, "send_text", send_then_claim_before_returning)
    run = cp.run_source(cp.create_source("s", RECIPE)["id"])
    deadline = time.monotonic() + 30
    while cp.execution(run["id"])["enqueued_at"] is None:
        assert time.monotonic() < deadline, f"never marked sent (claimed: {bool(claimed and claimed[0])})"
        time.sleep(0.05)
    shown = cp.execution(run["id"])
    assert claimed and claimed[0] is not None and shown["status"] == "RUNNING"


def test_a_queue_outage_is_logged_once_not_once_per_run_and_round(cp):
    """Measured before: 20 runs waiting, the queue service refusing, 207 warnings in 20 s."""
    lines: list[str] = []
    sink = logger.add(lambda line: lines.append(str(line)), level="INFO", format="{message}")
    try:
        cp.create_pool("p", default=True)
        sources = [cp.create_source(f"s{i}", RECIPE)["id"] for i in range(5)]
        cp.stop_queue()
        try:
            runs = [cp.run_source(source)["id"] for source in sources]
            time.sleep(7)  # three rounds of retries at least
        finally:
            cp.start_queue()
        deadline = time.monotonic() + 10
        while any(cp.execution(run)["enqueued_at"] is None for run in runs):
            assert time.monotonic() < deadline, "the runs were not sent once the queue service answered"
            time.sleep(0.1)
        time.sleep(0.2)
    finally:
        logger.remove(sink)
    failing = [line for line in lines if "not sent" in line]
    assert len(failing) == 1, failing
    assert sum("sent to their queues again" in line for line in lines) == 1, lines


def test_queues_whose_settings_differ_from_the_pools_are_set_as_the_pool_says_at_start(tmp_path):
    """A queue-settings change half applied (one queue changed, the next call failed), or one made
    by hand: real SQS refuses CreateQueue for a queue with other attributes, and the control
    plane, which makes its queues at every start, did not start at all."""
    with aws_mode_control_plane(tmp_path) as cp:
        cp.create_default_pool("p")
        client = cp.sqs_client()
        queue = cp.queue_url(client, "p")
        client.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "90"})
        cp.kill()
        cp.start()
        attributes = client.get_queue_attributes(QueueUrl=queue, AttributeNames=["VisibilityTimeout"])["Attributes"]
        assert attributes["VisibilityTimeout"] == "60", "the pool's setting (the default) is the queue's again"


def test_runs_whose_queue_was_deleted_are_sent_to_the_queue_made_again_as_the_pool_says(cp):
    """A pool's queue deleted while the control plane ran (by hand, or a clean-up script): every
    new run of the pool failed to send (QueueDoesNotExist) every 2 s until a restart made the
    queues again, with a warning saying it was retrying, which could never help; and a run whose
    message went with the queue stayed PENDING for good, since it was marked sent."""
    pool = cp.create_pool("p", default=True)
    source = cp.create_source("s", RECIPE)["id"]
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                          aws_access_key_id="local", aws_secret_access_key="local")
    queue_url = pool["queue_url"]
    queued = cp.run_source(source)["id"]
    deadline = time.monotonic() + 20
    while cp.execution(queued)["enqueued_at"] is None:
        assert time.monotonic() < deadline, "the first run was not sent"
        time.sleep(0.05)
    client.delete_queue(QueueUrl=queue_url)  # the first run's message goes with it
    later = cp.run_source(source)["id"]
    received: dict[str, dict] = {}
    deadline = time.monotonic() + 20
    while len(received) < 2:
        assert time.monotonic() < deadline, f"never sent to a queue made again: {sorted(received)}"
        try:
            answer = client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=10)
        except client.exceptions.QueueDoesNotExist:
            time.sleep(0.2)
            continue
        received.update({message.decode(m["Body"]).execution_id: m for m in answer.get("Messages", [])})
    assert set(received) == {queued, later}
    attributes = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == str(pool["visibility_timeout_s"])
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith("-dlq") and int(redrive["maxReceiveCount"]) == pool["max_receive_count"]


class HeldRun(NamedTuple):
    pool: dict[str, Any]
    client: Any  # boto3's SQS client
    holder: ExecutorDouble
    other: ExecutorDouble
    run: str
    first: dict[str, Any]  # the run's message, as the holder received it
    claimed: Any  # the holder's claim


def held_run(cp: ControlPlaneHandle, executor_double, *, visibility_s: int, interval_s: float,
             **pool_options: Any) -> HeldRun:
    """Pool "p" with two executors heartbeating ("holder" and "other"), and a run of it that the
    holder has received and claimed: what decision 68's replacement is about."""
    pool = cp.create_pool("p", default=True, visibility_timeout_s=visibility_s, **pool_options)
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                          aws_access_key_id="local", aws_secret_access_key="local")
    holder, other = (executor_double("p", "holder", interval_s=interval_s),
                     executor_double("p", "other", interval_s=interval_s))
    holder.heartbeat()
    other.heartbeat()
    run = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    first = client.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=10)["Messages"][0]
    claimed = holder.client.claim(run, executor_id="holder", instance_id=holder.instance_id, pool_id="p",
                                  receive_count=1, message_id=first["MessageId"])
    assert claimed is not None
    return HeldRun(pool, client, holder, other, run, first, claimed)


def test_a_running_run_whose_message_was_lost_is_sent_again_once_its_holder_falls_silent(cp, executor_double):
    """The embedded queue server's restart (here: its message deleted, and the restart's
    forget_queued) leaves a RUNNING run without a message. Nothing is sent while its holder
    heartbeats; once the holder is silent for a visibility timeout (when its message would have
    come back on SQS) one is, and another executor's claim of it takes the run over; should the
    holder heartbeat again first, the claim is deferred and the message kept, as for the
    holder's own message (decisions 8 and 68)."""
    visibility_s = 4
    pool, client, holder, other, run, first, claimed = held_run(cp, executor_double, visibility_s=visibility_s,
                                                                interval_s=1.0)
    client.delete_message(QueueUrl=pool["queue_url"], ReceiptHandle=first["ReceiptHandle"])
    cp.cp.executions.forget_queued()

    def receive(wait_s: int) -> list[dict]:
        return client.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=wait_s,
                                      VisibilityTimeout=visibility_s).get("Messages", [])

    heard_until = time.monotonic() + 2 * visibility_s
    while time.monotonic() < heard_until:  # longer than a visibility timeout, the holder heartbeating
        holder.heartbeat(running=[run])
        assert receive(0) == [], "sent again while its holder runs it"
        time.sleep(0.3)
    silent_since = time.monotonic()
    deadline = silent_since + 30
    while not (replacement := receive(1)):
        assert time.monotonic() < deadline, "never sent again once its holder fell silent"
    assert time.monotonic() - silent_since >= visibility_s - 1, "sent before the holder's message would have lapsed"
    assert message.decode(replacement[0]["Body"]).execution_id == run
    while cp.execution(run)["message_id"] != replacement[0]["MessageId"]:  # the mark follows the send's answer
        assert time.monotonic() < deadline, "the message sent again is not the execution's message"
        time.sleep(0.05)

    holder.heartbeat(running=[run])  # back after all: its claim is not taken from it
    deferred = other.client.claim(run, executor_id="other", instance_id=other.instance_id, pool_id="p",
                                  receive_count=1, message_id=replacement[0]["MessageId"])
    assert deferred is not None and deferred.retry_after_s > 0, deferred

    time.sleep(3.5)  # the holder silent again past STALE (3 intervals)
    other.heartbeat()
    taken = other.client.claim(run, executor_id="other", instance_id=other.instance_id, pool_id="p",
                               receive_count=2, message_id=replacement[0]["MessageId"])
    assert taken is not None and taken.lease != claimed.lease
    execution = cp.execution(run)
    assert (execution["status"], execution["executor_id"]) == ("RUNNING", "other")


def test_a_replacement_claimed_as_its_holder_comes_back_before_it_is_marked_is_kept(cp, executor_double, monkeypatch):
    """The replacement becomes the run's `message_id` only once the queue's answer to its send is
    back. An executor that received it and claimed it before that mark, just as the holder came
    back, was judged against the holder's *old* message: refused for good ("running on live
    executor", no retry_after_s), so it deleted the replacement, and the run had no message behind
    it should its holder crash after all. Once marked, the same claim is deferred and the message
    kept (decision 8). The moment between send and mark is held open by wrapping the queue's send:
    the real message is sent, and the holder's heartbeat and the other executor's claim happen
    before the send returns."""
    pool, client, holder, other, run, first, _ = held_run(cp, executor_double, visibility_s=2, interval_s=1.0)
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
    pool, client, holder, other, run, first, _ = held_run(cp, executor_double, visibility_s=30, interval_s=5.0,
                                                          max_receive_count=3)
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
