"""The SQS message that tells an executor an execution is waiting (docs/protocol.md).

    {"v": 1, "execution_id": "exe_...", "task": "RUN_INGEST", "pool_id": "remote", "requested_at": 1763942400000}

It carries no recipe, no secret and no weight: anyone who can send to a queue can forge one, so
the executor trusts nothing in it but the shape. The execution id must have the control plane's
format (it goes into URL paths and file names), and the claim answer, not the message, says
which task runs, in which pool, with what weight.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from . import json_text
from .ids import InvalidId, execution_id as check_execution_id, pool_id as check_pool_id

PROTOCOL_VERSION = 1
MAX_BODY_BYTES = 4096
# SQS's longest visibility timeout, and the longest a message may stay in flight from its
# first receive: 12 hours. A pool's timeout and the executor's setting are both bounded by it.
MAX_VISIBILITY_S = 43200


class MalformedMessage(ValueError):
    """A body that is not a message of this protocol; the message says why."""


@dataclass(frozen=True)
class QueueMessage:
    execution_id: str
    task: str
    pool_id: str
    requested_at_ms: int


def encode(execution_id: str, task: str, pool_id: str, requested_at_ms: int) -> str:
    return json.dumps({"v": PROTOCOL_VERSION, "execution_id": execution_id, "task": task, "pool_id": pool_id,
                       "requested_at": requested_at_ms})


def decode(body: str) -> QueueMessage:
    if len(body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        raise MalformedMessage(f"body over {MAX_BODY_BYTES} bytes")
    try:
        data = json_text.loads(body)
    except ValueError:
        raise MalformedMessage("body is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedMessage("body is not a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise MalformedMessage(f"unknown protocol version {str(data.get('v'))[:20]!r}")
    try:
        execution_id = check_execution_id(data.get("execution_id"))
        pool_id = check_pool_id(data.get("pool_id"))
    except InvalidId as exc:
        raise MalformedMessage(str(exc)) from None
    task = data.get("task")
    if not isinstance(task, str) or not task.isidentifier() or len(task) > 64:
        raise MalformedMessage("task is not a task name")
    requested_at = data.get("requested_at", 0)
    if isinstance(requested_at, bool) or not isinstance(requested_at, int):
        raise MalformedMessage("requested_at is not a timestamp in milliseconds")
    return QueueMessage(execution_id, task, pool_id, requested_at)
