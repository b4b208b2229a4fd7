"""The pool's SQS queue, as the executor uses it.

Receives only as many messages as the ledger can admit, long-polling (20 s) while idle;
deletes a message only with the receipt handle of its latest receive; returns unstarted
messages at once on shutdown (visibility 0); extends visibility of in-flight messages in
batches. Bodies are parsed here: one that does not parse, or has a `v` we do not know, is
logged with its message id and left alone, so the queue's redrive policy moves it to the DLQ.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import boto3
from loguru import logger

PROTOCOL_VERSION = 1
MAX_VISIBILITY_S = 43200  # SQS: 12 hours from the first receive


@dataclass
class TaskMessage:
    message_id: str
    receipt_handle: str
    execution_id: str
    task: str
    pool_id: str
    weight: float | None
    receive_count: int
    first_received_ms: int


class SqsConsumer:
    def __init__(self, queue_url: str, *, region: str, endpoint_url: str | None, visibility_timeout_s: int,
                 local_credentials: bool = False) -> None:
        extra = {"aws_access_key_id": "local", "aws_secret_access_key": "local"} if local_credentials else {}
        self.queue_url = queue_url
        self.visibility_timeout_s = visibility_timeout_s
        self.client = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url, **extra)

    def receive(self, max_messages: int, wait_s: int) -> list[TaskMessage]:
        if max_messages <= 0:
            return []
        answer = self.client.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=min(max_messages, 10), WaitTimeSeconds=wait_s,
            VisibilityTimeout=self.visibility_timeout_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp"],
        )
        messages = []
        for raw in answer.get("Messages", []):
            parsed = self._parse(raw)
            if parsed is not None:
                messages.append(parsed)
        return messages

    @staticmethod
    def _parse(raw: dict) -> TaskMessage | None:
        attributes = raw.get("Attributes", {})
        try:
            body = json.loads(raw["Body"])
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
            if body.get("v") != PROTOCOL_VERSION:
                raise ValueError(f"unknown protocol version {body.get('v')!r}")
            weight = body.get("weight")
            return TaskMessage(
                message_id=raw["MessageId"], receipt_handle=raw["ReceiptHandle"],
                execution_id=str(body["execution_id"]), task=str(body["task"]), pool_id=str(body.get("pool_id", "")),
                weight=float(weight) if weight is not None else None,
                receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
                first_received_ms=int(attributes.get("ApproximateFirstReceiveTimestamp", 0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("message {} is malformed ({}); leaving it for the queue's redrive policy (DLQ)",
                         raw.get("MessageId"), exc)
            return None

    def delete(self, message: TaskMessage) -> None:
        self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle)

    def return_now(self, message: TaskMessage) -> None:
        """Make an unstarted message visible again at once (shutdown)."""
        self.client.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle,
                                              VisibilityTimeout=0)

    def extend(self, messages: list[TaskMessage], now_ms: int) -> list[str]:
        """Push visibility out by another timeout for each message, in batches of 10, capped at
        12 h from the first receive. Returns the ids SQS refused (e.g. a receipt gone stale)."""
        failed: list[str] = []
        for start in range(0, len(messages), 10):
            batch = messages[start:start + 10]
            entries = []
            for index, message in enumerate(batch):
                elapsed_s = max(0, (now_ms - message.first_received_ms) // 1000) if message.first_received_ms else 0
                timeout = int(min(self.visibility_timeout_s, MAX_VISIBILITY_S - elapsed_s - 1))
                entries.append({"Id": str(index), "ReceiptHandle": message.receipt_handle, "VisibilityTimeout": max(timeout, 0)})
            answer = self.client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
            failed.extend(batch[int(f["Id"])].execution_id for f in answer.get("Failed", []))
        return failed
