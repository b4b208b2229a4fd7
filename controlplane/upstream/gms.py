"""The upstream DataHub GMS, through DataHub's own client (acryl-datahub's DataHubGraph).

The token is read from its file when a client is made, and a client is made again after a 401:
an operator who replaces the token file is heard without a restart, and a refused token is
named by its file (never shown). Every failure is one of two kinds the caller acts on:
UpstreamUnreachable (no answer, 5xx, 408, 429: try again later) and UpstreamRefused (another 4xx:
this request will not succeed as it is).

Many requests' KILL signals are read in one call (GMS's OpenAPI v3 batchGet, through the client's
get_entities), SIGNAL_CHUNK urns at a time. A DataHub that does not serve it (a release before
the OpenAPI v3 entity API: 404 or 405) is read one request at a time instead, said once in the
log, and asked again every BATCH_RETRY_S (it may have been upgraded). A batch DataHub refuses
otherwise (400: an urn among them it will not parse) is read one request at a time, and a request
whose own read is refused counts as not cancelled (said once): one such request failed every
read of the batch it was in, so no cancel among them was passed on, and a page holding it was
never taken (sync.py), nor any behind it.

The open requests' batch read (signals) asks for each request's dataHubExecutionRequestInput
too: GMS's batchGet leaves out of its answer every urn with none of the asked aspects (v3
EntityController.buildEntityVersionedAspectList), so a request it answers without an input, or
not at all, is one DataHub has no more: hard-deleted by its cleanup of old requests
(execution_request_cleanup.py deletes RUNNING and PENDING ones over a month old too) or by a
user. Only such an answer says so: a batch that fails raises, and requests read one at a time
(no batchGet, or a batch refused) are never judged deleted, as one aspect's 404 does not tell a
request without that aspect from one that is gone.

Each answer's `Date` header is kept (last_answer_date_s): DataHub dates its requests by its own
clock, and discovery (sync.py) reckons its floors in that clock, not in this machine's.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import requests
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.emitter.rest_emitter import EmitMode
from datahub.ingestion.graph.client import DataHubGraph
from datahub.ingestion.graph.config import DatahubClientConfig
from datahub.metadata.schema_classes import ExecutionRequestResultClass, ExecutionRequestSignalClass
from loguru import logger

from .. import entities as E
from . import queries

TIMEOUT_S = 15
SIGNAL_CHUNK = 100  # urns per batchGet: one small SQL read in GMS, a body of a few KiB
BATCH_RETRY_S = 600.0  # a DataHub without batchGet is asked again after this
NO_BATCH_GET = (404, 405)  # what a GMS without the OpenAPI v3 entity API answers batchGet with
UNREADABLE_SAID_MAX = 10_000  # urns whose refused signal read was logged, remembered to say each once


@dataclass
class Signals:
    """What DataHub shows of some execution requests, by urn."""

    killed: set[str] = field(default_factory=set)  # DataHub's UI cancelled them (a KILL signal)
    gone: set[str] = field(default_factory=set)  # DataHub has no input for them any more: deleted there

    def __ior__(self, other: Signals) -> Signals:
        self.killed |= other.killed
        self.gone |= other.gone
        return self


class UpstreamError(Exception):
    """Something the upstream DataHub did not do; the message never holds a token or a secret."""


class UpstreamUnreachable(UpstreamError):
    """No answer, a 5xx, a 408 or a 429: the same request may succeed later."""


class UpstreamRefused(UpstreamError):
    """Another 4xx answer (or a GraphQL error): the request will not succeed as it is."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamGms:
    def __init__(self, url: str, token_file: Path) -> None:
        self.url = url.rstrip("/")
        self.token_file = Path(token_file)
        self._graph: DataHubGraph | None = None
        self._lock = threading.Lock()
        self._no_batch_get_since: float | None = None  # monotonic; None: batchGet is served (or untried)
        self._unreadable_said: set[str] = set()
        self._strangers_said = False
        # The latest answer's Date header (epoch seconds, whole: HTTP dates have no fraction).
        self.last_answer_date_s: float | None = None

    # what the control plane asks of DataHub ---------------------------------------------------
    def execution_requests(self, start: int, count: int) -> tuple[int, list[dict[str, Any]]]:
        """A page of execution requests, newest first: (total, requests as GraphQL answers them)."""
        page = self._graphql(queries.LIST_EXECUTION_REQUESTS, {"start": start, "count": count})["listExecutionRequests"]
        if not isinstance(page, dict) or not isinstance(page.get("executionRequests"), list):
            raise UpstreamRefused("listExecutionRequests answered no executionRequests")
        total = page.get("total")
        return (total if isinstance(total, int) and not isinstance(total, bool) else 0), page["executionRequests"]

    def write_result(self, urn: str, value: dict[str, Any]) -> None:
        """DataHub's dataHubExecutionRequestResult, as DataHub's own executor writes it; to the
        primary store before the answer (DataHub's default mode, whatever DATAHUB_EMIT_MODE says
        here), so result_status reads it back at once."""
        aspect = ExecutionRequestResultClass.from_obj(value)
        if not aspect.validate():
            raise UpstreamRefused(f"the result of {urn} is not a valid dataHubExecutionRequestResult")
        self._call(lambda graph: graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=urn, aspect=aspect),
                                                emit_mode=EmitMode.SYNC_PRIMARY))

    def result_status(self, urn: str) -> str | None:
        """The status of the result DataHub shows for URN (None: none yet)."""
        result = self._call(lambda graph: graph.get_aspect(urn, ExecutionRequestResultClass))
        return result.status if result is not None else None

    def kill_requested(self, urn: str) -> bool:
        """Whether DataHub's UI cancelled the request (cancelIngestionExecutionRequest writes a
        dataHubExecutionRequestSignal KILL)."""
        signal = self._call(lambda graph: graph.get_aspect(urn, ExecutionRequestSignalClass))
        return signal is not None and signal.signal == "KILL"

    def kills_requested(self, urns: list[str]) -> set[str]:
        """Which of URNS (execution requests) DataHub's UI cancelled: ceil(len/SIGNAL_CHUNK) reads,
        or one read each from a DataHub without batchGet."""
        return self._signals(urns, with_input=False).killed

    def signals(self, cancellable: list[str], others: list[str]) -> Signals:
        """Which of CANCELLABLE DataHub's UI cancelled, and which of both lists DataHub no longer
        has (module doc), in the reads kills_requested would make of both: each request's input
        comes with its signal. Read one at a time, only CANCELLABLE's signals are read."""
        found = self._signals(cancellable + others, with_input=True, one_by_one=cancellable)
        found.killed &= set(cancellable)
        return found

    def _signals(self, urns: list[str], *, with_input: bool, one_by_one: list[str] | None = None) -> Signals:
        """ONE_BY_ONE (default: URNS): the urns whose signal is read on its own where a batch is not."""
        alone = set(urns if one_by_one is None else one_by_one)
        if urns and self._batch_get_worth_trying():
            try:
                found = Signals()
                for start in range(0, len(urns), SIGNAL_CHUNK):
                    chunk = urns[start:start + SIGNAL_CHUNK]
                    try:
                        found |= self._signals_among(chunk, with_input)
                    except UpstreamRefused as exc:
                        if exc.status in (401, 403, *NO_BATCH_GET):
                            raise
                        found.killed |= self._kills_one_by_one([urn for urn in chunk if urn in alone])
            except UpstreamRefused as exc:
                if exc.status not in NO_BATCH_GET:
                    raise
                self._batch_get_missing(exc.status)
            else:
                self._batch_get_served()
                return found
        return Signals(killed=self._kills_one_by_one([urn for urn in urns if urn in alone]))

    def _kills_one_by_one(self, urns: list[str]) -> set[str]:
        killed = set()
        for urn in urns:
            try:
                if self.kill_requested(urn):
                    killed.add(urn)
            except UpstreamRefused as exc:
                if exc.status in (401, 403):
                    raise
                if urn not in self._unreadable_said:
                    if len(self._unreadable_said) >= UNREADABLE_SAID_MAX:
                        self._unreadable_said.clear()
                    self._unreadable_said.add(urn)
                    logger.warning("DataHub refuses to show the KILL signal of {} ({}); taken as not cancelled: a "
                                   "cancel from DataHub's UI does not reach that run", urn, exc)
        return killed

    def _signals_among(self, urns: list[str], with_input: bool) -> Signals:
        names = [E.EXECUTION_SIGNAL, E.EXECUTION_INPUT] if with_input else [E.EXECUTION_SIGNAL]
        found = self._call(lambda graph: graph.get_entities(E.EXECUTION, urns, names))
        # An entity without the aspects asked for is left out of GMS's answer: nothing to cancel there.
        killed = {urn for urn, aspects in found.items()
                  if E.EXECUTION_SIGNAL in aspects and aspects[E.EXECUTION_SIGNAL][0].signal == "KILL"}
        if not with_input:
            return Signals(killed=killed)
        strangers = set(found) - set(urns)
        if strangers:
            # Urns not asked for: a DataHub (or something in its place) that spells them otherwise,
            # in whose answer every request asked for would look deleted. Nothing is judged gone.
            if not self._strangers_said:
                self._strangers_said = True
                logger.warning("DataHub at {} answered a batchGet of execution requests with urns not asked for "
                               "(such as {}); requests it deletes are not noticed while it does", self.url,
                               sorted(strangers)[0][:200])
            return Signals(killed=killed)
        return Signals(killed=killed, gone={urn for urn in urns if E.EXECUTION_INPUT not in found.get(urn, {})})

    def _batch_get_worth_trying(self) -> bool:
        since = self._no_batch_get_since
        return since is None or time.monotonic() - since >= BATCH_RETRY_S

    def _batch_get_missing(self, status: int) -> None:
        if self._no_batch_get_since is None:
            logger.warning("DataHub at {} does not serve /openapi/v3/entity/.../batchGet (HTTP {}: a release before "
                           "DataHub's OpenAPI v3 entity API); reading each open request's KILL signal on its own, "
                           "one read per request per tick, and trying batchGet again every {:.0f} s", self.url, status,
                           BATCH_RETRY_S)
        self._no_batch_get_since = time.monotonic()

    def _batch_get_served(self) -> None:
        if self._no_batch_get_since is not None:
            logger.info("DataHub at {} serves batchGet now; KILL signals are read in batches again", self.url)
        self._no_batch_get_since = None

    def secret_values(self, names: list[str]) -> dict[str, str]:
        """The values DataHub's secret store has for NAMES (those it lacks are left out)."""
        if not names:
            return {}
        found = self._graphql(queries.GET_SECRET_VALUES, {"names": names})["getSecretValues"] or []
        return {str(s["name"]): str(s["value"]) for s in found if isinstance(s, dict) and isinstance(s.get("value"), str)}

    # the client ------------------------------------------------------------------------------
    def _graphql(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        # format_exception=False: the GraphError carries GraphQL's errors as GMS sent them, codes and all.
        answer = self._call(lambda graph: graph.execute_graphql(document, variables=variables, format_exception=False))
        if not isinstance(answer, dict):
            raise UpstreamRefused("the GraphQL answer is not an object")
        return answer

    def _call(self, action):
        graph = self._client()
        try:
            return action(graph)
        except Exception as exc:
            error = self._classify(exc)
            if isinstance(error, UpstreamRefused) and error.status == 401:
                with self._lock:
                    self._graph = None  # read the token file again next time
            raise error from None

    def _client(self) -> DataHubGraph:
        with self._lock:
            if self._graph is not None:
                return self._graph
            token = self._token()
            try:
                # retry_max_times=0: an outage is ours to retry, on the sync loop's schedule.
                self._graph = DataHubGraph(DatahubClientConfig(server=self.url, token=token, timeout_sec=TIMEOUT_S,
                                                               retry_max_times=0, datahub_component="datahub-executor"))
            except Exception as exc:
                raise self._classify(exc) from None
            self._graph.session.hooks["response"].append(self._note_date)
            return self._graph

    def _note_date(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Keep the answer's Date (RFC 9110: the origin server's clock when it answered)."""
        value = response.headers.get("Date")
        if not value:
            return
        try:
            date = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return  # not an HTTP date: the last good one stays
        if date.tzinfo is None:
            date = date.replace(tzinfo=timezone.utc)  # HTTP dates are GMT
        self.last_answer_date_s = date.timestamp()

    def _token(self) -> str:
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise UpstreamRefused(f"the DataHub token file {self.token_file} cannot be read ({exc.strerror})") from None
        if not token:
            raise UpstreamRefused(f"the DataHub token file {self.token_file} is empty")
        return token

    def _classify(self, exc: BaseException) -> UpstreamError:
        """What a failure of DataHub's client means for us: walk its causes for the HTTP answer."""
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, UpstreamError):
                return seen
            if isinstance(seen, requests.HTTPError) and seen.response is not None:
                return self._for_status(seen.response.status_code)
            if isinstance(seen, requests.RequestException):
                return UpstreamUnreachable(f"DataHub at {self.url} is unreachable ({type(seen).__name__})")
            seen = seen.__cause__ or seen.__context__
        status = _status_in(exc)
        if status is not None:
            return self._for_status(status)
        name = type(exc).__name__
        if name == "GraphError":  # a GraphQL error: HTTP 200, what went wrong in each error's code
            return self._for_graphql_errors(exc)
        return UpstreamUnreachable(f"DataHub at {self.url} failed: {name}")

    def _for_graphql_errors(self, exc: BaseException) -> UpstreamError:
        """GMS answers a resolver's failure with HTTP 200 and the error's code in its extensions
        (DataHubDataFetcherExceptionHandler): SERVER_ERROR 500 for anything unforeseen (its
        database or search index failing), UNAUTHORIZED 403, BAD_REQUEST 400, ... A 5xx code is
        DataHub failing, not refusing: the same request may succeed later. Errors without a code
        (a document GMS's schema does not know) are refusals."""
        errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        codes = [e["extensions"].get("code") for e in errors
                 if isinstance(e, dict) and isinstance(e.get("extensions"), dict)]
        messages = "; ".join(str(e.get("message"))[:200] for e in errors if isinstance(e, dict)) or str(exc)[:300]
        if any(isinstance(code, int) and code >= 500 for code in codes):
            return UpstreamUnreachable(f"DataHub at {self.url} failed to answer a GraphQL request: {messages[:300]}")
        status = next((code for code in codes if code in (401, 403)), None)
        if status is not None:
            refused = self._for_status(status)
            return UpstreamRefused(f"{refused}: {messages[:300]}", status)
        return UpstreamRefused(f"DataHub at {self.url} refused the request: {messages[:300]}")

    def _for_status(self, status: int) -> UpstreamError:
        if status == 401:
            return UpstreamRefused(f"DataHub at {self.url} refused the token in {self.token_file} (401): replace the "
                                   "file's token with a valid one; it is read again on the next try", 401)
        if status == 403:
            return UpstreamRefused(f"DataHub at {self.url} refused this request to the token in {self.token_file} "
                                   "(403): its user lacks a privilege (docs/datahub-oss.md lists them)", 403)
        # 408: a proxy in front gave up waiting on a slow DataHub (Envoy's stream idle timeout),
        # 429: DataHub throttles; both ask for the request again, neither is DataHub's verdict.
        if status >= 500 or status in (408, 429):
            return UpstreamUnreachable(f"DataHub at {self.url} answered HTTP {status}")
        return UpstreamRefused(f"DataHub at {self.url} answered HTTP {status}", status)


def _status_in(exc: BaseException) -> int | None:
    """The HTTP status a DataHub client error carries in its info (OperationalError's dict)."""
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, dict) and isinstance(arg.get("status"), int):
            return arg["status"]
    return None
