"""moto's SQS, corrected where it differs from AWS SQS in what the executor or an operator relies on.

The embedded queue server (queues.EmbeddedSqs) is moto's. Its visibility changes differ from
SQS's in these ways, each of which a test shows with boto3 (tests/controlplane/test_embedded_sqs.py):

- The 12-hour cap counted from the message's send, not from the receive that gave the receipt:
  a message that waited in the queue, or was redelivered after a long first attempt, could not
  be held to the end of the extension the executor computes from its receive.
- Any receipt the message ever had changed its visibility, also one whose visibility had lapsed
  and one a later receive had replaced: a resumed (paused, cut off) executor's extension hid a
  message that every executor should have been able to receive, and its give-back (visibility
  0) made the message its new holder was running visible to a third executor. SQS answers both
  with InvalidParameterValue ("The receipt handle has expired"; "Message does not exist or is
  not available for visibility timeout change").
- ChangeMessageVisibilityBatch let an entry's refusal other than an unknown receipt fail the
  whole call (the visibility extender read it as an SQS outage and extended none of the ten), and
  took empty, oversized and repeated-Id batches that SQS refuses whole. The single call took a
  negative timeout (the message visible at once), which SQS refuses; so did ReceiveMessage,
  whose message could then be received again at once.
- DeleteMessageBatch judged a batch's entries distinct by their receipts, not their Ids: it
  took repeated Ids, and refused whole a batch in which one receipt came twice (every message of
  it back, a redelivery each), where SQS deletes each entry alone; and it took over ten entries.
  Neither batch call checked its entries' Ids, which SQS refuses whole (InvalidBatchEntryId)
  unless each is 1-80 letters, digits, hyphens and underscores: a client's Ids that only the
  embedded server took would fail on SQS.
- A message given back (visibility 0) woke no waiting long poll, which saw it only at its next
  scan, up to a second later; it is woken now, as by a send.

Requests botocore never sends failed with HTTP 500 (which botocore retries, then reports as
"500"): moto's parser walks a request's parameters as the operation's input shapes, assuming
each is of its type. A body not JSON, or not an object, was taken as no parameters. Each request
is now checked before moto parses it (`dispatch_checked`), and refused as SQS refuses it, with
HTTP 400 in the request's own protocol: an action missing, unknown or not implemented here; a
body that is not UTF-8 or not a JSON object; a parameter of the wrong type or a required one
missing (InvalidParameterValue, MissingParameter).

moto measured a message in characters and without its attributes, where SQS counts bytes: the
body's UTF-8 and each attribute's name, data type and value. A message of 'é's under a queue's
MaximumMessageSize in characters but over it in bytes was taken, and so was a batch over SQS's
1 MiB total in bytes. Both are refused now (InvalidParameterValue, BatchRequestTooLong).

moto also kept a message past its queue's retention period, where SQS deletes it: its receive
marked the message received, then skipped it and ended its scan, so the receive answered
without the messages behind it. Such messages are now deleted before each receive's scan. And
moto took queue attributes SQS refuses (InvalidAttributeValue): numbers out of SQS's ranges,
and failed with HTTP 500 on a number that is not one or a redrive policy that is not JSON.

`correct()` replaces those backend methods and moto's DeleteMessageBatch handler, and records
each receive's time; it is applied
once per process, before the server starts. moto's state lives in the process, so it applies to
every moto SQS backend in it, which only makes them closer to SQS.

Deleting with an earlier receipt still deletes (SQS documents that such a delete may or may not
delete); the executor always deletes with its latest receipt.

moto is also slow where a queue holds many messages, and `correct()` makes it less so without
changing an answer. Each receive computed every attribute of the queue, three of them counting
the queue's messages, to read one (the retention period), and moto reads the clock through
datetime arithmetic (~10 us a call) once per message per scan: with 300 messages in flight a
send, receive, visibility change and delete cost the server ~48 ms of CPU against ~12 ms with
none. The clock is read with time.time() (the same seconds since the epoch) and the retention
period from the queue itself.

moto's backend also assumes one request at a time, and the server runs each request on a
thread of its own. Two receives could both find a message visible and both hand it out (166
double deliveries in 6,000 messages, eight receivers), a receive that copied the set of
in-flight messages while a delete changed it failed with HTTP 500 ("Set changed size during
iteration"), and a delete with the message's latest receipt could be refused as invalid. Every
backend call now runs under one lock; a receive's long poll waits outside it, between scans.

And moto kept every receipt of every deleted message, so that deleting again succeeds, for the
life of the process: about 300 bytes a task, a leak in a control plane that runs for months. The
last DELETED_RECEIPTS_KEPT are kept per queue; a delete with an older one is refused as invalid,
as SQS may refuse a receipt it no longer knows. Each message kept every receipt it was given too,
which a dead-letter queue's message, looked at every 30 s for 14 days, makes ~40,000: the last
OLD_RECEIPTS_KEPT are kept.
"""
from __future__ import annotations

import functools
import inspect
import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from botocore.model import Shape
from moto.core import utils as moto_utils
from moto.core.request import Request
from moto.core.responses import ActionResult, BaseResponse
from moto.sqs import models, responses
from moto.sqs.constants import MAXIMUM_VISIBILITY_TIMEOUT
from moto.sqs.exceptions import (
    BatchEntryIdsNotDistinct,
    BatchRequestTooLong,
    EmptyBatchRequest,
    InvalidAttributeValue,
    InvalidBatchEntryId,
    InvalidParameterValue,
    ReceiptHandleIsInvalid,
    SQSException,
    TooManyEntriesInBatchRequest,
)

from .sqs_http import request_abandoned

BATCH_LIMIT = 10  # SQS's entries per batch call
BATCH_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")  # SQS's rule for a batch entry's Id (ASCII only)
# SQS's largest message (its MaximumMessageSize's highest value and default) and a batch's largest
# total, both 1 MiB since August 2025 (256 KiB before): the SQS API reference, SetQueueAttributes
# and SendMessageBatch.
MAX_MESSAGE_BYTES = 1_048_576
# SQS's range for each of a queue's numeric attributes (SetQueueAttributes)
QUEUE_ATTRIBUTE_RANGES = {"DelaySeconds": (0, 900), "MaximumMessageSize": (1024, MAX_MESSAGE_BYTES),
                          "MessageRetentionPeriod": (60, 1209600), "ReceiveMessageWaitTimeSeconds": (0, 20),
                          "VisibilityTimeout": (0, MAXIMUM_VISIBILITY_TIMEOUT)}
DELETED_RECEIPTS_KEPT = 10_000  # per queue: a few thousand deleted messages' receipts, ~3 MB
# Per message, its receipts before the latest; moto kept them all. SQS's highest maxReceiveCount,
# so that only a queue without redrive, a dead-letter queue, loses any: the control plane looks
# at its messages every 30 s for 14 days, ~40,000 receipts (~10 MB) each, copied at each receive.
OLD_RECEIPTS_KEPT = 1000
EXPIRED_LOOK_INTERVAL_MS = 1000  # how often, at most, a queue's expired messages are looked for
_corrected = False
_lock = threading.Lock()


def correct() -> None:
    """Make moto's SQS answer visibility changes as SQS does (idempotent)."""
    global _corrected
    with _lock:
        if _corrected:
            return
        receive = models.Message.mark_received

        def mark_received(message: models.Message, visibility_timeout: int | None = None) -> None:
            receive(message, visibility_timeout)
            message.received_at_ms = unix_time_millis()  # SQS's 12 hours count from here
            del message._old_receipt_handles[:-OLD_RECEIPTS_KEPT]

        models.Message.mark_received = mark_received
        models.SQSBackend.change_message_visibility = change_message_visibility
        set_attributes, create = models.SQSBackend.set_queue_attributes, models.SQSBackend.create_queue

        def set_queue_attributes(backend: models.SQSBackend, queue_name: str, attributes: dict[str, Any]) -> Any:
            check_queue_attributes(attributes)
            return set_attributes(backend, queue_name, attributes)

        def create_queue(backend: models.SQSBackend, name: str, tags: dict[str, str] | None = None,
                         **attributes: Any) -> Any:
            check_queue_attributes(attributes)
            return create(backend, name, tags, **attributes)

        models.SQSBackend.set_queue_attributes = set_queue_attributes
        models.SQSBackend.create_queue = create_queue
        models.SQSBackend.change_message_visibility_batch = change_message_visibility_batch
        send, send_batch = models.SQSBackend.send_message, models.SQSBackend.send_message_batch

        def send_message(backend: models.SQSBackend, queue_name: str, message_body: str,
                         message_attributes: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
            check_message_size(backend.get_queue(queue_name), message_size(message_body, message_attributes))
            return send(backend, queue_name, message_body, message_attributes, *args, **kwargs)

        def send_message_batch(backend: models.SQSBackend, queue_name: str, entries: dict[str, dict[str, Any]]) -> Any:
            check_batch_size(backend.get_queue(queue_name), list(entries.values()))
            return send_batch(backend, queue_name, entries)

        models.SQSBackend.send_message = send_message
        models.SQSBackend.send_message_batch = send_message_batch
        responses.SQSResponse.delete_message_batch = delete_message_batch
        responses.SQSResponse._dispatch = dispatch_checked
        responses.SQSResponse.parse_parameters = parse_parameters_checked
        models.unix_time = unix_time
        models.unix_time_millis = unix_time_millis
        models.SQSBackend.is_message_valid_based_on_retention_period = is_within_retention_period
        make_queue = models.Queue.__init__

        def queue_init(queue: models.Queue, *args: Any, **kwargs: Any) -> None:
            make_queue(queue, *args, **kwargs)
            queue.deleted_messages = RecentReceipts()

        models.Queue.__init__ = queue_init
        serialize_backend()
        _corrected = True


# moto's backend state (queues, their messages and in-flight sets) is read and changed by every
# request thread: one lock, reentrant since backend methods call one another.
_backend_lock = threading.RLock()
POLL_SLICE_S = 1.0  # a waiting receive scans again at least this often (moto's own wait slice)


def serialize_backend() -> None:
    """Every public SQSBackend method under _backend_lock; receive_message as scans under it
    with the long poll's waits outside, so a receive waiting 20 s holds no other request up."""
    for name, method in list(vars(models.SQSBackend).items()):
        if inspect.isfunction(method) and not name.startswith("_") and name != "receive_message":
            setattr(models.SQSBackend, name, _under_lock(method))
    scan = models.SQSBackend.receive_message

    def receive_message(backend: models.SQSBackend, queue_name: str, count: int, wait_seconds_timeout: int,
                        visibility_timeout: int, message_attribute_names: list[str] | None = None) -> list[Any]:
        check_visibility_timeout(visibility_timeout)  # moto's handler checks only the upper bound
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            if request_abandoned():  # the server stopped: what this scan took, no one would receive
                return []
            with _backend_lock:
                queue = backend.get_queue(queue_name)
                drop_expired(queue)
                found = scan(backend, queue_name, count, 0, visibility_timeout, message_attribute_names)
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            # Woken by a send (moto notifies this condition); a message whose visibility lapses
            # notifies nothing, so the slice bounds how late it is seen, as in moto's own loop.
            queue.wait_for_messages(min(left, POLL_SLICE_S))
            if time.monotonic() >= deadline:
                # The poll ends with its wait, as moto's does: no scan after it. One more found a
                # message whose visibility lapsed at that very moment, and the executor's test of
                # held messages, which asks exactly then, saw them visible again.
                return []

    models.SQSBackend.receive_message = receive_message


def _under_lock(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _backend_lock:
            return method(*args, **kwargs)
    return locked


class RecentReceipts:
    """The receipts of deleted messages, as moto's Queue.delete_message reads and adds them
    (`in`, `update`), holding only the last DELETED_RECEIPTS_KEPT."""

    def __init__(self) -> None:
        self._receipts: OrderedDict[str | None, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, receipt: object) -> bool:
        return receipt in self._receipts

    def __len__(self) -> int:
        return len(self._receipts)

    def update(self, receipts: Iterable[str | None]) -> None:
        with self._lock:  # the server serves each connection on a thread of its own
            for receipt in receipts:
                self._receipts[receipt] = None
                self._receipts.move_to_end(receipt)
            while len(self._receipts) > DELETED_RECEIPTS_KEPT:
                self._receipts.popitem(last=False)


def unix_time(dt: datetime | None = None) -> float:
    """moto's unix_time, from time.time() when it asks for now (moto's own builds a datetime)."""
    return time.time() if dt is None else moto_utils.unix_time(dt)


def unix_time_millis(dt: datetime | None = None) -> float:
    return unix_time(dt) * 1000.0


def is_within_retention_period(backend: models.SQSBackend, queue_name: str, message: models.Message) -> bool:
    """moto's test, reading the one attribute it needs rather than computing them all."""
    retention_s = int(backend.get_queue(queue_name).message_retention_period)
    return retention_s + message.sent_timestamp / 1000 > unix_time()


def drop_expired(queue: models.Queue) -> None:
    """Delete QUEUE's messages kept for its retention period, as SQS does. moto's receive only
    skipped such a message, once it had marked it received, and ended its scan there: the
    receive answered without the messages behind it (none, for ever, with VisibilityTimeout 0),
    and the message was kept in memory for good. Looked for at most once a second per queue:
    a receive's cost must not grow with its queue (decision 75), and retention counts in minutes."""
    now_ms = unix_time_millis()
    if now_ms - getattr(queue, "expired_looked_for_ms", 0) < EXPIRED_LOOK_INTERVAL_MS:
        return
    queue.expired_looked_for_ms = now_ms
    oldest_kept_ms = now_ms - int(queue.message_retention_period) * 1000
    expired = {message for message in queue._messages if message.sent_timestamp <= oldest_kept_ms}
    if expired:
        queue._messages = [message for message in queue._messages if message not in expired]
        queue.pending_messages.difference_update(expired)


def check_queue_attributes(attributes: dict[str, Any]) -> None:
    """What SQS refuses of a queue's attributes with InvalidAttributeValue. moto took a number
    out of SQS's range (a visibility timeout over 12 hours, a maxReceiveCount of 0, which
    dead-letters every message before any receive) and failed on one that is not a number or a
    redrive policy that is not JSON (HTTP 500, which botocore retries, then a ClientError "500"),
    having set the attributes before it."""
    for name, (lowest, highest) in QUEUE_ATTRIBUTE_RANGES.items():
        if name in attributes and not _integer_within(attributes[name], lowest, highest):
            raise InvalidAttributeValue(name)
    policy = attributes.get("RedrivePolicy")
    if policy:  # "" removes the queue's policy
        try:
            policy = json.loads(policy) if isinstance(policy, str) else policy
        except ValueError:
            raise InvalidAttributeValue("RedrivePolicy") from None
        if not isinstance(policy, dict) or (policy and not _integer_within(policy.get("maxReceiveCount"), 1, 1000)):
            raise InvalidAttributeValue("RedrivePolicy")


def _integer_within(value: Any, lowest: int, highest: int) -> bool:
    try:
        return lowest <= int(value) <= highest
    except (TypeError, ValueError):
        return False


def check_visibility_timeout(visibility_timeout: int) -> None:
    if not 0 <= int(visibility_timeout) <= MAXIMUM_VISIBILITY_TIMEOUT:
        raise InvalidParameterValue(f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. "
                                    f"Reason: Must be between 0 and {MAXIMUM_VISIBILITY_TIMEOUT}.")


def change_message_visibility(backend: models.SQSBackend, queue_name: str, receipt_handle: str,
                              visibility_timeout: int) -> None:
    check_visibility_timeout(visibility_timeout)
    queue = backend.get_queue(queue_name)
    now_ms = unix_time_millis()
    for message in queue._messages:
        if message.receipt_handle != receipt_handle:
            if message.had_receipt_handle(receipt_handle):  # received again since: only the latest receipt counts
                raise InvalidParameterValue(f"Value {receipt_handle} for parameter ReceiptHandle is invalid. Reason: "
                                            "Message does not exist or is not available for visibility timeout change.")
            continue
        if message.visible:  # not in flight any more: its visibility lapsed (or was set to 0)
            raise InvalidParameterValue(f"Value {receipt_handle} for parameter ReceiptHandle is invalid. Reason: "
                                        "The receipt handle has expired.")
        received_at_ms = getattr(message, "received_at_ms", None) or now_ms
        if now_ms + int(visibility_timeout) * 1000 > received_at_ms + MAXIMUM_VISIBILITY_TIMEOUT * 1000:
            raise InvalidParameterValue(f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. Reason: "
                                        f"Total VisibilityTimeout for the message is beyond the limit "
                                        f"[{MAXIMUM_VISIBILITY_TIMEOUT} seconds]")
        message.change_visibility(visibility_timeout)
        if int(visibility_timeout) == 0:
            queue.pending_messages.discard(message)
            # Visible now: a waiting long poll is woken, as by a send (it would see the message
            # only at its next scan, up to POLL_SLICE_S later).
            with queue._messages_lock:
                queue._messages_lock.notify_all()
        return
    raise ReceiptHandleIsInvalid()


def change_message_visibility_batch(backend: models.SQSBackend, queue_name: str,
                                    entries: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Each entry succeeds or fails alone, with the error the single call would give."""
    check_batch(entries, "ChangeMessageVisibility")
    backend.get_queue(queue_name)  # a queue that does not exist fails the call, not each entry
    success: list[str] = []
    failed: list[dict[str, Any]] = []
    for entry in entries:
        try:
            change_message_visibility(backend, queue_name, entry["ReceiptHandle"], int(entry["VisibilityTimeout"]))
        except SQSException as exc:
            failed.append({"Id": entry["Id"], "SenderFault": True, "Code": exc.code, "Message": exc.message})
        except (KeyError, TypeError, ValueError):
            failed.append({"Id": entry["Id"], "SenderFault": True, "Code": "InvalidParameterValue",
                           "Message": "Visibility timeout invalid"})
        else:
            success.append(entry["Id"])
    return success, failed


def check_batch(entries: list[dict[str, Any]], action: str) -> None:
    """What SQS refuses of a batch as a whole: none, over ten, an Id it does not allow, or an Id
    twice."""
    if not entries:
        raise EmptyBatchRequest(action=action)
    if len(entries) > BATCH_LIMIT:
        raise TooManyEntriesInBatchRequest(len(entries))
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry.get("Id"), str) or not BATCH_ENTRY_ID.fullmatch(entry["Id"]):
            raise InvalidBatchEntryId()
        if entry["Id"] in seen:
            raise BatchEntryIdsNotDistinct(entry["Id"])
        seen.add(entry["Id"])


def delete_message_batch(response: responses.SQSResponse) -> ActionResult:
    """moto's handler with SQS's checks: the batch refused whole only as SQS refuses it; each
    entry deleted, or failed, alone (a receipt given twice is deleted, then deleted again)."""
    queue_name = response._get_queue_name()
    entries = response._get_param("Entries", [])
    check_batch(entries, "Delete")
    success, failed = response.sqs_backend.delete_message_batch(queue_name, entries)
    return ActionResult({"Successful": [{"Id": entry_id} for entry_id in success], "Failed": failed})


def message_size(body: str, attributes: dict[str, Any] | None) -> int:
    """A message's size as SQS counts it against MaximumMessageSize: its body in UTF-8, and each
    attribute's name, data type and value (a binary value as its bytes, not their base64)."""
    size = len(body.encode())
    for name, attribute in (attributes or {}).items():
        value = attribute.get("StringValue", attribute.get("BinaryValue", b""))
        size += len(name.encode()) + len(attribute.get("DataType", "").encode())
        size += len(value if isinstance(value, bytes) else str(value).encode())
    return size


def check_message_size(queue: models.Queue, size: int) -> None:
    if size > int(queue.maximum_message_size):
        raise InvalidParameterValue("One or more parameters are invalid. Reason: Message must be shorter than "
                                    f"{queue.maximum_message_size} bytes.")


def check_batch_size(queue: models.Queue, entries: list[dict[str, Any]]) -> None:
    """What SQS refuses of a batch for its size: the whole batch over 1 MiB (BatchRequestTooLong),
    or one message over its queue's limit, before any message of it is sent."""
    sizes = [message_size(entry.get("MessageBody") or "", entry.get("MessageAttributes")) for entry in entries]
    if sum(sizes) > MAX_MESSAGE_BYTES:
        raise BatchRequestTooLong(sum(sizes))
    for size in sizes:
        check_message_size(queue, size)


class RequestRefused(SQSException):
    """A request SQS refuses before acting on it (HTTP 400, the sender's fault)."""


SQS_TARGET_PREFIX = "AmazonSQS"  # the JSON protocol's X-Amz-Target is "AmazonSQS.<action>"
# A JSON value's Python types for each shape type of SQS's input shapes; a blob is base64 text
# in JSON, and bytes once moto has parsed a query-protocol request.
SHAPE_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "long": (int,), "boolean": (bool,), "blob": (str, bytes),
    "list": (list,), "map": (Mapping,), "structure": (Mapping,)}  # moto's parsed parameters are a Mapping


def dispatch_checked(response: responses.SQSResponse, request: Request, full_url: str | None = None,
                     headers: Any = None) -> tuple[int, dict[str, str], str]:
    """moto's dispatch of one SQS request, with what SQS refuses of a request refused first, as
    SQS does, where moto's parser and handlers failed on it with HTTP 500 or took it. A JSON
    body is checked before moto parses it (its parser iterates a string given for a list); a
    query's values are strings, checked as moto's parser reads them as their types."""
    try:
        input_shape = moto_utils.get_service_model("sqs").operation_model(requested_action(request)).input_shape
        given = json_parameters(request) if _is_json(request) else None
        if given is not None:
            check_parameters(given, input_shape)
        response.setup_class(request, full_url, headers)
        if given is None:
            check_parameters(response.params, input_shape)
    except RequestRefused as refused:
        return refusal_answer(request, refused)
    return response.call_action()


def parse_parameters_checked(response: responses.SQSResponse, request: Request) -> None:
    """moto's parse of a request's parameters by its operation's input shapes, which reads each
    value as its shape's type: a value that is not one (a query's MaxNumberOfMessages=x) is
    the sender's fault, not the server's."""
    try:
        BaseResponse.parse_parameters(response, request)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise RequestRefused("InvalidParameterValue",
                             f"The request's parameters are not those of {response._get_action()}: {exc}") from None


def _is_json(request: Request) -> bool:
    return (request.content_type or "").startswith("application/x-amz-json")


@functools.cache
def implemented_actions() -> frozenset[str]:
    """The SQS actions moto has a handler for (the others failed with NotImplementedError)."""
    handlers = set(moto_utils.method_names_from_class(responses.SQSResponse))
    return frozenset(action for action in moto_utils.get_service_model("sqs").operation_names
                     if moto_utils.camelcase_to_underscores(action) in handlers)


def requested_action(request: Request) -> str:
    """The SQS action REQUEST names (X-Amz-Target in the JSON protocol, Action in the query
    protocol), if the embedded server answers it."""
    if _is_json(request):
        target = request.headers.get("X-Amz-Target") or ""
        prefix, _, action = target.rpartition(".")
        if target and prefix != SQS_TARGET_PREFIX:
            raise RequestRefused("InvalidAction", f"{target[:100]} is not an SQS action: X-Amz-Target is "
                                                  f"{SQS_TARGET_PREFIX}.<action>.")
    else:
        action = request.values.get("Action") or ""
    if not action:
        raise RequestRefused("MissingAction", "The request must contain the parameter Action.")
    if action not in moto_utils.get_service_model("sqs").operation_names:
        raise RequestRefused("InvalidAction", f"The action or operation requested is invalid: {action[:100]}.")
    if action not in implemented_actions():
        raise RequestRefused("UnsupportedOperation", f"{action} is an SQS action the embedded SQS server does "
                                                     "not implement.")
    return action


def json_parameters(request: Request) -> dict[str, Any] | None:
    """A JSON-protocol request's parameters: its body, a JSON object (none, for an empty body).
    None for a gzipped body, which moto decompresses and reads itself."""
    if request.content_encoding == "gzip":
        return None
    try:
        parameters = json.loads(request.data.decode()) if request.data else {}
    except ValueError:  # UnicodeDecodeError is one
        parameters = None
    if not isinstance(parameters, dict):
        raise RequestRefused("SerializationException", "The request's body is not a JSON object in UTF-8.")
    return parameters


def check_parameters(parameters: Mapping[str, Any], input_shape: Shape | None) -> None:
    """Refuse PARAMETERS as SQS would, before moto's handler reads them as well-typed."""
    refusal = parameter_refusal(parameters, input_shape, "")
    if refusal is not None:
        raise refusal


def parameter_refusal(value: Any, shape: Shape | None, name: str) -> RequestRefused | None:
    """Why SQS refuses VALUE, given for the parameter NAME of SHAPE: not of its type
    (InvalidParameterValue), or without a member its shape requires (MissingParameter). A
    member given as null is taken as not given, as moto's parser takes it."""
    expected = SHAPE_TYPES.get(shape.type_name) if shape is not None else None
    if expected is not None and (not isinstance(value, expected)
                                 or (isinstance(value, bool) and bool not in expected)):  # True is an int
        return RequestRefused("InvalidParameterValue", f"Value {str(value)[:100]} for parameter "
                                                       f"{name or 'the request'} is invalid. Reason: it must be of "
                                                       f"type {shape.type_name}.")
    members: list[tuple[str, Any, Shape]] = []
    if shape is not None and shape.type_name == "structure":
        for required in shape.required_members:
            if value.get(required) is None:
                return RequestRefused("MissingParameter", f"The request must contain the parameter "
                                                          f"{_member(name, required)}.")
        members = [(_member(name, member), value[member], member_shape)
                   for member, member_shape in shape.members.items() if value.get(member) is not None]
    elif shape is not None and shape.type_name == "list":
        members = [(_member(name, str(number)), item, shape.member) for number, item in enumerate(value, 1)]
    elif shape is not None and shape.type_name == "map":
        members = [(_member(name, str(key)), item, shape.value) for key, item in value.items()]
    for member_name, member_value, member_shape in members:
        refusal = parameter_refusal(member_value, member_shape, member_name)
        if refusal is not None:
            return refusal
    return None


def _member(parent: str, member: str) -> str:
    return f"{parent}.{member}" if parent else member


def refusal_answer(request: Request, refused: RequestRefused) -> tuple[int, dict[str, str], str]:
    """REFUSED as SQS answers it, HTTP 400 in the request's protocol: a JSON object with the
    x-amzn-query-error header botocore reads its code from, or the query protocol's XML."""
    if _is_json(request):
        body = json.dumps({"__type": f"com.amazonaws.sqs#{refused.code}", "message": refused.message})
        return 400, {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": f"{refused.code};Sender",
                     "x-amzn-RequestId": str(uuid.uuid4())}, body
    body = (f'<ErrorResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/"><Error><Type>Sender</Type>'
            f"<Code>{escape(refused.code)}</Code><Message>{escape(refused.message)}</Message><Detail/></Error>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
    return 400, {"Content-Type": "text/xml"}, body
