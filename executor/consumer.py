"""One of the pool's SQS queues (ingestion or monitors), as the executor uses it.

Receives only as many messages as its ledger can admit, long-polling (20 s); deletes a message
only with the receipt handle of its latest receive; returns unstarted messages at once on
shutdown (visibility 0); extends the visibility of held messages in batches. Bodies are
decoded here (vocabulary/message.py): one that is not a message of ours (not JSON, an unknown
version, an execution id or pool id without their format) is logged with its message id and
left alone, so the queue's redrive policy moves it to the dead-letter queue.

The boto3 clients are made once, by the thread that builds the consumer: creating clients from
several threads at once is not safe in botocore, using one is. Two, each with timeouts of its
own where botocore's defaults (60 s to connect, 60 s to read, three attempts: three minutes a
call) would let an SQS endpoint that accepts connections and never answers hold the stop, or the
visibility lock a give-back waits for, for minutes: the long poll's reads may take its 20 s and
some more, every other call (deletes, visibility changes) answers in milliseconds or is failed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from loguru import logger

from vocabulary.message import MAX_VISIBILITY_S, MalformedMessage, QueueMessage, decode

from .leases import QueueRef
from .text import printable

LONG_POLL_S = 20
CAP_MARGIN_S = 5  # our clock reads a receive's time after SQS starts its 12 hours
CONNECT_TIMEOUT_S = 5
CALL_READ_TIMEOUT_S = 10
LONG_POLL_CONFIG = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=LONG_POLL_S + 10,
                          retries={"mode": "standard", "max_attempts": 3})
CALL_CONFIG = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=CALL_READ_TIMEOUT_S,
                     retries={"mode": "standard", "max_attempts": 3})


@dataclass(frozen=True)
class Received:
    ref: QueueRef
    body: QueueMessage


class SqsConsumer:
    def __init__(self, queue_url: str, task_class: str, *, region: str, endpoint_url: str | None,
                 visibility_timeout_s: int, local_credentials: bool = False) -> None:
        extra = {"aws_access_key_id": "local", "aws_secret_access_key": "local"} if local_credentials else {}
        self.queue_url = queue_url
        self.task_class = task_class
        self.visibility_timeout_s = visibility_timeout_s
        self.client = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url, config=CALL_CONFIG, **extra)
        self.long_poll = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url, config=LONG_POLL_CONFIG,
                                      **extra)

    def receive(self, max_messages: int, wait_s: int = LONG_POLL_S) -> list[Received]:
        if max_messages <= 0:
            return []
        answer = self.long_poll.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=min(max_messages, 10), WaitTimeSeconds=wait_s,
            VisibilityTimeout=self.visibility_timeout_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp"],
        )
        received = []
        received_ms = int(time.time() * 1000)
        for raw in answer.get("Messages", []):
            attributes = raw.get("Attributes", {})
            # Each message on its own: one the answer misstates (no receipt handle, a count that is
            # not a number) is left alone, and the others of the batch are still handed over. Had
            # it raised, the whole batch stayed hidden for a visibility timeout, offered to no one.
            try:
                body = decode(raw["Body"])
                ref = QueueRef(task_class=self.task_class, message_id=raw["MessageId"],
                               receipt_handle=raw["ReceiptHandle"],
                               receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
                               first_received_ms=int(attributes.get("ApproximateFirstReceiveTimestamp", 0)),
                               received_ms=received_ms)
            except (MalformedMessage, KeyError, ValueError, TypeError) as exc:
                logger.error("message {} on the {} queue is malformed ({}); leaving it for the queue's redrive "
                             "policy (DLQ)", printable(str(raw.get("MessageId"))), self.task_class,
                             printable(str(exc)))
                continue
            received.append(Received(ref, body))
        return received

    def delete(self, ref: QueueRef) -> None:
        self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=ref.receipt_handle)

    def delete_batch(self, refs: list[tuple[str, QueueRef]]) -> dict[str, str]:
        """Delete up to ten (execution id, message) in one call. Returns the execution ids SQS
        refused, each with SQS's reason."""
        entries = [{"Id": str(index), "ReceiptHandle": ref.receipt_handle} for index, (_, ref) in enumerate(refs)]
        answer = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return {refs[int(f["Id"])][0]: f"{f.get('Code', '')}: {f.get('Message', '')}" for f in answer.get("Failed", [])}

    def return_now(self, ref: QueueRef, after_s: float = 0) -> None:
        """Make an unstarted message visible again, at once (shutdown) or AFTER_S seconds from now."""
        self.client.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=ref.receipt_handle,
                                              VisibilityTimeout=int(min(max(after_s, 0), MAX_VISIBILITY_S - 1)))

    def extend(self, refs: list[tuple[str, QueueRef]], now_ms: int) -> dict[str, str]:
        """Push visibility out by another timeout for each (execution id, message), in batches of
        10. Returns the execution ids SQS refused, each with SQS's reason.

        SQS caps a receipt's visibility at 12 hours from the receive that gave it (not from the
        message's first receive ever: a redelivery starts again). Near the cap the extension is
        what is left; with nothing left the message is not touched, since a visibility of 0
        would make the message of a running task visible at once."""
        failed: dict[str, str] = {}
        entries: list[tuple[str, dict]] = []
        for execution_id, ref in refs:
            since_ms = ref.received_ms or ref.first_received_ms
            elapsed_s = max(0, (now_ms - since_ms) // 1000) if since_ms else 0
            timeout = int(min(self.visibility_timeout_s, MAX_VISIBILITY_S - elapsed_s - CAP_MARGIN_S))
            if timeout > 0:
                entries.append((execution_id, {"ReceiptHandle": ref.receipt_handle, "VisibilityTimeout": timeout}))
        answered_error: ClientError | None = None
        for start in range(0, len(entries), 10):
            batch = entries[start:start + 10]
            try:
                answer = self.client.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=[{"Id": str(index), **entry} for index, (_, entry) in enumerate(batch)])
            except ClientError as exc:
                # SQS answered this call with an error (throttled, an internal error past the
                # retries): the batches after it are still sent, or their messages lapsed, the
                # running tasks' messages delivered again, for one call's error. Raised once all
                # are sent. An SQS that does not answer (a timeout) ends the turn at once instead:
                # each further call would hold the visibility lock for its own timeouts.
                answered_error = answered_error or exc
                continue
            failed.update({batch[int(f["Id"])][0]: f"{f.get('Code', '')}: {f.get('Message', '')}"
                           for f in answer.get("Failed", [])})
        if answered_error is not None:
            raise answered_error
        return failed
