"""The embedded SQS server keeps its clients' connections open between requests, as AWS SQS does
(controlplane/sqs_http.py), and stays correct doing so: a body its application never read is
not taken for the next request, a length it cannot trust ends the connection, an idle or
stopped server's connections are closed, and a failing request answers 500 without killing the
connection's thread silently."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from controlplane import sqs_http
from controlplane.queues import EmbeddedSqs
from executor.consumer import CALL_CONFIG, LONG_POLL_CONFIG

JSON_HEADERS = {"Content-Type": "application/x-amz-json-1.0",
                "Authorization": "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/sqs/aws4_request, "
                                 "SignedHeaders=host, Signature=0"}


@pytest.fixture
def sqs() -> Iterator[EmbeddedSqs]:
    server = EmbeddedSqs()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _client(endpoint: str):
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="local",
                        aws_secret_access_key="local", config=Config(retries={"mode": "standard", "max_attempts": 1}))


def _count_connections(sqs: EmbeddedSqs) -> list[int]:
    accepted = [0]
    server = sqs._server
    serve = server.process_request

    def counting(request, client_address) -> None:
        accepted[0] += 1
        serve(request, client_address)

    server.process_request = counting
    return accepted


def _port(sqs: EmbeddedSqs) -> int:
    return int(sqs.endpoint_url.rsplit(":", 1)[1])


def _raw_request(port: int, action: str, payload: dict, extra: str = "", version: str = "1.1") -> bytes:
    body = json.dumps(payload)
    head = "".join(f"{name}: {value}\r\n" for name, value in JSON_HEADERS.items())
    return (f"POST / HTTP/{version}\r\nHost: 127.0.0.1:{port}\r\n{head}X-Amz-Target: AmazonSQS.{action}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def _call(connection: http.client.HTTPConnection, action: str, payload: dict, headers: dict | None = None):
    connection.request("POST", "/", body=json.dumps(payload).encode(),
                       headers={**JSON_HEADERS, "X-Amz-Target": f"AmazonSQS.{action}", **(headers or {})})
    answer = connection.getresponse()
    return answer, answer.read()


def test_a_client_makes_its_calls_over_one_connection(sqs):
    """werkzeug answered each request with Connection: close: every call of the executor and of
    the outbox opened a TCP connection and cost the server a thread (60 here, one per call)."""
    accepted = _count_connections(sqs)
    client = _client(sqs.endpoint_url)
    url = client.create_queue(QueueName=uuid.uuid4().hex[:12])["QueueUrl"]
    for number in range(20):
        client.send_message(QueueUrl=url, MessageBody=f"m{number}")
        (message,) = client.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
        client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert accepted[0] == 1, f"{accepted[0]} connections for 61 calls"


def test_a_body_the_application_never_read_is_not_taken_for_the_next_request(sqs):
    """A browser's request is refused before its body is read (refuse_browsers): on a connection
    that stays open, what it left unread would be parsed as the next request line."""
    connection = http.client.HTTPConnection("127.0.0.1", _port(sqs), timeout=10)
    refused, _ = _call(connection, "ListQueues", {"QueueNamePrefix": "x" * 5000}, {"Origin": "https://evil.example"})
    assert refused.status == 403
    answer, body = _call(connection, "ListQueues", {})
    assert answer.status == 200, body
    assert isinstance(json.loads(body), dict)
    connection.close()


def test_a_chunked_or_oversized_body_is_refused_and_its_connection_closed(sqs):
    for headers, body, status in [
        ({"Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n", 411),
        ({"Content-Length": str(sqs_http.MAX_BODY_BYTES + 1)}, b"", 413),
        ({"Content-Length": "12x"}, b"", 400),
    ]:
        with socket.create_connection(("127.0.0.1", _port(sqs)), timeout=10) as raw:
            head = "".join(f"{name}: {value}\r\n" for name, value in {**JSON_HEADERS, **headers}.items())
            raw.sendall(f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + body)
            answer = b""
            while chunk := raw.recv(65536):  # read to the end: the server closes
                answer += chunk
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
        assert b"Connection: close" in answer


def test_an_idle_connection_is_closed_and_the_client_opens_another(sqs, monkeypatch):
    monkeypatch.setattr(sqs_http._Handler, "timeout", 0.5)
    accepted = _count_connections(sqs)
    client = _client(sqs.endpoint_url)
    client.list_queues()
    connection = http.client.HTTPConnection("127.0.0.1", _port(sqs), timeout=10)
    _call(connection, "ListQueues", {})
    time.sleep(1.5)
    assert connection.sock.recv(1) == b"", "the idle connection is still open"
    connection.close()
    client.list_queues()  # botocore finds its connection closed and opens a new one
    assert accepted[0] == 3


def test_a_stopped_server_closes_the_connections_it_kept(sqs):
    """An SQS outage (the fault suite's stop_queue_server) must be one: a connection kept open
    from before would otherwise still be answered by its thread."""
    client = _client(sqs.endpoint_url)
    url = client.create_queue(QueueName=uuid.uuid4().hex[:12])["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="before")
    sqs.stop()
    with pytest.raises(EndpointConnectionError):
        client.send_message(QueueUrl=url, MessageBody="after")


def test_a_request_the_application_fails_on_answers_500_and_is_reported():
    reported: list[str] = []

    def failing(environ, start_response):
        raise RuntimeError("backend broke")

    server = sqs_http.KeepAliveServer(("127.0.0.1", 0), failing, on_error=reported.append)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        answer, _ = _call(connection, "ListQueues", {})
        assert answer.status == 500
        assert answer.getheader("Connection") == "close"
        assert reported == ["POST /: RuntimeError: backend broke"]
    finally:
        server.shutdown()
        server.server_close()
        server.close_connections()


def test_a_long_poll_cut_by_a_stop_takes_no_message_sent_after_the_restart():
    """Found by review: the stop reset the poll's connection, but its thread went on polling
    inside moto, whose backend outlives the server, and took the first message sent after the
    restart, for an answer no one read: the message stayed invisible for its visibility timeout
    and counted a receive toward the dead-letter queue."""
    sqs = EmbeddedSqs()
    endpoint = sqs.start()
    try:
        calls = _client(endpoint)
        url = calls.create_queue(QueueName=uuid.uuid4().hex[:12], Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
        poller = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="local",
                              aws_secret_access_key="local", config=LONG_POLL_CONFIG)
        outcome: list = []

        def poll() -> None:
            try:
                outcome.append(poller.receive_message(QueueUrl=url, WaitTimeSeconds=20).get("Messages", []))
            except Exception as exc:  # noqa: BLE001 - the outage, as the executor sees it
                outcome.append(exc)

        polling = threading.Thread(target=poll, daemon=True)
        polling.start()
        time.sleep(1)
        sqs.stop()
        time.sleep(1)  # the outage
        sqs = EmbeddedSqs(int(endpoint.rsplit(":", 1)[1]))
        sqs.start()
        calls = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="local",
                             aws_secret_access_key="local", config=CALL_CONFIG)
        calls.send_message(QueueUrl=url, MessageBody="sent after the restart")
        got = calls.receive_message(QueueUrl=url, WaitTimeSeconds=5).get("Messages", [])
        polling.join(30)
        retried = outcome[0] if isinstance(outcome[0], list) else []  # botocore's retry may reach the new server
        assert [m["Body"] for m in got + retried] == ["sent after the restart"], \
            f"a long poll of the stopped server took the message: {outcome}"
    finally:
        sqs.stop()


def test_expect_100_continue_is_answered_before_the_body_and_a_refused_length_instead(sqs):
    """Found by review: http.server's 100 Continue went into the buffer sent after the request,
    and a client waiting for it before sending its body waited for the idle timeout."""
    port = _port(sqs)
    request = _raw_request(port, "ListQueues", {}, extra="Expect: 100-continue\r\n")
    head, body = request.split(b"\r\n\r\n", 1)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(head + b"\r\n\r\n")
        assert raw.recv(65536).startswith(b"HTTP/1.1 100 Continue"), "no 100 Continue: the client waits for it"
        raw.sendall(body)
        assert raw.recv(65536).startswith(b"HTTP/1.1 200 ")
    too_large = head.replace(f"Content-Length: {len(body)}".encode(),
                             f"Content-Length: {sqs_http.MAX_BODY_BYTES + 1}".encode())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(too_large + b"\r\n\r\n")
        assert raw.recv(65536).startswith(b"HTTP/1.1 413 "), "the body was asked for, then refused"


def test_a_length_given_twice_or_not_in_ascii_digits_is_refused(sqs):
    """Found by review: the first of two Content-Lengths was taken and the rest of the body, a
    request of its own, was run on the kept connection (RFC 9112 6.3 says refuse); a length in
    superscript digits passed isdigit() and failed int(): the connection closed unanswered."""
    port = _port(sqs)
    hidden = _raw_request(port, "CreateQueue", {"QueueName": "smuggled"})
    outer = _raw_request(port, "ListQueues", {})
    head, body = outer.split(b"\r\n\r\n", 1)
    smuggling = head + f"\r\nContent-Length: {len(body) + len(hidden)}".encode() + b"\r\n\r\n" + body + hidden
    superscript = head.replace(f"Content-Length: {len(body)}".encode(), "Content-Length: \u00b2".encode()) + b"\r\n\r\n"
    for request in (smuggling, superscript):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(request)
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1, answer[:200]
    assert _client(sqs.endpoint_url).list_queues(QueueNamePrefix="smuggled").get("QueueUrls", []) == []


def test_a_message_sqs_takes_is_taken_whatever_its_characters(sqs):
    """Found by review: botocore escapes each non-ASCII character as \\uXXXX, so a message under
    SQS's 1 MiB came to over the 2 MiB the server took."""
    client = _client(sqs.endpoint_url)
    url = client.create_queue(QueueName=uuid.uuid4().hex[:12])["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="\u00e9" * 500_000)  # 1,000,000 bytes of UTF-8
    (message,) = client.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert len(message["Body"]) == 500_000


def test_an_http_1_0_client_asking_to_keep_its_connection_is_told_it_is_kept(sqs):
    with socket.create_connection(("127.0.0.1", _port(sqs)), timeout=5) as raw:
        raw.sendall(_raw_request(_port(sqs), "ListQueues", {}, extra="Connection: keep-alive\r\n", version="1.0"))
        head = raw.recv(65536).split(b"\r\n\r\n")[0]
    assert b"\r\nConnection: keep-alive" in head, head.decode()


def test_a_burst_of_connections_waits_in_the_listen_backlog_not_for_a_syn_retry():
    """Found by review: socketserver's backlog of 5 had the kernel drop the connections of a
    burst beyond it, each retried by its client a second later (then 3, then 7: past the
    executor's 5 s connect timeout). With nobody accepting, the backlog alone decides."""
    server = sqs_http.KeepAliveServer(("127.0.0.1", 0), lambda environ, start_response: [])
    connections = []
    try:
        for _ in range(40):
            connection = socket.socket()
            connection.settimeout(0.5)  # a dropped connection's first retry comes after 1 s
            connections.append(connection)
            connection.connect(server.server_address)
    finally:
        for connection in connections:
            connection.close()
        server.server_close()


def test_a_long_poll_its_client_left_takes_no_message_sent_after(sqs):
    """An executor stopped in the middle of its long poll (Ctrl-C) closes its connection; the
    poll went on inside moto for the rest of its 20 s and took the first message sent then (a
    run started before the executor was back), which stayed invisible for its visibility timeout."""
    client = _client(sqs.endpoint_url)
    url = client.create_queue(QueueName=uuid.uuid4().hex[:12], Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    with socket.create_connection(("127.0.0.1", _port(sqs)), timeout=5) as leaving:
        leaving.sendall(_raw_request(_port(sqs), "ReceiveMessage", {"QueueUrl": url, "WaitTimeSeconds": 20}))
        time.sleep(0.5)  # its poll is waiting
    time.sleep(0.5)
    client.send_message(QueueUrl=url, MessageBody="sent after it left")
    got = client.receive_message(QueueUrl=url, WaitTimeSeconds=3).get("Messages", [])
    assert [m["Body"] for m in got] == ["sent after it left"], "the poll of a client that had gone took the message"


def test_a_long_poll_whose_client_sent_its_next_request_behind_it_goes_on(sqs):
    """A request pipelined behind a waiting poll is data on its connection, not its end."""
    client = _client(sqs.endpoint_url)
    url = client.create_queue(QueueName=uuid.uuid4().hex[:12])["QueueUrl"]
    port = _port(sqs)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as pipelined:
        pipelined.sendall(_raw_request(port, "ReceiveMessage", {"QueueUrl": url, "WaitTimeSeconds": 5})
                          + _raw_request(port, "ListQueues", {}))
        time.sleep(0.5)
        client.send_message(QueueUrl=url, MessageBody="for the waiting poll")
        answers = b""
        while answers.count(b"HTTP/1.1 200 ") < 2:
            answers += pipelined.recv(65536)
    assert b"for the waiting poll" in answers
