"""Upstream mode's loop against a real DataHub API: a control plane in embedded mode plays DataHub
(over HTTP, read and written with DataHub's own client), and a second control plane's
UpstreamSync is driven step by step, so each test decides when a scan or a tick happens."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from loguru import logger
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig
from datahub.metadata.schema_classes import (AuditStampClass, ExecutionRequestInputClass, ExecutionRequestResultClass,
                                             ExecutionRequestSignalClass, ExecutionRequestSourceClass)

from controlplane import entities as E
from controlplane.errors import Conflict
from controlplane.testing import ControlPlaneHandle, running_controlplane
from controlplane.upstream import gms as gms_module, sync as sync_module
from controlplane.upstream.sync import UpstreamConfig, UpstreamSync
from tests.faults.faulty_proxy import FaultyProxy

from .conftest import ExecutorDouble

POOL = "remote"
RECIPE = '{"source": {"type": "datahub-mock-data", "config": {}}}'
MINUTE_MS = 60_000


@dataclass
class Pair:
    datahub: ControlPlaneHandle  # plays the upstream DataHub
    ours: ControlPlaneHandle  # the control plane whose pool runs DataHub's requests
    graph: DataHubGraph  # DataHub's own client, on the stand-in
    ingest_token_file: Path

    def sync(self, url: str | None = None, poll_interval_s: float = 2.0) -> UpstreamSync:
        config = UpstreamConfig(url=url or self.datahub.gms_url, token_file=self.datahub.server.admin_token_path,
                                ingest_token_file=self.ingest_token_file, poll_interval_s=poll_interval_s)
        return UpstreamSync(self.ours.cp, config)

    def request(self, execution_id: str, requested_at_ms: int, executor_id: str = POOL) -> MetadataChangeProposalWrapper:
        """An execution request as DataHub stores it (DataHub checks nothing of its input)."""
        return MetadataChangeProposalWrapper(entityUrn=E.execution_urn(execution_id), aspect=ExecutionRequestInputClass(
            task="RUN_INGEST", args={"recipe": RECIPE}, executorId=executor_id, requestedAt=requested_at_ms,
            source=ExecutionRequestSourceClass(type="MANUAL_INGESTION_SOURCE")))

    def create(self, *requests: MetadataChangeProposalWrapper) -> None:
        for start in range(0, len(requests), 100):
            self.graph.emit_mcps(list(requests[start:start + 100]))

    def local_ids(self) -> set[str]:
        return {e["id"] for e in self.ours.cp.executions.list()[1]}


@pytest.fixture
def pair(tmp_path) -> Iterator[Pair]:
    ingest_token_file = tmp_path / "ingest-token"
    ingest_token_file.write_text("dhx_unused-by-these-tests")
    with running_controlplane(tmp_path / "datahub") as datahub, running_controlplane(tmp_path / "ours") as ours:
        ours.create_pool(POOL)
        with DataHubGraph(DatahubClientConfig(server=datahub.gms_url, token=datahub.admin_token)) as graph:
            yield Pair(datahub, ours, graph, ingest_token_file)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_request_dated_in_the_future_does_not_hide_every_later_request(pair):
    """DataHub stores any requestedAt; one far ahead (another executor's, a client's bad clock)
    must not move the scan's floor past the requests created after it."""
    sync = pair.sync()
    pair.create(pair.request("from-the-future", now_ms() + 365 * 24 * 60 * MINUTE_MS, executor_id="someone-else"))
    assert sync.discover() == []
    pair.create(pair.request("ours", now_ms()))
    assert sync.discover() == ["ours"]
    assert "ours" in pair.local_ids()


class _ClockAhead:
    """The time module as the sync loop sees it on a machine whose clock is AHEAD_S ahead of
    DataHub's (monotonic time is the same everywhere)."""

    def __init__(self, ahead_s: float) -> None:
        self.ahead_s = ahead_s
        self.monotonic = time.monotonic

    def time(self) -> float:
        return time.time() + self.ahead_s


def test_a_datahub_whose_clock_is_hours_behind_ours_still_has_its_new_requests_taken(pair, monkeypatch):
    """DataHub dates a request by its own clock. Three hours behind ours (more than the first
    start's lookback), a request made in DataHub just now looked older than this control plane's
    first look, and was never taken: not on this scan, nor on any later one (the floor only rises)."""
    monkeypatch.setattr(sync_module, "time", _ClockAhead(3 * 3600))
    lines: list[str] = []
    sink = logger.add(lambda line: lines.append(str(line)), level="INFO", format="{message}")
    try:
        sync = pair.sync()
        pair.create(pair.request("made-after-our-first-look", now_ms()))  # now_ms(): the stand-in DataHub's clock
        assert sync.discover() == ["made-after-our-first-look"]
        pair.create(pair.request("made-later", now_ms()))
        assert sync.discover() == ["made-later"]
        assert {"made-after-our-first-look", "made-later"} <= pair.local_ids()
        assert sync.discover() == [], "each taken once"
    finally:
        logger.remove(sink)
    said = [line for line in lines if "DataHub's clock" in line]
    assert len(said) == 1 and "behind" in said[0], said
    # The skew said is the least the last Date allows, read some time after that answer (whole
    # seconds, rounded): within a few seconds of the three hours either way.
    assert 3 * 3600 - 5 <= int(said[0].split("clock is ")[1].split(" s ")[0]) <= 3 * 3600 + 5, said[0]


def test_a_first_look_taken_while_our_clock_was_ahead_does_not_hide_the_requests_made_since(pair, monkeypatch):
    """The first start records its first look by this machine's clock, once and for good. Started
    with that clock two hours ahead (a host before NTP set it), then set right and restarted, the
    first look's floor stayed an hour ahead of every clock: every request made in DataHub meanwhile
    fell below it and was never taken, on that scan or any later one, and nothing was logged."""
    monkeypatch.setattr(sync_module, "time", _ClockAhead(2 * 3600))
    pair.sync()  # the first start: its first look is recorded two hours ahead
    monkeypatch.setattr(sync_module, "time", time)  # NTP sets our clock right; the control plane restarts
    sync = pair.sync()
    pair.create(pair.request("made-after-the-clock-was-set", now_ms()))
    assert sync.discover() == ["made-after-the-clock-was-set"]
    assert "made-after-the-clock-was-set" in pair.local_ids()


def test_a_wrong_date_far_ahead_does_not_lift_the_floor_over_new_requests(pair, monkeypatch):
    """Only a DataHub behind ours moves the floor: an answer whose Date is a year ahead (a
    proxy's broken clock) must not hide the requests made since, as a requestedAt that far
    ahead must not."""
    sync = pair.sync()
    monkeypatch.setattr(sync.gms, "_note_date", lambda response, *a, **k: None)
    sync.gms.last_answer_date_s = time.time() + 365 * 24 * 3600
    pair.create(pair.request("made-now", now_ms()))
    assert sync.discover() == ["made-now"]


def test_a_backlog_longer_than_one_scan_is_read_to_its_end_by_the_next_scans(pair, monkeypatch):
    """After an outage or on a busy DataHub, more requests than one discovery reads (MAX_PAGES
    pages) can be newer than one of ours: the next discoveries go on down to it instead of moving
    the cursor to the newest request and leaving ours below the floor for good. (Two pages a
    discovery here, not twenty: the stand-in lists only its newest 1,000 requests.)"""
    monkeypatch.setattr(sync_module, "MAX_PAGES", 2)
    t0 = now_ms() - 10 * MINUTE_MS
    backlog = sync_module.MAX_PAGES * sync_module.PAGE + 1
    pair.create(pair.request("ours", t0),
                *(pair.request(f"other-{i}", t0 + MINUTE_MS + i, executor_id="someone-else") for i in range(backlog)))
    sync = pair.sync()
    taken = [execution_id for _ in range(4) for execution_id in sync.discover()]
    assert taken == ["ours"]
    assert "ours" in pair.local_ids()
    assert sync.discover() == [], "taken once"


@pytest.fixture
def proxy(pair) -> Iterator[FaultyProxy]:
    """The stand-in DataHub behind a proxy that breaks chosen answers."""
    broken = FaultyProxy(pair.datahub.gms_url)
    yield broken
    broken.stop()


def test_a_failing_search_does_not_hold_back_datahubs_cancels_or_our_results(pair, proxy):
    """DataHub's listExecutionRequests (its search index) answering 500 while its aspects answer:
    a cancel from DataHub's UI still reaches our run, and the run's end is still written back."""
    sync = pair.sync(url=proxy.url, poll_interval_s=0.5)  # a scan due at every tick
    pair.create(pair.request("ours", now_ms()))
    assert sync.discover() == ["ours"]
    proxy.break_("POST", "/api/graphql", status=500)
    pair.graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=E.execution_urn("ours"), aspect=ExecutionRequestSignalClass(
        signal="KILL", createdAt=AuditStampClass(time=now_ms(), actor="urn:li:corpuser:datahub"))))
    stop = threading.Event()
    loop = threading.Thread(target=sync.run, args=(stop,))
    loop.start()
    try:
        shown = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (shown is None or shown.status != "CANCELLED"):
            time.sleep(0.2)
            shown = pair.graph.get_aspect(E.execution_urn("ours"), ExecutionRequestResultClass)
    finally:
        stop.set()
        loop.join()
    assert pair.ours.execution("ours")["status"] == "CANCELLED", "the cancel reached our run"
    assert shown is not None and shown.status == "CANCELLED", "and DataHub shows how it ended"


SECRET_RECIPE = '{"source": {"type": "datahub-mock-data", "config": {"password": "${DB_PASSWORD}"}}}'


def taken(pair: Pair, sync: UpstreamSync, execution_id: str, recipe: str = SECRET_RECIPE, *,
          attached: bool = True) -> ExecutorDouble:
    """A request for RECIPE in DataHub, taken by SYNC, and an executor of the pool, heartbeating,
    ready to claim it. ATTACHED: SYNC answers the claims of DataHub's runs first (its sink and
    DataHub's secrets); a test of the write-back alone leaves it out."""
    if attached:
        sync.attach()
    request = pair.request(execution_id, now_ms())
    request.aspect.args["recipe"] = recipe
    pair.create(request)
    assert sync.discover() == [execution_id]
    executor = ExecutorDouble(pair.ours, POOL, "executor-1")
    executor.heartbeat()
    return executor


def claim(pair: Pair, executor: ExecutorDouble, execution_id: str) -> requests.Response:
    """The executor's claim, as it sends it (the answer's status is what this test looks at)."""
    return requests.post(f"{pair.ours.gms_url}/executor/v1/executions/{execution_id}/claim",
                         headers={"Authorization": f"Bearer {executor.token}"}, timeout=30,
                         json={"executor_id": executor.executor_id, "instance_id": executor.instance_id,
                               "pool_id": POOL, "receive_count": 1, "message_id": None})


def test_a_claim_while_datahub_refuses_our_token_waits_for_datahubs_secrets(pair, tmp_path):
    """A refused token (expired, revoked, being replaced) is an outage of DataHub, not a verdict
    on the secrets: the claim answers 503 and the executor asks again, instead of running the
    recipe without DataHub's values (SECRET_NOT_FOUND). Once the file holds a good token, the
    next claim has them."""
    pair.datahub.graphql("mutation($i: CreateSecretInput!) { createSecret(input: $i) }",
                         i={"name": "DB_PASSWORD", "value": "pw-" + tmp_path.name})
    made = pair.datahub._admin("POST", "/tokens", json={"kind": "admin", "description": "upstream mode"})
    token_file = tmp_path / "datahub-token"
    token_file.write_text(made["token"])
    sync = UpstreamSync(pair.ours.cp, UpstreamConfig(url=pair.datahub.gms_url, token_file=token_file,
                                                     ingest_token_file=pair.ingest_token_file))
    executor = taken(pair, sync, "ours")
    pair.datahub._admin("DELETE", f"/tokens/{made['id']}")

    refused = claim(pair, executor, "ours")
    assert refused.status_code == 503, "claimed without DataHub's secrets"
    assert pair.ours.execution("ours")["status"] == "PENDING", "nothing claimed"

    token_file.write_text(pair.datahub.admin_token)
    answer = claim(pair, executor, "ours")
    assert answer.status_code == 200, answer.json().get("error")
    assert answer.json()["secrets"] == {"DB_PASSWORD": "pw-" + tmp_path.name}


def test_a_claim_hands_over_datahubs_secret_named_with_a_default(pair, tmp_path):
    """`${DB_PASSWORD:-none}` names DB_PASSWORD: DataHub's stored value wins over the default, as
    in DataHub's own executor. Only plain ${NAME}s were fetched, so the default won here."""
    pair.datahub.graphql("mutation($i: CreateSecretInput!) { createSecret(input: $i) }",
                         i={"name": "DB_PASSWORD", "value": "pw-" + tmp_path.name})
    executor = taken(pair, pair.sync(), "defaulted", '{"source": {"type": "datahub-mock-data", "config": '
                                                        '{"password": "${DB_PASSWORD:-none}", "user": "${DB_USER:-reader}"}}}')

    answer = claim(pair, executor, "defaulted")
    assert answer.status_code == 200, answer.json().get("error")
    assert answer.json()["secrets"] == {"DB_PASSWORD": "pw-" + tmp_path.name}, "DB_USER has no value: its default stays"


def test_a_request_no_check_foresaw_is_refused_and_discovery_goes_on(pair):
    """extraArgs nested past Python's recursion limit (DataHub stores any string) broke the check
    with a RecursionError: every scan stopped at that request, so the requests after it in the
    scan were never taken and the cursor never moved. Refused instead, as any request that
    cannot run."""
    t = now_ms()
    poison = pair.request("poison", t)
    poison.aspect.args["extra_env_vars"] = "[" * 100_000 + "]" * 100_000
    pair.create(pair.request("older", t - 1000), poison, pair.request("newer", t + 1000))
    sync = pair.sync()
    assert sorted(sync.discover()) == ["newer", "older", "poison"]
    assert {"older", "newer"} <= pair.local_ids() and "poison" not in pair.local_ids()
    sync.push()
    shown = pair.graph.get_aspect(E.execution_urn("poison"), ExecutionRequestResultClass)
    assert shown is not None and shown.status == "FAILURE" and "INVALID_ARGUMENTS" in shown.report


def test_a_final_result_answered_by_something_other_than_datahub_is_written_again(pair, proxy):
    """A 200 that is not GMS's (a captive portal, a broken load balancer) to the final result's
    write: DataHub's emitter checks only the status, so the request was closed as written and
    DataHub never showed how the run ended. A final result counts as written once DataHub shows it."""
    sync = pair.sync(url=proxy.url)
    pair.create(pair.request("ours", now_ms()))
    assert sync.discover() == ["ours"]
    executor = ExecutorDouble(pair.ours, POOL, "executor-1")
    executor.heartbeat()
    executor.finish(executor.claim("ours"), "SUCCESS")
    portal = proxy.break_("POST", "ingestProposal", times=1)
    for _ in range(3):
        sync.tick()
    assert portal.hits == 1, "the write met the portal"
    shown = pair.graph.get_aspect(E.execution_urn("ours"), ExecutionRequestResultClass)
    assert shown is not None and shown.status == "SUCCESS", f"DataHub shows {shown.status if shown else None}"


def test_a_claim_waiting_on_a_hanging_datahub_holds_up_no_other_call(pair, proxy, monkeypatch):
    """The claim of a run whose recipe names secrets asks DataHub for them (getSecretValues).
    A DataHub that takes the request and never answers must delay that claim only: asked on the
    API's event loop, it froze every call (heartbeats, results, /health) until DataHub's client
    gave up, long enough for the sweep to judge healthy executors lost (decision 52's lesson)."""
    monkeypatch.setattr(gms_module, "TIMEOUT_S", 120)  # the hang lasts until this test ends it
    sync = pair.sync(url=proxy.url)
    executor = taken(pair, sync, "ours")
    hung = proxy.hang("POST", "/api/graphql")
    answers: list[int] = []
    claiming = threading.Thread(target=lambda: answers.append(claim(pair, executor, "ours").status_code))
    claiming.start()
    try:
        deadline = time.monotonic() + 20
        while hung.hits == 0:
            assert time.monotonic() < deadline, "the claim never asked DataHub"
            time.sleep(0.05)
        time.sleep(0.2)  # the claim is inside DataHub's client now
        executor.heartbeat()  # 10 s of patience: the hang outlasts it
        health = requests.get(f"{pair.ours.base_url}/health", timeout=10)
        assert health.status_code == 200
    finally:
        proxy.stop()  # DataHub's connection drops: the claim answers
        claiming.join(timeout=30)
    assert answers == [503], "the claim waits for DataHub's secrets"
    assert pair.ours.execution("ours")["status"] == "PENDING"


def test_a_request_cancelled_in_datahub_before_it_was_taken_never_runs(pair):
    """Created and cancelled in DataHub's UI while this control plane was down (or between two
    scans): the KILL signal is there before the request is taken. It was adopted PENDING and
    queued, and an executor could claim it and start it before the next step passed the cancel
    on; it ends CANCELLED as it is taken, and DataHub is told so."""
    pair.create(pair.request("cancelled-meanwhile", now_ms()))
    pair.graph.emit_mcp(MetadataChangeProposalWrapper(
        entityUrn=E.execution_urn("cancelled-meanwhile"), aspect=ExecutionRequestSignalClass(
            signal="KILL", createdAt=AuditStampClass(time=now_ms(), actor="urn:li:corpuser:datahub"))))
    sync = pair.sync()
    assert sync.discover() == ["cancelled-meanwhile"]
    executor = ExecutorDouble(pair.ours, POOL, "executor-1")
    executor.heartbeat()
    answer = claim(pair, executor, "cancelled-meanwhile")
    assert answer.status_code == 409, "an executor could start a run DataHub's user had cancelled"
    assert pair.ours.execution("cancelled-meanwhile")["status"] == "CANCELLED"
    sync.push()
    shown = pair.graph.get_aspect(E.execution_urn("cancelled-meanwhile"), ExecutionRequestResultClass)
    assert shown is not None and shown.status == "CANCELLED"


def graphql_error(code: int, message: str) -> bytes:
    """What GMS answers when a resolver fails: HTTP 200, the error's code in its extensions
    (DataHubDataFetcherExceptionHandler: SERVER_ERROR 500, UNAUTHORIZED 403, ...)."""
    return json.dumps({"errors": [{"message": message, "locations": [{"line": 1, "column": 30}],
                                   "path": ["getSecretValues"], "extensions": {"code": code, "type": "SERVER_ERROR"}}],
                       "data": {"getSecretValues": None}}).encode()


def a_claim_waits_for_datahubs_secrets(pair, proxy, tmp_path, **failure) -> None:
    """A run whose recipe names DataHub's secret DB_PASSWORD, claimed while DataHub's
    getSecretValues fails once as FAILURE says (proxy.break_'s status and body): that claim is
    refused with 503 and nothing is claimed; the next one gets the secret."""
    pair.datahub.graphql("mutation($i: CreateSecretInput!) { createSecret(input: $i) }",
                         i={"name": "DB_PASSWORD", "value": "pw-" + tmp_path.name})
    sync = pair.sync(url=proxy.url)
    executor = taken(pair, sync, "ours")
    failing = proxy.break_("POST", "/api/graphql", body_has=(b"getSecretValues",), times=1, **failure)

    refused = claim(pair, executor, "ours")
    assert failing.hits == 1
    assert refused.status_code == 503, "claimed without DataHub's secrets"
    assert pair.ours.execution("ours")["status"] == "PENDING", "nothing claimed"

    answer = claim(pair, executor, "ours")
    assert answer.status_code == 200, answer.json().get("error")
    assert answer.json()["secrets"] == {"DB_PASSWORD": "pw-" + tmp_path.name}


def test_a_claim_while_datahubs_secret_store_fails_waits_instead_of_running_without_its_secrets(pair, proxy, tmp_path):
    """getSecretValues failing inside GMS (its database or search briefly down) is answered
    as GraphQL answers every resolver's failure: HTTP 200 with an error whose code is 500.
    That was read as DataHub refusing the secrets, so the run went on without them and failed
    SECRET_NOT_FOUND; it is DataHub not answering, and the claim waits for it (503)."""
    a_claim_waits_for_datahubs_secrets(pair, proxy, tmp_path, body=graphql_error(
        500, "Failed to perform update against input"))


def test_a_claim_whose_secrets_a_proxy_gave_up_waiting_for_waits_instead_of_running_without_them(pair, proxy, tmp_path):
    """A proxy in front of a slow DataHub (Envoy's stream idle timeout, as in an Istio mesh)
    answers 408 Request Timeout: a request to repeat, not DataHub's verdict. It was read as a
    refusal, so the run went on without DataHub's secrets and failed SECRET_NOT_FOUND."""
    a_claim_waits_for_datahubs_secrets(pair, proxy, tmp_path, status=408, body=b"stream timeout")


def test_a_claim_whose_token_may_not_read_datahubs_secrets_runs_without_them(pair, proxy):
    """The other side of the same answer: GMS's UNAUTHORIZED (code 403, the token's user lacks
    MANAGE_SECRETS) is a verdict, not an outage: the run gets no DataHub secrets (decision 39)."""
    sync = pair.sync(url=proxy.url)
    executor = taken(pair, sync, "ours")
    proxy.break_("POST", "/api/graphql", body_has=(b"getSecretValues",), body=graphql_error(
        403, "Unauthorized to perform this action. Please contact your DataHub administrator."))
    answer = claim(pair, executor, "ours")
    assert answer.status_code == 200, answer.json().get("error")
    assert not answer.json().get("secrets")


def test_a_claim_of_a_finished_run_is_refused_without_asking_datahub(pair, proxy, tmp_path):
    """A redelivered message of a run that has ended: the claim is refused (409) and the executor
    deletes the message. The claim asked DataHub for the recipe's secrets first, so while
    DataHub failed the answer was 503 and the executor kept asking instead."""
    sync = pair.sync(url=proxy.url)
    executor = taken(pair, sync, "ours")
    claimed = executor.claim("ours")
    assert claimed is not None
    executor.finish(claimed)
    failing = proxy.break_("POST", "/api/graphql", body=graphql_error(500, "Failed to perform update against input"),
                           body_has=(b"getSecretValues",))
    answer = claim(pair, executor, "ours")
    assert answer.status_code == 409, answer.status_code
    assert failing.hits == 0, "DataHub was not asked for a finished run's secrets"


def kill_in_datahub(pair: Pair, execution_id: str) -> None:
    """What DataHub's UI writes for Cancel (cancelIngestionExecutionRequest)."""
    pair.graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=E.execution_urn(execution_id), aspect=ExecutionRequestSignalClass(
        signal="KILL", createdAt=AuditStampClass(time=now_ms(), actor="urn:li:corpuser:datahub"))))


def test_the_open_requests_kill_signals_are_read_in_a_few_batched_reads_and_a_kill_still_cancels(pair, proxy, monkeypatch):
    """With hundreds of requests queued, one read of the KILL signal per open request per tick
    was hundreds of GMS reads a second. Read with GMS's batchGet (DataHubGraph.get_entities),
    SIGNAL_CHUNK urns at a time, N open requests cost ceil(N / SIGNAL_CHUNK) reads, at a tick and
    when a scan takes them; a KILL on one of them still cancels it here."""
    monkeypatch.setattr(gms_module, "SIGNAL_CHUNK", 4)
    runs = [f"run-{i}" for i in range(10)]
    pair.create(*(pair.request(run, now_ms() - i) for i, run in enumerate(runs)))
    sync = pair.sync(url=proxy.url)
    batched, one_by_one = proxy.watch("POST", "/openapi/v3/entity/"), proxy.watch("GET", "/aspects/")

    assert sorted(sync.discover()) == sorted(runs)
    assert (batched.hits, one_by_one.hits) == (3, 0), "the scan read the signals of the 10 it took in 3 reads"

    kill_in_datahub(pair, "run-6")
    assert sync.pass_cancels() == ["run-6"]
    assert (batched.hits, one_by_one.hits) == (6, 0), "10 open requests: 3 reads, not 10"
    assert pair.ours.execution("run-6")["status"] == "CANCELLED"
    assert {pair.ours.execution(run)["status"] for run in runs if run != "run-6"} == {"PENDING"}

    assert sync.pass_cancels() == []
    assert (batched.hits, one_by_one.hits) == (9, 0), "the 9 still open: 3 reads"


@pytest.mark.parametrize("status", [404, 405])
def test_a_datahub_without_batch_get_has_each_kill_signal_read_on_its_own_said_once(pair, proxy, monkeypatch, status):
    """A DataHub before the OpenAPI v3 entity API answers batchGet 404 (or 405): the signals are
    read one request at a time, as before, said once in the log and not at every tick; batchGet
    is tried again after BATCH_RETRY_S, in case DataHub was upgraded."""
    monkeypatch.setattr(gms_module, "SIGNAL_CHUNK", 2)
    older = proxy.break_("POST", "/openapi/v3/entity/", status=status, body=b'{"error": "Not Found"}')
    one_by_one = proxy.watch("GET", "/aspects/")
    lines: list[str] = []
    sink = logger.add(lambda line: lines.append(str(line)), level="INFO", format="{message}")
    try:
        runs = ["run-0", "run-1", "run-2"]
        pair.create(*(pair.request(run, now_ms() - i) for i, run in enumerate(runs)))
        sync = pair.sync(url=proxy.url)
        assert sorted(sync.discover()) == runs
        kill_in_datahub(pair, "run-1")
        assert sync.pass_cancels() == ["run-1"]
        assert sync.pass_cancels() == []
        assert pair.ours.execution("run-1")["status"] == "CANCELLED"
        assert one_by_one.hits == 3 + 3 + 2, "each open request's signal, on its own"
        assert older.hits == 1, "batchGet is not asked again at every tick"
        said = [line for line in lines if "batchGet" in line]
        assert len(said) == 1 and f"HTTP {status}" in said[0], said

        proxy.heal()  # DataHub upgraded
        monkeypatch.setattr(gms_module, "BATCH_RETRY_S", 0.0)
        batched = proxy.watch("POST", "/openapi/v3/entity/")
        kill_in_datahub(pair, "run-2")
        assert sync.pass_cancels() == ["run-2"]
        assert batched.hits == 1
        assert any("serves batchGet now" in line for line in lines)
    finally:
        logger.remove(sink)


def test_a_result_datahub_keeps_failing_does_not_hold_back_the_others(pair, proxy):
    """One request's result write answered 500, every time: push() raised at it, and every
    result after it (b-second's here) never reached DataHub."""
    sync = pair.sync(url=proxy.url)
    pair.create(pair.request("a-first", now_ms()))
    assert sync.discover() == ["a-first"]
    pair.create(pair.request("b-second", now_ms() + 1))
    sync._next_discovery = 0
    assert sync.discover() == ["b-second"]
    for execution_id in ("a-first", "b-second"):
        pair.ours.cp.cancel(execution_id, sync_module.SYSTEM)  # both end here, CANCELLED before they start
    failing = proxy.break_("POST", "/aspects", status=500, body=b'{"message": "boom"}', body_has=(b"a-first",))
    for _ in range(3):
        sync.tick()
    assert failing.hits >= 1
    second = pair.graph.get_aspect(E.execution_urn("b-second"), ExecutionRequestResultClass)
    assert second is not None and second.status == "CANCELLED"
    first = pair.graph.get_aspect(E.execution_urn("a-first"), ExecutionRequestResultClass)
    assert first is None or first.status != "CANCELLED", "DataHub never took it"


def test_a_request_for_a_pool_deleted_while_its_page_was_read_is_refused_back_to_datahub(pair):
    """The pools are read before DataHub's page comes: deleted meanwhile, the request was stored
    for "an executor elsewhere", marked taken, and never run, refused or cancelled; a cancel from
    DataHub's UI never ended it, and a pool made again later under that id queued it to run."""
    pair.ours.create_pool("other", default=True)  # so that POOL, idle and not the default, may go
    sync = pair.sync()
    pair.create(pair.request("taken-as-its-pool-went", now_ms()))
    read_page = sync.gms.execution_requests

    def page_while_the_pool_is_deleted(start: int, count: int):
        answer = read_page(start, count)
        pair.ours.cp.pools.delete(POOL)
        return answer

    sync.gms.execution_requests = page_while_the_pool_is_deleted
    assert sync.discover() == ["taken-as-its-pool-went"]
    assert "taken-as-its-pool-went" not in pair.local_ids(), "nothing stored here for it"
    sync.tick()
    shown = pair.graph.get_aspect(E.execution_urn("taken-as-its-pool-went"), ExecutionRequestResultClass)
    assert shown is not None and shown.status == "FAILURE" and "deleted" in (shown.report or "")


def test_a_run_from_datahub_is_deleted_only_once_datahub_knows_how_it_ended(pair):
    """Deleted before the next push, a finished run's result was never written back: the
    request stayed open in DataHub, and its mirror row open here, for good."""
    sync = pair.sync()
    pair.create(pair.request("ended-then-deleted", now_ms()))
    assert sync.discover() == ["ended-then-deleted"]
    pair.ours.cp.cancel("ended-then-deleted", sync_module.SYSTEM)  # CANCELLED here, not yet in DataHub
    urn = E.execution_urn("ended-then-deleted")
    with pytest.raises(Conflict, match="upstream DataHub"):
        pair.ours.cp.delete_entity(urn, sync_module.SYSTEM)
    sync.tick()
    shown = pair.graph.get_aspect(urn, ExecutionRequestResultClass)
    assert shown is not None and shown.status == "CANCELLED"
    pair.ours.cp.delete_entity(urn, sync_module.SYSTEM)
    assert "ended-then-deleted" not in pair.local_ids()


def test_a_page_datahub_keeps_failing_deep_in_a_backlog_delays_no_new_request(pair, proxy):
    """The scan was kept at the failing offset and every discovery retried it there: a request
    made since, on the first page, was not taken until DataHub served the deep page again."""
    base = now_ms() - MINUTE_MS
    pair.create(*(pair.request(f"other-{i}", base + i, executor_id="someone-else") for i in range(60)))
    sync = pair.sync(url=proxy.url)
    deep = proxy.break_("POST", "/api/graphql", status=500, body=b'{"error": "boom"}',
                        body_has=(b"dhxListExecutionRequests", b'"start": 50'))
    sync.tick()
    assert deep.hits == 1 and sync._scan is not None
    pair.create(pair.request("ours-new", now_ms()))
    sync._next_discovery = 0
    sync.tick()
    assert "ours-new" in pair.local_ids(), "taken from the first page before the deep one was tried again"
    assert deep.hits == 2, "and the deep page is still tried"


def test_a_slow_search_over_a_backlog_does_not_hold_back_cancels(pair, monkeypatch):
    """One discovery read up to 20 pages in a row before the tick's cancels and results: at 1 s
    a page, a cancel from DataHub's UI waited 20 s (at DataHub's timeout, 5 minutes)."""
    base = now_ms() - MINUTE_MS
    pair.create(pair.request("ours", base))
    sync = pair.sync(poll_interval_s=0.5)
    assert sync.discover() == ["ours"]
    pair.create(*(pair.request(f"other-{i}", base + 1 + i, executor_id="someone-else") for i in range(20 * 50)))
    read_page = sync.gms.execution_requests
    pages: list[int] = []

    def slow_page(start: int, count: int):
        pages.append(start)
        time.sleep(0.3)
        return read_page(start, count)

    sync.gms.execution_requests = slow_page
    pair.graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=E.execution_urn("ours"), aspect=ExecutionRequestSignalClass(
        signal="KILL", createdAt=AuditStampClass(time=now_ms(), actor="urn:li:corpuser:datahub"))))
    sync._next_discovery = 0
    sync.tick()
    assert len(pages) <= 3, f"the tick read {len(pages)} pages of the backlog before the cancels"
    assert pair.ours.execution("ours")["status"] == "CANCELLED"
    assert sync._scan is not None and sync._scan.start == 50 * len(pages), "the scan goes on at the next tick"


def test_results_a_slow_datahub_takes_one_by_one_do_not_hold_back_its_cancels(pair, proxy):
    """Every changed result was written in one go at each tick, however long DataHub took: with
    DataHub answering each write slowly, a tick with many ended runs to report passed a cancel
    from DataHub's UI on only after the last of them (at 0.5 s a write, 8 results held it 4 s; at
    DataHub's 15 s timeout, a hundred ended runs held it most of an hour), and no new request was taken.
    The results not written within a poll interval wait for the next tick; all reach DataHub."""
    sync = pair.sync(url=proxy.url, poll_interval_s=0.5)
    ended = [f"ended-{i}" for i in range(8)]
    pair.create(*(pair.request(run, now_ms() - i) for i, run in enumerate(ended)),
                pair.request("to-cancel", now_ms() + 1))
    assert sorted(sync.discover()) == sorted([*ended, "to-cancel"])
    for run in ended:
        pair.ours.cp.cancel(run, sync_module.SYSTEM)  # ended here, CANCELLED before they start
    proxy.delay("GET", "/aspects/", 0.5)  # DataHub shows each written result slowly
    kill_in_datahub(pair, "to-cancel")
    began = time.monotonic()
    sync.tick()
    took = time.monotonic() - began
    assert pair.ours.execution("to-cancel")["status"] == "CANCELLED", "the cancel waited for every result"
    assert took < 3, f"the tick took {took:.1f} s writing results before it passed the cancel on"
    runs = [*ended, "to-cancel"]
    for _ in range(20):
        sync.tick()
        shown = {run: pair.graph.get_aspect(E.execution_urn(run), ExecutionRequestResultClass) for run in runs}
        if all(result is not None and result.status == "CANCELLED" for result in shown.values()):
            break
    assert {run: result.status if result else None for run, result in shown.items()} == \
        {run: "CANCELLED" for run in runs}, "every result reached DataHub at the next ticks"


def test_a_run_reporting_progress_at_every_tick_does_not_starve_another_runs_end(pair, proxy):
    """With a tick's writes bounded, the requests in the order they were taken would let one
    whose progress changes at every tick take every tick's writes, and another run's end never
    reach DataHub: the least recently written goes first."""
    sync = pair.sync(url=proxy.url, poll_interval_s=0.3)
    pair.create(pair.request("run-a", now_ms()), pair.request("run-b", now_ms()))
    first, second = sync.discover()  # in the order taken, FIRST's result is written first at every tick
    executor = ExecutorDouble(pair.ours, POOL, "executor-1")
    executor.heartbeat()
    busy, quiet = executor.claim(first), executor.claim(second)
    assert busy is not None and quiet is not None
    executor.finish(quiet)
    proxy.delay("POST", "/aspects", 0.5)  # each write takes longer than the tick's share: one a tick
    for line in range(3):
        executor.progress(busy, f"line {line}")
        sync.push()
    shown = pair.graph.get_aspect(E.execution_urn(second), ExecutionRequestResultClass)
    assert shown is not None and shown.status == "SUCCESS", "the ended run's result never reached DataHub"
