"""Upstream mode, found by review. First, against a DataHub (or whatever answers in its place: a
proxy, a service that is not DataHub) whose page of execution requests holds something that is not a request: a null
entry, an input that is not an object, a total that is not a number. The page's requests were
read before any check of them, so each raised, every scan stopped at that page, and no request on
it or behind it was ever taken. Then, a claim of a mirrored run by another pool's executor,
which asked DataHub for the run's secrets before it was refused. The stand-in GMS answers
DataHub's own client."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from controlplane.testing import ControlPlaneHandle
from controlplane.upstream.sync import UpstreamConfig, UpstreamSync
from executor.controlplane_client import ControlPlaneError

from .conftest import ExecutorDouble
from .stand_in_gms import StandInGms, ours  # noqa: F401 (fixture)

RECIPE = json.dumps({"source": {"type": "datahub-mock-data", "config": {}}})


class PageServer(StandInGms):
    """Answers UpstreamGms's listExecutionRequests with PAGE, and anything else as an empty GMS."""

    def __init__(self) -> None:
        self.page: dict = {"start": 0, "count": 0, "total": 0, "executionRequests": []}
        self.secret_asks = 0
        super().__init__()

    def graphql(self, request: dict) -> dict:
        if "listExecutionRequests" in request["query"]:
            return {"listExecutionRequests": self.page}
        self.secret_asks += 1
        return {"getSecretValues": []}


@pytest.fixture
def upstream() -> Iterator[PageServer]:
    server = PageServer()
    yield server
    server.close()


def request(request_id: str, pool: str) -> dict:
    return {"urn": f"urn:li:dataHubExecutionRequest:{request_id}", "id": request_id, "result": None,
            "input": {"task": "RUN_INGEST", "executorId": pool, "requestedAt": int(time.time() * 1000),
                      "actorUrn": None, "arguments": [{"key": "recipe", "value": RECIPE}],
                      "source": {"type": "MANUAL_INGESTION_SOURCE", "ingestionSource": None}}}


def sync_with(ours: ControlPlaneHandle, upstream: PageServer, tmp_path: Path, **config) -> UpstreamSync:
    """Our control plane's sync with UPSTREAM (which checks no token)."""
    (tmp_path / "token").write_text("upstream-token-not-checked-here")
    (tmp_path / "ingest-token").write_text("ingest-token-not-checked-here")
    return UpstreamSync(ours.cp, UpstreamConfig(url=upstream.url, token_file=tmp_path / "token",
                                                ingest_token_file=tmp_path / "ingest-token", **config))


@contextmanager
def attached(sync: UpstreamSync, ours: ControlPlaneHandle) -> Iterator[UpstreamSync]:
    """SYNC's claims in place for the test, and the shared control plane's own again after it."""
    before = ours.cp.executions.claim_context
    sync.attach()
    try:
        yield sync
    finally:
        ours.cp.executions.claim_context = before


@pytest.mark.parametrize("case", ["null entry", "input not an object", "total not a number"])
def test_a_request_beside_one_that_is_not_a_request_is_taken(ours, upstream, tmp_path, case):
    pool = f"p-{case.split()[0]}"
    ours.create_pool(pool)
    good = request(f"good-{pool}", pool)
    hostile = {"null entry": None,
               "input not an object": {"urn": "urn:li:dataHubExecutionRequest:odd", "id": "odd", "input": "text"},
               "total not a number": None}[case]
    entries = [good] if case == "total not a number" else [hostile, good]
    upstream.page = {"start": 0, "count": len(entries), "total": "lots" if case == "total not a number" else len(entries),
                     "executionRequests": entries}
    sync = sync_with(ours, upstream, tmp_path, poll_interval_s=0.1)
    assert good["id"] in sync.discover()
    taken = {execution["id"]: execution for execution in ours.cp.executions.list()[1]}
    assert taken[good["id"]]["pool_id"] == pool
    assert "odd" not in taken, "what is not a request is never touched"


def test_another_pools_executor_claiming_a_mirrored_run_is_refused_before_datahub_is_asked_for_its_secrets(
        ours, upstream, tmp_path):
    """The pool was checked inside the claim's transaction, after claim_context had asked DataHub
    for the secrets the run's recipe names: a p1 token set that call going for p2's run, and with
    DataHub down was told 503 (ask again, the recipe names secrets) instead of 403."""
    ours.create_pool("claims-p1")
    ours.create_pool("claims-p2")
    secretive = request("secretive", "claims-p2")
    secretive["input"]["arguments"] = [{"key": "recipe", "value": json.dumps(
        {"source": {"type": "datahub-mock-data", "config": {"password": "${DB_PASSWORD}"}}})}]
    upstream.page = {"start": 0, "count": 1, "total": 1, "executionRequests": [secretive]}
    with attached(sync_with(ours, upstream, tmp_path), ours) as sync:
        assert sync.discover() == ["secretive"]
        other = ExecutorDouble(ours, "claims-p1", "claims-exec-p1")
        other.heartbeat()
        asked = upstream.secret_asks
        with pytest.raises(ControlPlaneError) as refused:
            other.claim("secretive")
        assert refused.value.status == 403 and "belongs to pool claims-p2" in str(refused.value)
        assert upstream.secret_asks == asked, "DataHub was asked for another pool's secrets"


def test_a_datahub_request_with_the_id_of_a_run_of_ours_is_refused_and_the_run_stays_ours(ours, upstream, tmp_path):
    """DataHub's request ids are chosen by its users: one that names a run of ours was refused,
    but its refusal row made our run look mirrored, and that run's claim was handed DataHub's sink
    and secrets (a run of ours writing into DataHub, with DataHub's credentials)."""
    ours.create_pool("same-id")
    mine = ours.run_source(ours.create_source("ours-alone", RECIPE, pool_id="same-id")["id"])
    upstream.page = {"start": 0, "count": 1, "total": 1, "executionRequests": [request(mine["id"], "same-id")]}
    with attached(sync_with(ours, upstream, tmp_path), ours) as sync:
        sync.discover()
        executor = ExecutorDouble(ours, "same-id", "same-id-exec")
        executor.heartbeat()
        claimed = executor.claim(mine["id"])
        assert claimed is not None and claimed.execution_id == mine["id"]
        assert claimed.sink_server is None and claimed.sink_token is None and not claimed.secrets, \
            "a run of ours was given DataHub's sink or secrets"
