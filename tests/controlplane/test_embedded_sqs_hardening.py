"""The embedded SQS server holds up against clients that are not botocore: a client sending its
request slowly is cut off at the request's deadline (a slow answer, a long poll, is not), a
request botocore would never send is refused with SQS's own 400 error in the request's protocol,
not a 500, and a message is measured in bytes, with its attributes, as SQS measures it."""
from __future__ import annotations

import http.client
import json
import select
import socket
import time
import uuid
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from controlplane import sqs_http
from controlplane.queues import EmbeddedSqs

from .test_sqs_http import sqs  # noqa: F401 (fixture)

AUTHORIZATION = ("AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/sqs/aws4_request, "
                 "SignedHeaders=host, Signature=0")
JSON_TYPE = "application/x-amz-json-1.0"
FORM_TYPE = "application/x-www-form-urlencoded"
SQS_MAX_MESSAGE_BYTES = 1_048_576  # SQS's largest MaximumMessageSize, its default, and a batch's largest total


def _port(sqs: EmbeddedSqs) -> int:
    return int(sqs.endpoint_url.rsplit(":", 1)[1])


def _client(sqs: EmbeddedSqs) -> Any:
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=sqs.endpoint_url, aws_access_key_id="local",
                        aws_secret_access_key="local", config=Config(retries={"mode": "standard", "max_attempts": 1}))


def _queue(sqs: EmbeddedSqs, **attributes: str) -> tuple[Any, str]:
    client = _client(sqs)
    return client, client.create_queue(QueueName=uuid.uuid4().hex[:12], Attributes=attributes)["QueueUrl"]


def _raw_request(port: int, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {AUTHORIZATION}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _list_queues_request(port: int) -> bytes:
    body = json.dumps({"QueueNamePrefix": "x" * 100}).encode()
    return _raw_request(port, body, {"Content-Type": JSON_TYPE, "X-Amz-Target": "AmazonSQS.ListQueues"})


def _closed_within(raw: socket.socket, wait_s: float) -> bool:
    """Whether the server closed RAW (an end or a reset) within WAIT_S."""
    readable, _, _ = select.select([raw], [], [], wait_s)
    if not readable:
        return False
    try:
        return raw.recv(65536) == b""
    except ConnectionError:
        return True


def _trickle(raw: socket.socket, data: bytes, every_s: float, for_s: float) -> float | None:
    """Send DATA a byte every EVERY_S, for at most FOR_S: the seconds after which the server
    closed the connection, or None if it was still open."""
    started = time.monotonic()
    for byte in data:
        if time.monotonic() - started > for_s:
            return None
        try:
            raw.sendall(bytes([byte]))
        except ConnectionError:
            return time.monotonic() - started
        if _closed_within(raw, every_s):
            return time.monotonic() - started
    return None


@pytest.mark.parametrize("slow_part", ["request line and headers", "body"])
def test_a_request_sent_a_byte_at_a_time_is_cut_off_at_its_deadline(sqs, monkeypatch, slow_part):
    """Each read waited IDLE_TIMEOUT_S anew: a client sending a byte just inside it held its
    connection's thread for as long as it liked. Here a byte comes every 0.2 s, well inside the
    idle timeout (5 s), and the whole request has 1 s."""
    monkeypatch.setattr(sqs_http._Handler, "timeout", 5)
    monkeypatch.setattr(sqs._server, "request_read_timeout_s", 1.0, raising=False)
    request = _list_queues_request(_port(sqs))
    head, body = request.split(b"\r\n\r\n", 1)
    with socket.create_connection(("127.0.0.1", _port(sqs)), timeout=10) as raw:
        if slow_part == "body":
            raw.sendall(head + b"\r\n\r\n")
            slow = body
        else:
            slow = request
        cut_after_s = _trickle(raw, slow, every_s=0.2, for_s=12)
    assert cut_after_s is not None, f"a request whose {slow_part} came a byte every 0.2 s was still read after 12 s"


def test_a_kept_connection_idle_longer_than_a_request_deadline_still_serves_its_next_request(sqs, monkeypatch):
    """The deadline counts from a request's first byte: a connection waiting between requests
    keeps its idle timeout (a consumer's connection between two polls)."""
    monkeypatch.setattr(sqs_http._Handler, "timeout", 10)
    monkeypatch.setattr(sqs._server, "request_read_timeout_s", 0.5, raising=False)
    connection = http.client.HTTPConnection("127.0.0.1", _port(sqs), timeout=10)
    for _ in range(2):
        connection.request("POST", "/", body=b"{}", headers={"Content-Type": JSON_TYPE, "Authorization": AUTHORIZATION,
                                                             "X-Amz-Target": "AmazonSQS.ListQueues"})
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 200
        time.sleep(2)  # four times the request deadline, a fifth of the idle timeout
    connection.close()


def test_a_long_poll_longer_than_the_request_deadline_is_answered_on_its_kept_connection(sqs, monkeypatch):
    """The server answering slowly is not the client sending slowly: the deadline ends with the
    request's body, and the connection stays open for the next call."""
    monkeypatch.setattr(sqs._server, "request_read_timeout_s", 0.5, raising=False)
    client, url = _queue(sqs)
    started = time.monotonic()
    assert client.receive_message(QueueUrl=url, WaitTimeSeconds=2).get("Messages", []) == []
    assert time.monotonic() - started >= 2
    client.send_message(QueueUrl=url, MessageBody="after the poll")
    (message,) = client.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"]
    assert message["Body"] == "after the poll"


def _post(sqs: EmbeddedSqs, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", _port(sqs), timeout=10)
    try:
        connection.request("POST", "/", body=body, headers={"Authorization": AUTHORIZATION, **headers})
        answer = connection.getresponse()
        return answer.status, {name.lower(): value for name, value in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def _json_call(sqs: EmbeddedSqs, target: str, body: Any) -> tuple[int, dict[str, str], bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _post(sqs, raw, {"Content-Type": JSON_TYPE, "X-Amz-Target": target})


QUEUE_URL = "http://127.0.0.1/123456789012/{name}"  # filled in with the test's queue
MALFORMED_JSON = [
    ("AmazonSQS.ListQueues", b"not json", "SerializationException"),
    ("AmazonSQS.ListQueues", b"[1, 2]", "SerializationException"),
    ("AmazonSQS.ListQueues", b'"a string"', "SerializationException"),
    ("AmazonSQS.ListQueues", b"\xff\xfe{}", "SerializationException"),
    ("AmazonSQS.ListQueues", {"MaxResults": "ten"}, "InvalidParameterValue"),
    ("AmazonSQS.NoSuchAction", {}, "InvalidAction"),
    ("NotSqs.ListQueues", {}, "InvalidAction"),
    ("AmazonSQS.ReceiveMessage", {"QueueUrl": QUEUE_URL, "MaxNumberOfMessages": "x"}, "InvalidParameterValue"),
    ("AmazonSQS.ReceiveMessage", {"QueueUrl": QUEUE_URL, "MaxNumberOfMessages": [1]}, "InvalidParameterValue"),
    ("AmazonSQS.ReceiveMessage", {"QueueUrl": QUEUE_URL, "WaitTimeSeconds": "x"}, "InvalidParameterValue"),
    ("AmazonSQS.ReceiveMessage", {"QueueUrl": QUEUE_URL, "MessageAttributeNames": "All"}, "InvalidParameterValue"),
    ("AmazonSQS.SendMessage", {"QueueUrl": QUEUE_URL}, "MissingParameter"),
    ("AmazonSQS.SendMessage", {"QueueUrl": QUEUE_URL, "MessageBody": 5}, "InvalidParameterValue"),
    ("AmazonSQS.SendMessage", {"QueueUrl": QUEUE_URL, "MessageBody": "x", "DelaySeconds": "x"},
     "InvalidParameterValue"),
    ("AmazonSQS.SendMessage", {"QueueUrl": QUEUE_URL, "MessageBody": "x", "MessageAttributes": {"a": "x"}},
     "InvalidParameterValue"),
    ("AmazonSQS.SendMessageBatch", {"QueueUrl": QUEUE_URL, "Entries": "x"}, "InvalidParameterValue"),
    ("AmazonSQS.SendMessageBatch", {"QueueUrl": QUEUE_URL, "Entries": {"Id": "a"}}, "InvalidParameterValue"),
    ("AmazonSQS.SendMessageBatch", {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "a"}]}, "MissingParameter"),
    ("AmazonSQS.DeleteMessageBatch", {"QueueUrl": QUEUE_URL, "Entries": ["x"]}, "InvalidParameterValue"),
    ("AmazonSQS.DeleteMessageBatch", {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "a"}]}, "MissingParameter"),
    ("AmazonSQS.ChangeMessageVisibilityBatch", {"QueueUrl": QUEUE_URL, "Entries": "x"}, "InvalidParameterValue"),
    ("AmazonSQS.ChangeMessageVisibility", {"QueueUrl": QUEUE_URL, "ReceiptHandle": "r"}, "MissingParameter"),
    ("AmazonSQS.CreateQueue", {}, "MissingParameter"),
    ("AmazonSQS.CreateQueue", {"QueueName": 5}, "InvalidParameterValue"),
    ("AmazonSQS.CreateQueue", {"QueueName": "q", "Attributes": "x"}, "InvalidParameterValue"),
    ("AmazonSQS.SetQueueAttributes", {"QueueUrl": QUEUE_URL, "Attributes": ["x"]}, "InvalidParameterValue"),
    ("AmazonSQS.TagQueue", {"QueueUrl": QUEUE_URL, "Tags": "x"}, "InvalidParameterValue"),
]


def _with_queue(payload: Any, url: str) -> Any:
    if isinstance(payload, dict) and payload.get("QueueUrl") == QUEUE_URL:
        return {**payload, "QueueUrl": url}
    return payload


@pytest.mark.parametrize(("target", "payload", "code"), MALFORMED_JSON,
                         ids=[f"{t}-{str(p)[:40]}" for t, p, _ in MALFORMED_JSON])
def test_a_malformed_json_request_gets_sqs_json_400_error_not_a_500(sqs, target, payload, code):
    _, url = _queue(sqs)
    status, headers, body = _json_call(sqs, target, _with_queue(payload, url))
    assert status == 400, f"{status}: {body[:200]!r}"
    assert headers.get("x-amzn-query-error") == f"{code};Sender", headers
    error = json.loads(body)
    assert error["__type"].endswith(f"#{code}") and error["message"], error


MALFORMED_QUERY = [
    ("Version=2012-11-05", "MissingAction"),
    ("Action=NoSuchAction&Version=2012-11-05", "InvalidAction"),
    ("Action=ReceiveMessage&QueueUrl={url}&MaxNumberOfMessages=x", "InvalidParameterValue"),
    ("Action=ReceiveMessage&QueueUrl={url}&WaitTimeSeconds=x", "InvalidParameterValue"),
    ("Action=ReceiveMessage&QueueUrl={url}&VisibilityTimeout=x", "InvalidParameterValue"),
    ("Action=SendMessage&QueueUrl={url}", "MissingParameter"),
    ("Action=SendMessage&QueueUrl={url}&MessageBody=x&DelaySeconds=x", "InvalidParameterValue"),
    ("Action=SendMessageBatch&QueueUrl={url}&SendMessageBatchRequestEntry.1.Id=a", "MissingParameter"),
    ("Action=DeleteMessageBatch&QueueUrl={url}&DeleteMessageBatchRequestEntry.1.Id=a", "MissingParameter"),
    ("Action=ChangeMessageVisibility&QueueUrl={url}&ReceiptHandle=r&VisibilityTimeout=x", "InvalidParameterValue"),
    ("Action=CreateQueue", "MissingParameter"),
    ("Action=ListQueues&MaxResults=x", "InvalidParameterValue"),
]


@pytest.mark.parametrize(("form", "code"), MALFORMED_QUERY, ids=[form[:50] for form, _ in MALFORMED_QUERY])
def test_a_malformed_query_request_gets_sqs_xml_400_error_not_a_500(sqs, form, code):
    _, url = _queue(sqs)
    status, headers, body = _post(sqs, form.format(url=quote(url, safe="")).encode(), {"Content-Type": FORM_TYPE})
    assert status == 400, f"{status}: {body[:200]!r}"
    assert body.startswith(b"<ErrorResponse") and f"<Code>{code}</Code>".encode() in body, body[:300]
    assert b"<Type>Sender</Type>" in body


def test_after_a_malformed_request_the_connection_serves_the_next_one(sqs):
    connection = http.client.HTTPConnection("127.0.0.1", _port(sqs), timeout=10)
    headers = {"Content-Type": JSON_TYPE, "Authorization": AUTHORIZATION, "X-Amz-Target": "AmazonSQS.ListQueues"}
    for body, status in ((b"[1]", 400), (b"{}", 200)):
        connection.request("POST", "/", body=body, headers=headers)
        answer = connection.getresponse()
        answer.read()
        assert answer.status == status
    connection.close()


def _error_code(call) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"]


def test_a_message_is_measured_in_utf8_bytes_not_characters(sqs):
    """600 characters of 'é' are 1200 bytes: over a 1024-byte queue's limit, which counted
    characters and took them."""
    client, url = _queue(sqs, MaximumMessageSize="1024")
    assert _error_code(lambda: client.send_message(QueueUrl=url, MessageBody="\u00e9" * 600)) == "InvalidParameterValue"
    client.send_message(QueueUrl=url, MessageBody="\u00e9" * 512)  # 1024 bytes: the limit itself is taken
    (message,) = client.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert message["Body"] == "\u00e9" * 512


def test_a_message_attributes_names_types_and_values_count_toward_its_size(sqs):
    client, url = _queue(sqs, MaximumMessageSize="1024")
    attributes = {"n" * 10: {"DataType": "String", "StringValue": "v" * 10}}  # 26 bytes
    over = lambda: client.send_message(QueueUrl=url, MessageBody="a" * 1000, MessageAttributes=attributes)  # noqa: E731
    assert _error_code(over) == "InvalidParameterValue"
    binary = {"b": {"DataType": "Binary", "BinaryValue": b"\x00" * 17}}  # 1 + 6 + 17 bytes
    client.send_message(QueueUrl=url, MessageBody="a" * 1000, MessageAttributes=binary)  # 1024 bytes: taken


def test_a_batch_entry_over_its_queue_limit_in_bytes_is_refused(sqs):
    client, url = _queue(sqs, MaximumMessageSize="1024")
    entries = [{"Id": "small", "MessageBody": "a"}, {"Id": "large", "MessageBody": "\u00e9" * 600}]
    assert _error_code(lambda: client.send_message_batch(QueueUrl=url, Entries=entries)) == "InvalidParameterValue"


def test_a_batch_over_a_mebibyte_in_bytes_is_refused_whole(sqs):
    """Ten messages of 55,000 'é' are 1.1 MB of UTF-8 but 550,000 characters: the batch limit
    counted characters, and the batch was taken."""
    client, url = _queue(sqs)
    entries = [{"Id": f"m{number}", "MessageBody": "\u00e9" * 55_000} for number in range(10)]
    too_long = _error_code(lambda: client.send_message_batch(QueueUrl=url, Entries=entries))
    assert too_long == "AWS.SimpleQueueService.BatchRequestTooLong"  # SQS's query-compatible code, as botocore reads it
    assert client.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []


def test_a_queue_takes_a_mebibyte_by_default_and_no_more_when_set(sqs):
    client, url = _queue(sqs)
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["MaximumMessageSize"])["Attributes"]
    assert attributes == {"MaximumMessageSize": str(SQS_MAX_MESSAGE_BYTES)}
    too_large = lambda: client.set_queue_attributes(  # noqa: E731
        QueueUrl=url, Attributes={"MaximumMessageSize": str(SQS_MAX_MESSAGE_BYTES + 1)})
    assert _error_code(too_large) == "InvalidAttributeValue"
