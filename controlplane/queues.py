"""The pools' queues: real AWS SQS in production, an embedded SQS-protocol server locally.

Each pool has two queues, `dhx-<installation>-<pool>` for ingestion tasks (the pool's DataHub
`queueUrl`) and `...-monitors` for monitor tasks, each with a dead-letter queue (`...-dlq`).
Every one keeps a message for SQS's longest retention, 14 days: with SQS's default (4 days) a
pool with no executor over a long weekend lost its queued runs without a word. What still
leaves a queue unclaimed is the control plane's to notice (lost_messages.py).

The embedded server is moto's SQS backend on 127.0.0.1, served by sqs_http.py. Measured (ARCHITECTURE.md):
long polling, visibility timeouts, ChangeMessageVisibility, ApproximateReceiveCount and
redrive to a DLQ behave as SQS does, once embedded_sqs.py has corrected its visibility changes
(the 12-hour cap, lapsed and replaced receipts, batch entries failing alone). ElasticMQ needs a
JVM jar that the package registries here do not carry; LocalStack needs Docker. One difference
is left: moto deletes a message given a stale receipt handle where SQS may keep it, so the
executor always deletes with the handle of its latest receive.
"""
from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from loguru import logger

from .http_guard import host_name
from .sqs_http import KeepAliveServer

LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
# The monitors queue's name is the pool queue's name plus this: an executor that knows only the
# pool's queueUrl (DataHub's field) derives it.
MONITORS_SUFFIX = "-monitors"
# SQS's longest retention (14 days), for every queue of a pool. A queue found with another (made
# before this was set, or changed by hand) is given it at the control plane's start.
MESSAGE_RETENTION_S = 1209600
DEAD_LETTER_BATCH = 10  # SQS's most messages a receive returns


@dataclass(frozen=True)
class PoolQueues:
    ingestion_url: str
    ingestion_dlq_url: str
    monitors_url: str
    monitors_dlq_url: str
    ingestion_arn: str

    @property
    def urls(self) -> list[str]:
        return [self.ingestion_url, self.ingestion_dlq_url, self.monitors_url, self.monitors_dlq_url]


class Queues:
    def __init__(self, *, region: str, endpoint_url: str | None, local: bool, installation_id: str) -> None:
        self.installation_id = installation_id  # several control planes can share one AWS account
        self.region = region
        self.endpoint_url = endpoint_url
        self.local = local
        extra = LOCAL_CREDENTIALS if local else {}
        self.client = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url, **extra)

    def create_pool_queues(self, pool_id: str, visibility_timeout_s: int, max_receive_count: int) -> PoolQueues:
        """Both of a pool's queues, each with its dead-letter queue: one for ingestion tasks and one
        for monitor tasks, so a full ingestion ledger never keeps monitors from being received.
        Idempotent: an existing queue is returned, given these attributes if it had others."""
        name = f"dhx-{self.installation_id}-{pool_id}"
        ingestion, ingestion_dlq = self._queue_with_dlq(name, visibility_timeout_s, max_receive_count)
        monitors, monitors_dlq = self._queue_with_dlq(f"{name}{MONITORS_SUFFIX}", visibility_timeout_s, max_receive_count)
        return PoolQueues(ingestion, ingestion_dlq, monitors, monitors_dlq, self.arn_of(ingestion))

    def _queue_with_dlq(self, name: str, visibility_timeout_s: int, max_receive_count: int) -> tuple[str, str]:
        dlq_url = self._queue(f"{name}-dlq", {"MessageRetentionPeriod": str(MESSAGE_RETENTION_S)})
        queue_url = self._queue(name, {
            "MessageRetentionPeriod": str(MESSAGE_RETENTION_S),
            "VisibilityTimeout": str(visibility_timeout_s),
            "ReceiveMessageWaitTimeSeconds": "20",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": self.arn_of(dlq_url),
                                         "maxReceiveCount": str(max_receive_count)}),
        })
        return queue_url, dlq_url

    def _queue(self, name: str, attributes: dict[str, str]) -> str:
        """The queue NAME with ATTRIBUTES, made or made so. SQS refuses CreateQueue for a queue
        that exists with other attributes (QueueAlreadyExists): a queue-settings change half
        applied (the first queue changed, the second call failed) or made by hand then kept
        the control plane from starting at all. Our record is the truth: it is applied."""
        try:
            return self.client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        except self.client.exceptions.QueueNameExists:
            url = self.client.get_queue_url(QueueName=name)["QueueUrl"]
            self.client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
            return url

    def set_queue_settings(self, queue_url: str, dlq_url: str, visibility_timeout_s: int, max_receive_count: int) -> None:
        self.client.set_queue_attributes(QueueUrl=queue_url, Attributes={
            "VisibilityTimeout": str(visibility_timeout_s),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": self.arn_of(dlq_url), "maxReceiveCount": str(max_receive_count)})})

    def arn_of(self, queue_url: str) -> str:
        return self.client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def delete_pool_queues(self, urls: list[str]) -> None:
        for url in urls:
            try:
                self.client.delete_queue(QueueUrl=url)
            except self.client.exceptions.QueueDoesNotExist:
                pass

    def send_text(self, queue_url: str, body: str) -> str:
        return self.client.send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"]

    def retention_of(self, queue_url: str) -> int:
        """How long, in seconds, QUEUE_URL keeps a message now (a hand edit counts until our next start)."""
        attributes = self.client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["MessageRetentionPeriod"])
        return int(attributes["Attributes"]["MessageRetentionPeriod"])

    def look_at(self, queue_url: str, hidden_s: int) -> list[dict[str, Any]]:
        """Up to DEAD_LETTER_BATCH messages of QUEUE_URL, left in it: received (no wait), each
        hidden from other receives for HIDDEN_S only, and never deleted."""
        return self.client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=DEAD_LETTER_BATCH, WaitTimeSeconds=0,
                                           VisibilityTimeout=hidden_s,
                                           AttributeNames=["ApproximateReceiveCount", "SentTimestamp"]).get("Messages", [])

    def is_missing_queue(self, exc: Exception) -> bool:
        """Whether EXC is SQS saying the queue called does not exist."""
        return isinstance(exc, self.client.exceptions.QueueDoesNotExist)


class QueueServerDidNotStart(RuntimeError):
    """The embedded SQS server did not serve in time; the message says what to do (one line)."""


# The names the embedded server answers to: it listens on 127.0.0.1 only, and boto3 names it so.
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def refuse_browsers(app: Callable) -> Callable:
    """moto's server checks no signature and answers any origin's CORS preflight: a page on any
    site the operator visits could list, read, purge and delete the pools' queues on 127.0.0.1,
    and one whose own name it points at 127.0.0.1 (DNS rebinding) needs no CORS at all. boto3
    sends neither Origin nor Sec-Fetch-Site and names the server by its address; a browser sends
    Origin with every cross-origin request and every POST, and Sec-Fetch-Site with every request
    to 127.0.0.1, and a rebound page's Host header is the attacker's name."""
    def guarded(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        host = environ.get("HTTP_HOST", "")
        if ("HTTP_ORIGIN" in environ or "HTTP_SEC_FETCH_SITE" in environ
                or host_name(host) not in LOCAL_HOSTS):
            start_response("403 Forbidden", [("Content-Type", "text/plain"), ("X-Content-Type-Options", "nosniff")])
            return [b"the embedded SQS server answers this machine's SQS clients only, not browsers\n"]
        return app(environ, start_response)
    return guarded


class EmbeddedSqs:
    """moto's SQS-protocol server on 127.0.0.1, started and stopped by the control plane; it
    answers no browser (refuse_browsers), and keeps its clients' connections open between
    requests as AWS SQS does (sqs_http.py)."""

    def __init__(self, port: int = 0) -> None:
        from . import embedded_sqs

        embedded_sqs.correct()
        self._port = port
        self._server: KeepAliveServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint_url: str | None = None

    def start(self) -> str:
        """The server's endpoint once it serves. Raises QueueServerDidNotStart where its port
        cannot be bound (taken between our check and the bind): at once, the bind being done
        here, where moto's own start waited for ever for a server thread whose bind had failed."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        dispatcher = DomainDispatcherApplication(create_backend_app)
        # moto finds the service of each request anew, under a lock every request takes: its
        # package directory listed and each of its ~200 entries stat'ed, then its services' URL
        # patterns tried in turn. The answer depends on the host alone, so it is kept: measured,
        # 1000 SendMessage calls cost the server 2.8 s of CPU instead of 3.3-4.6 s.
        dispatcher.get_backend_for_host = functools.lru_cache(maxsize=256)(dispatcher.get_backend_for_host)
        try:
            self._server = KeepAliveServer(("127.0.0.1", self._port), refuse_browsers(dispatcher),
                                           on_error=lambda what: logger.error("embedded SQS server: {}", what))
        except OSError as exc:
            raise QueueServerDidNotStart(f"the embedded SQS server cannot listen on 127.0.0.1:{self._port} "
                                         f"({exc.strerror}; is the port taken?); stop what listens there, or "
                                         "remove sqs-port from the state dir for a free one") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="embedded-sqs", daemon=True)
        self._thread.start()
        self.endpoint_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.endpoint_url

    def stop(self) -> None:
        """Stop listening and close every open connection: a client then sees the server gone
        (an SQS outage, in the fault suite), not a connection that still answers."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
