"""The embedded SQS server holds at most max_connections connections open (controlplane/sqs_http.py):
a client opening many idle ones no longer holds a thread for each until the process runs out,
and the executors' long polls go on. At the cap, the connection idle longest gives way to the
new one (botocore reopens its own transparently); a connection in a request or a long poll never
does, and only when every connection is in one is the new connection refused, and reported once."""
from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from loguru import logger

from controlplane.queues import EmbeddedSqs

from .test_embedded_sqs_hardening import AUTHORIZATION, _closed_within

CAP = 8


@pytest.fixture
def sqs(monkeypatch) -> Iterator[EmbeddedSqs]:
    server = EmbeddedSqs()
    server.start()
    monkeypatch.setattr(server._server, "max_connections", CAP, raising=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def errors() -> Iterator[list[str]]:
    """What the control plane logs as errors, as its operator reads it."""
    lines: list[str] = []
    sink = logger.add(lambda line: lines.append(str(line)), level="ERROR", format="{message}")
    try:
        yield lines
    finally:
        logger.remove(sink)


def _port(sqs: EmbeddedSqs) -> int:
    return int(sqs.endpoint_url.rsplit(":", 1)[1])


def _client(sqs: EmbeddedSqs, pool: int = 10) -> Any:
    """A client that does not retry: a connection closed under one of its calls fails the call."""
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=sqs.endpoint_url, aws_access_key_id="local",
                        aws_secret_access_key="local",
                        config=Config(read_timeout=40, max_pool_connections=pool,
                                      retries={"mode": "standard", "max_attempts": 1}))


class _Polls:
    """Counts the long polls that have reached the application: their connection is in a request."""

    def __init__(self, sqs: EmbeddedSqs) -> None:
        self._entered = 0
        self._changed = threading.Condition()
        app = sqs._server.app

        def counting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("HTTP_X_AMZ_TARGET") == "AmazonSQS.ReceiveMessage":
                with self._changed:
                    self._entered += 1
                    self._changed.notify_all()
            return app(environ, start_response)

        sqs._server.app = counting

    def wait_for(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self._entered >= count, timeout=30), \
                f"{self._entered} of {count} long polls reached the server"


class _Connections:
    """The connections the server has accepted, and the threads serving them, counted as they
    start and end."""

    def __init__(self, sqs: EmbeddedSqs) -> None:
        self._accepted = 0
        self._live = 0
        self._changed = threading.Condition()
        accept = sqs._server.process_request
        serve = sqs._server.process_request_thread

        def accepting(request: Any, client_address: Any) -> None:
            accept(request, client_address)
            with self._changed:
                self._accepted += 1
                self._changed.notify_all()

        def counted(request: Any, client_address: Any) -> None:
            with self._changed:
                self._live += 1
            try:
                serve(request, client_address)
            finally:
                with self._changed:
                    self._live -= 1
                    self._changed.notify_all()

        sqs._server.process_request = accepting
        sqs._server.process_request_thread = counted

    def wait_accepted(self, count: int) -> None:
        """Until the server has taken COUNT connections from its listen backlog: a connect()
        returns before, and a busy machine's server takes them later."""
        with self._changed:
            assert self._changed.wait_for(lambda: self._accepted >= count, timeout=30), \
                f"the server accepted {self._accepted} of {count} connections"

    def settle_at_most(self, count: int) -> int:
        """The number of live threads once at most COUNT, or as it is after 10 s."""
        with self._changed:
            self._changed.wait_for(lambda: self._live <= count, timeout=10)
            return self._live


def _connect(sqs: EmbeddedSqs, count: int) -> list[socket.socket]:
    connections: list[socket.socket] = []
    try:
        for _ in range(count):
            connections.append(socket.create_connection(("127.0.0.1", _port(sqs)), timeout=10))
    except BaseException:
        _close(connections)
        raise
    return connections


def _close(connections: list[socket.socket]) -> None:
    for connection in connections:
        connection.close()


def _long_polls(client: Any, url: str, count: int) -> tuple[list[threading.Thread], list[Any]]:
    outcomes: list[Any] = []

    def poll() -> None:
        try:
            outcomes.append(client.receive_message(QueueUrl=url, WaitTimeSeconds=20).get("Messages", []))
        except Exception as exc:  # noqa: BLE001 - the failure is the test's to report
            outcomes.append(exc)

    polling = [threading.Thread(target=poll, daemon=True) for _ in range(count)]
    for thread in polling:
        thread.start()
    return polling, outcomes


def test_idle_connections_past_the_cap_give_way_oldest_first_and_polls_and_sends_go_on(sqs, errors):
    """Each of twenty connections that never send a byte held a thread for the idle timeout
    (60 s). With a cap of 8, the oldest idle ones are closed as new ones come, a client whose
    kept connection was among them opens another for its next call without a retry, and a long
    poll in progress is answered."""
    connections = _Connections(sqs)
    polls = _Polls(sqs)
    poller = _client(sqs)
    url = poller.create_queue(QueueName=uuid.uuid4().hex[:12])["QueueUrl"]
    kept = _client(sqs)
    kept.list_queues()  # its connection now waits, kept, for its next call
    polling, outcomes = _long_polls(poller, url, 1)
    polls.wait_for(1)
    idle = _connect(sqs, 20)
    try:
        connections.wait_accepted(2 + 20)  # the poller's and kept's, then the idle ones
        kept.send_message(QueueUrl=url, MessageBody="sent past the cap")
        polling[0].join(40)
        got = [[message["Body"] for message in outcome] if isinstance(outcome, list) else outcome
               for outcome in outcomes]
        assert got == [["sent past the cap"]], f"the long poll got {got}"
        live = connections.settle_at_most(CAP)
        assert live <= CAP, f"{live} threads serve connections, with a cap of {CAP}"
        closed = [_closed_within(raw, 0) for raw in idle]
        shut = closed.count(True)
        assert closed == [True] * shut + [False] * (20 - shut) and shut >= 20 - CAP, \
            f"not the oldest idle connections were closed: {closed}"
    finally:
        _close(idle)
    assert errors == [], "a connection was refused while idle ones could give way"


def test_with_every_connection_in_a_long_poll_a_new_one_is_refused_and_reported_once(sqs, errors):
    """With all 8 connections in long polls, none is closed for the cap: a 9th, 10th and 11th
    are closed at once, one error line says so (not one per connection), and the polls are
    answered as usual once there is room for the sends that answer them."""
    connections = _Connections(sqs)
    polls = _Polls(sqs)
    poller = _client(sqs, pool=CAP)
    url = poller.create_queue(QueueName=uuid.uuid4().hex[:12])["QueueUrl"]
    polling, outcomes = _long_polls(poller, url, CAP)
    polls.wait_for(CAP)
    refused = _connect(sqs, 3)
    try:
        connections.wait_accepted(CAP + 3)  # the polls' (the first made create_queue's call), then these
        still_open = [number for number, raw in enumerate(refused, start=CAP + 1) if not _closed_within(raw, 10)]
    finally:
        _close(refused)
    assert still_open == [], f"connections {still_open} were taken past the cap of {CAP}, all in long polls"
    assert len(errors) == 1 and f"all {CAP} open connections" in errors[0], errors
    sqs._server.max_connections = CAP + 1  # room for the sender's connection
    sender = _client(sqs)
    sent = [f"message {number}" for number in range(CAP)]
    for body in sent:
        sender.send_message(QueueUrl=url, MessageBody=body)
    for thread in polling:
        thread.join(40)
    failed = [outcome for outcome in outcomes if not isinstance(outcome, list)]
    assert failed == [], f"long polls failed: {failed}"
    assert sorted(message["Body"] for outcome in outcomes for message in outcome) == sent


def test_a_connection_whose_request_has_begun_is_not_closed_for_the_cap(sqs, errors):
    """A request's first bytes make its connection busy, even before its thread has read them:
    twenty idle connections after it close others, and the request is answered when its body
    comes."""
    body = b"{}"
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{_port(sqs)}\r\nAuthorization: {AUTHORIZATION}\r\n"
            f"Content-Type: application/x-amz-json-1.0\r\nX-Amz-Target: AmazonSQS.ListQueues\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    connections = _Connections(sqs)
    (begun,) = _connect(sqs, 1)
    try:
        begun.sendall(head)
        idle = _connect(sqs, 20)
        try:
            connections.wait_accepted(1 + 20)
        finally:
            _close(idle)
        begun.sendall(body)
        assert begun.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        begun.close()
    assert errors == []
