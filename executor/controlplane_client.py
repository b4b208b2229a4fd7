"""The executor's one client for the control plane: DataHub's endpoints for what DataHub has an
operation for, our own (/gms/executor/v1) for the rest (docs/protocol.md).

- the pool's queues: GET /entitiesV2/{pool urn} (dataHubRemoteExecutorPoolInfo and its extras);
- heartbeat: an ingested dataHubRemoteExecutorStatus (409: another process has this executor id);
- claim, release, full log: our endpoints, the last two with the claim's lease;
- progress and result: an ingested dataHubExecutionRequestResult carrying the lease in the
  proposal's headers (409: the lease is stale, the execution is someone else's now);
- cancellation: DataHub's KILL signal aspect, read with GET /aspects.

One pool of keep-alive connections (controlplane_http.py), retries configured once: connection
errors, 5xx and the 4xx that mean "not now" (408, 425, 429: DataHub's own emitter retries them)
are retried with backoff, a Retry-After obeyed up to RETRY_AFTER_MAX_S; any other 3xx or 4xx is
final and raised with the server's reason. A success must be what the control plane answers (a
JSON object): a 200 with anything else is a proxy or portal in the way, and retried like an
outage, never taken for a recorded result. An outage is logged once when it starts and once when
it ends, never per attempt. The token is sent, never logged. Every id that goes into a URL path
has been validated and is quoted.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from loguru import logger
from urllib3.util.retry import Retry

from vocabulary import ids
from vocabulary.message import MAX_VISIBILITY_S
from vocabulary.results import LEASE_HEADER

from . import datahub_aspects as aspects
from .controlplane_http import Answer, AnswerTooLarge, ControlPlaneHttp, TransportError, json_body
from .text import printable

EXECUTOR_PREFIX = "/executor/v1"
# The largest answer read from the control plane. A claim carries the recipe (itself capped at
# 1 MiB by the YAML guard) and its arguments; anything near this is broken or hostile, and
# reading it whole would put it in the master's memory.
MAX_ANSWER_BYTES = 16 << 20
MONITORS_SUFFIX = "-monitors"
# 4xx answers that say "not now", not "no": a gateway's timeout, too early, throttled.
NOT_NOW = frozenset({408, 425, 429})
# The longest wait a Retry-After may ask for: one gateway's "Retry-After: 3600" put the heartbeat
# thread to sleep for an hour, and the control plane, healthy again a second later, judged the
# executor gone and ended its tasks.
RETRY_AFTER_MAX_S = 10.0
# One try of a call that must not hold back what follows it (the full log before the result): a
# control plane that takes connections and never answers held a result back ~80 s through the
# default retries, past a container's stop grace period.
QUICK_TIMEOUT_S = 10.0
T = TypeVar("T")


class ControlPlaneError(Exception):
    """A final (4xx) answer, or an outage that outlasted the retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def final(self) -> bool:
        """A 4xx (or a redirect, which is not followed): the control plane answered and said no;
        retrying cannot help. Not one that says "not now" (NOT_NOW)."""
        return self.status is not None and 300 <= self.status < 500 and self.status not in NOT_NOW


def pool_lookup_fix(error: ControlPlaneError, pool_id: str) -> str | None:
    """What to do about the control plane refusing the lookup of POOL_ID, in one sentence, or
    None where its own message says it (a redirect names where to). Said by `check` and by `run`
    when it cannot start, alike: `run` said only the refusal ("HTTP 401: unknown token")."""
    if error.status == 401:
        return "token refused (401): generate a Remote Executor token and set DATAHUB_GMS_TOKEN"
    if error.status == 403:
        return f"token not scoped to pool {pool_id} (403): use a token for this pool"
    if error.status == 404:
        return f"pool {pool_id} does not exist: create it, or fix DATAHUB_EXECUTOR_POOL_ID"
    return None


class CappedRetry(Retry):
    """urllib3's Retry, obeying a Retry-After only up to RETRY_AFTER_MAX_S."""

    def get_retry_after(self, response) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, RETRY_AFTER_MAX_S)


class LeaseLost(ControlPlaneError):
    """409 on a call that carried a lease: the execution is held by another run now."""


class Stop(Protocol):
    """What retry_through_outages asks of its STOP: a threading.Event, or a wait of one's own."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float) -> bool: ...


def retry_through_outages(call: Callable[[], T], *, stop: Stop | None = None, what: str = "call") -> T:
    """CALL, retried across control-plane outages with backoff (the session already retried each
    attempt). A final (4xx) answer is raised at once; so is the last error once STOP is set.
    Without STOP it never gives up: results are delivered late rather than dropped."""
    delay = 1.0
    while True:
        try:
            return call()
        except ControlPlaneError as exc:
            if exc.final or (stop is not None and stop.is_set()):
                raise
            logger.debug("{} failed ({}); retrying in {:.0f} s", what, exc, delay)
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
            delay = min(delay * 2, 30)


@dataclass(frozen=True)
class PoolQueues:
    pool_id: str
    ingestion_queue_url: str
    monitors_queue_url: str
    region: str
    endpoint_url: str | None  # the embedded queue server of a local control plane; None for AWS
    visibility_timeout_s: int | None


@dataclass(frozen=True)
class Claimed:
    execution_id: str
    lease: str = field(repr=False)  # a credential for this execution: kept out of reprs, so out of logs
    task: str
    pool_id: str
    args: dict[str, Any]
    ingest_token: str = field(repr=False)
    # Where the task's default sink writes, when not to this control plane: an upstream DataHub's
    # GMS and the token its operator gave for ingesting there (docs/datahub-oss.md).
    sink_server: str | None = None
    sink_token: str | None = field(default=None, repr=False)
    # Secrets the control plane fetched for this run (an upstream DataHub's secret store), held
    # in memory for this task only; the executor's own stores come first.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # How the control plane takes the full log (vocabulary/full_log.py): none listed, plain only.
    log_encodings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClaimDeferred:
    """409, but not for good: the execution's holder stopped extending this very message and is
    not yet judged gone, or this process may not claim (it said STOPPED, or its executor id is
    another process's now) and another executor should. Ask again, or let another executor ask,
    after RETRY_AFTER_S: the message is returned, not deleted. WHY is the control plane's reason."""

    retry_after_s: float
    why: str = ""


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class ControlPlaneClient:
    def __init__(self, gms_url: str, token: str, *, retries: int = 4, timeout_s: float = 15.0) -> None:
        self.gms_url = gms_url.rstrip("/")
        retry = CappedRetry(total=retries, connect=retries, read=retries, status=retries, redirect=0, backoff_factor=0.5,
                            backoff_max=10, status_forcelist=(500, 502, 503, 504, *NOT_NOW), allowed_methods=None,
                            raise_on_status=False, raise_on_redirect=False)
        headers = {"Authorization": f"Bearer {token}", "X-RestLi-Protocol-Version": "2.0.0"}
        self.http = ControlPlaneHttp(self.gms_url, headers, retry=retry, timeout_s=timeout_s)
        self._token = token  # for quick(); never logged
        self._quick: ControlPlaneClient | None = None
        self._down = False
        self._lock = threading.Lock()

    def quick(self) -> ControlPlaneClient:
        """A client of the same control plane and token that makes one try, QUICK_TIMEOUT_S at most
        waiting for an answer: for a call that must not hold back the one after it."""
        with self._lock:
            if self._quick is None:
                self._quick = ControlPlaneClient(self.gms_url, self._token, retries=0, timeout_s=QUICK_TIMEOUT_S)
            return self._quick

    @property
    def reachable(self) -> bool:
        return not self._down

    def _state(self, down: bool, detail: str = "") -> None:
        with self._lock:
            if down == self._down:
                return
            self._down = down
        if down:
            logger.warning("control plane unreachable at {}: {}; retrying with backoff", self.gms_url, detail)
        else:
            logger.info("control plane reachable again at {}", self.gms_url)

    def _call(self, method: str, path: str, *, json_value: Any = None, data: bytes | None = None,
              headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201),
              lease_error: bool = False) -> Answer:
        if json_value is not None:
            data, headers = json_body(json_value), {"Content-Type": "application/json", **(headers or {})}
        try:
            answer = self.http.request(method, path, body=data, headers=headers, max_answer_bytes=MAX_ANSWER_BYTES)
        except AnswerTooLarge as exc:
            logger.error("control plane answered {} {} with {}; refused, not read", method, path, exc)
            raise ControlPlaneError(f"{method} {path}: answer refused: {exc}") from None
        except TransportError as exc:
            self._state(True, str(exc))
            raise ControlPlaneError(f"{method} {path}: control plane unreachable ({exc})") from None
        if answer.status >= 500 or answer.status in NOT_NOW:
            self._state(True, f"HTTP {answer.status}")
            raise ControlPlaneError(f"{method} {path}: HTTP {answer.status}", answer.status)
        self._state(False)
        if answer.status not in ok:
            reason = _reason(answer)
            if 300 <= answer.status < 400:
                reason = (f"redirected to {answer.headers.get('Location', '?')}, which is not followed: "
                          "set DATAHUB_GMS_URL to where it points")
            error = LeaseLost if lease_error and answer.status == 409 else ControlPlaneError
            raise error(f"{method} {path}: HTTP {answer.status}: {reason}", answer.status)
        return answer

    def _json(self, answer: Answer) -> dict[str, Any]:
        """The answer's JSON object. Every answer read is one: anything else (not JSON, a list, a
        string) is a broken control plane or something between, retried like an outage, and never
        an AttributeError in a runner that would end its task."""
        try:
            body = answer.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._state(True, "an answer that is not a JSON object")
            raise ControlPlaneError(f"{answer.method} {answer.path}: HTTP {answer.status} "
                                    "with a body that is not a JSON object")
        return body

    def _ingest(self, proposal: dict[str, Any], *, lease_error: bool = False) -> None:
        """One proposal, stored once GMS's answer says so: {"value": <its urn>}."""
        answer = self._json(self._call("POST", "/aspects?action=ingestProposal",
                                       json_value={"proposal": proposal, "async": "false"}, lease_error=lease_error))
        if "value" not in answer:
            self._state(True, "an ingest answer without its value")
            raise ControlPlaneError("POST /aspects?action=ingestProposal: the answer is not GMS's ({\"value\": urn})")

    # DataHub's endpoints ---------------------------------------------------------------------
    def pool(self, pool_id: str) -> PoolQueues:
        """The pool's queues, from its dataHubRemoteExecutorPoolInfo (404: no such pool)."""
        urn = f"urn:li:dataHubRemoteExecutorPool:{ids.pool_id(pool_id)}"
        answer = self._json(self._call("GET", f"/entitiesV2/{_segment(urn)}?aspects=List(dataHubRemoteExecutorPoolInfo)"))
        envelope = _object(_object(answer.get("aspects"), "aspects").get("dataHubRemoteExecutorPoolInfo"),
                           "dataHubRemoteExecutorPoolInfo")
        if not envelope:
            # GMS answers any urn, stored or not, with its key aspect: no pool info is no pool.
            raise ControlPlaneError(f"pool {pool_id} not found (no dataHubRemoteExecutorPoolInfo)", 404)
        info = _object(envelope.get("value"), "dataHubRemoteExecutorPoolInfo's value")
        if not info.get("queueUrl"):
            raise ControlPlaneError(f"pool {pool_id} has no queue (queueUrl is empty)", 404)
        extras = _object(_object(envelope.get("systemMetadata"), "systemMetadata").get("properties"),
                         "systemMetadata's properties")
        visibility = str(extras.get("visibilityTimeoutSeconds") or "")
        return PoolQueues(pool_id=pool_id, ingestion_queue_url=str(info["queueUrl"]),
                          monitors_queue_url=extras.get("monitorsQueueUrl") or f"{info['queueUrl']}{MONITORS_SUFFIX}",
                          region=info.get("queueRegion") or "us-east-1", endpoint_url=extras.get("sqsEndpointUrl"),
                          # Another DataHub's pool may name any number: over SQS's ceiling every receive would fail.
                          visibility_timeout_s=(min(int(visibility), MAX_VISIBILITY_S) or None) if visibility.isdigit()
                          else None)

    def heartbeat(self, executor_id: str, status: dict[str, Any], properties: dict[str, str]) -> None:
        """Write this process's dataHubRemoteExecutorStatus (409: the id belongs to another live process)."""
        urn = f"urn:li:dataHubRemoteExecutor:{ids.executor_id(executor_id)}"
        self._ingest(aspects.proposal("dataHubRemoteExecutor", urn, "dataHubRemoteExecutorStatus", status,
                                      properties=properties))

    def report(self, execution_id: str, lease: str, result: dict[str, Any]) -> None:
        """Write the execution's dataHubExecutionRequestResult under our lease (LeaseLost: 409)."""
        urn = f"urn:li:dataHubExecutionRequest:{ids.execution_id(execution_id)}"
        self._ingest(aspects.proposal("dataHubExecutionRequest", urn, "dataHubExecutionRequestResult", result,
                                      headers={LEASE_HEADER: lease}), lease_error=True)

    def cancel_requested(self, execution_id: str) -> bool:
        """Whether DataHub's KILL signal was written for the execution."""
        urn = f"urn:li:dataHubExecutionRequest:{ids.execution_id(execution_id)}"
        answer = self._call("GET", f"/aspects/{_segment(urn)}?aspect=dataHubExecutionRequestSignal&version=0",
                             ok=(200, 404))
        if answer.status == 404:
            return False
        signal = _object(self._json(answer).get("aspect"), "the signal aspect").values()
        return any(isinstance(value, dict) and value.get("signal") == "KILL" for value in signal)

    # our endpoints ---------------------------------------------------------------------------
    def claim(self, execution_id: str, *, executor_id: str, instance_id: str, pool_id: str,
              receive_count: int | None, message_id: str | None = None) -> Claimed | ClaimDeferred | None:
        """The lease, task and arguments; None when the execution is not ours to run (409: final,
        a duplicate, running elsewhere); ClaimDeferred when its holder may be gone soon."""
        path = f"{EXECUTOR_PREFIX}/executions/{_segment(ids.execution_id(execution_id))}/claim"
        response = self._call("POST", path, json_value={"executor_id": executor_id, "instance_id": instance_id,
                                                        "pool_id": pool_id, "receive_count": receive_count,
                                                        "message_id": message_id}, ok=(200, 409))
        if response.status == 409:
            refusal = self._json(response)
            retry = refusal.get("retry_after_s")
            if not isinstance(retry, (int, float)) or retry <= 0:
                return None
            return ClaimDeferred(float(retry), printable(str(refusal.get("message") or ""), 300))
        answer = self._json(response)
        try:
            sink = answer.get("sink") or {}
            provided = answer.get("secrets") or {}
            encodings = answer.get("log_encodings") or []
            if not isinstance(sink, dict) or not isinstance(provided, dict) or not isinstance(encodings, list):
                raise TypeError("sink and secrets are objects, log_encodings a list")
            return Claimed(execution_id=str(answer["execution_id"]), lease=str(answer["lease"]), task=str(answer["task"]),
                           pool_id=str(answer["pool_id"]), args=dict(answer.get("args") or {}),
                           ingest_token=str(answer["ingest_token"]),
                           sink_server=str(sink["server"]) if sink.get("server") else None,
                           sink_token=str(sink["token"]) if sink.get("token") else None,
                           secrets={str(k): str(v) for k, v in provided.items() if isinstance(v, str)},
                           log_encodings=tuple(str(e) for e in encodings))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise ControlPlaneError(f"POST {path}: the claim answer is not a claim") from None

    def release(self, execution_id: str, lease: str, why: str, *, failed: bool = False) -> None:
        """Give a claimed, unstarted execution back; FAILED when this executor broke rather than
        stopped (the control plane fails an execution given back so three times)."""
        path = f"{EXECUTOR_PREFIX}/executions/{_segment(ids.execution_id(execution_id))}/release"
        self._json(self._call("POST", path, json_value={"why": why, "failed": failed}, headers={LEASE_HEADER: lease},
                              lease_error=True))

    def upload_log(self, execution_id: str, lease: str, data: bytes, *, encoding: str | None = None) -> None:
        """DATA, the run's full log; ENCODING (gzip) only where the claim's log_encodings list it."""
        path = f"{EXECUTOR_PREFIX}/executions/{_segment(ids.execution_id(execution_id))}/log"
        headers = {LEASE_HEADER: lease, "Content-Type": "text/plain; charset=utf-8"}
        if encoding:
            headers["Content-Encoding"] = encoding
        self._json(self._call("PUT", path, data=data, headers=headers, lease_error=True))


def _object(value: Any, what: str) -> dict[str, Any]:
    """VALUE, a JSON object inside an answer (absent or null: empty); anything else is a broken
    answer: an error (not final) the caller retries or reports, never an AttributeError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ControlPlaneError(f"the control plane's answer is broken: {what} is not a JSON object")
    return value


def _reason(answer: Answer) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:500]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:500]
    return str(body)[:500]
