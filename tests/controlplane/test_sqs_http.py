"""The embedded SQS server keeps its clients' connections open between requests, as AWS SQS does
(controlplane/sqs_http.py), and stays correct doing so: a body its application never read is
not taken for the next request, a length it cannot trust ends the connection, an idle or
stopped server's connections are closed, and a failing request answers 500 without killing the
connection's thread silently."""
from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from controlplane import sqs_http
from controlplane.queues import EmbeddedSqs

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
    import threading

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
