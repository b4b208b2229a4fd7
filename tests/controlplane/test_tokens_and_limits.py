"""Who may do what, and what the control plane refuses before it reads: a run's ingest token
writes metadata and nothing else; tokens are checked before any body is read; bodies over an
endpoint's limit are refused without being buffered; tokens are stored hashed."""
from __future__ import annotations

import gzip
import json
import os
import socket
import time

import psutil
import pytest
import requests
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.emitter.rest_emitter import DatahubRestEmitter
from datahub.configuration.common import OperationalError
import datahub.metadata.schema_classes as model

from controlplane.server import ControlPlaneServer, ServerConfig, StartRefused
from controlplane.testing import running_controlplane

from .conftest import RECIPE, raw

DATASET = "urn:li:dataset:(urn:li:dataPlatform:hive,db.t,PROD)"


def claimed_run(cp, executor_double):
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    return executor, executor.claim(execution["id"])


def test_a_runs_token_ingests_metadata_and_nothing_else(cp, executor_double):
    executor, claimed = claimed_run(cp, executor_double)
    token = claimed.ingest_token
    DatahubRestEmitter(cp.gms_url, token=token).emit_mcp(
        MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=False)))
    assert cp.cp.executions.run_summary(claimed.execution_id)["entities"] == 1, "attributed to its run"
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    refusals = {
        "GraphQL": session.post(f"{cp.gms_url}/api/graphql", json={"query": "{ listIngestionSources(input: {}) { total } }"}),
        "claim": session.post(f"{cp.gms_url}/executor/v1/executions/{claimed.execution_id}/claim",
                              json={"executor_id": "x", "instance_id": "y", "pool_id": "p"}),
        "a result": session.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": {
            "entityType": "dataHubExecutionRequest", "entityUrn": f"urn:li:dataHubExecutionRequest:{claimed.execution_id}",
            "changeType": "UPSERT", "aspectName": "dataHubExecutionRequestResult",
            "aspect": {"value": json.dumps({"status": "SUCCESS"}), "contentType": "application/json"},
            "headers": {"X-DataHub-Execution-Lease": claimed.lease}}}),
        "a cancel": session.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": {
            "entityType": "dataHubExecutionRequest", "entityUrn": f"urn:li:dataHubExecutionRequest:{claimed.execution_id}",
            "changeType": "UPSERT", "aspectName": "dataHubExecutionRequestSignal",
            "aspect": {"value": json.dumps({"signal": "KILL", "createdAt": {"time": 1, "actor": "urn:li:corpuser:x"}}),
                       "contentType": "application/json"}}}),
        "a token": session.post(f"{cp.gms_url}/admin/v1/tokens", json={"kind": "admin"}),
        "the pool": session.get(f"{cp.gms_url}/entitiesV2/urn%3Ali%3AdataHubRemoteExecutorPool%3Ap"),
        "the log": session.get(f"{cp.gms_url}/admin/v1/executions/{claimed.execution_id}/log"),
        # Deletes need an admin token however they come: POST /entities?action=delete refused
        # this token, and a DELETE proposal of the key aspect erased the entity all the same.
        "a hard delete": session.post(f"{cp.gms_url}/entities?action=delete", json={"urn": DATASET}),
        "a DELETE of the key aspect": session.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": {
            "entityType": "dataset", "entityUrn": DATASET, "changeType": "DELETE", "aspectName": "datasetKey"}}),
        "a DELETE of an aspect": session.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": {
            "entityType": "dataset", "entityUrn": DATASET, "changeType": "DELETE", "aspectName": "status"}}),
    }
    assert {what: r.status_code for what, r in refusals.items()} == {what: 403 for what in refusals}
    with cp.cp.store.read() as db:
        assert db.execute("SELECT COUNT(*) FROM aspects WHERE urn=?", (DATASET,)).fetchone()[0] > 0, "still there"
    executor.finish(claimed)
    with pytest.raises(OperationalError) as revoked:
        DatahubRestEmitter(cp.gms_url, token=token).emit_mcp(
            MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=True)))
    assert revoked.value.info.get("status") == 401, "revoked when its run ended"


def test_an_executors_token_manages_nothing(cp, executor_double):
    executor, claimed = claimed_run(cp, executor_double)
    session = raw(cp, executor.token)
    assert session.post(f"{cp.gms_url}/api/graphql", json={"query": "{ listRemoteExecutorPools(input: "
                                                                     "{start: 0, count: 1}) { total } }"}).status_code == 403
    assert session.post(f"{cp.gms_url}/admin/v1/tokens", json={"kind": "executor"}).status_code == 403
    assert session.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": {
        "entityType": "dataset", "entityUrn": DATASET, "changeType": "UPSERT", "aspectName": "status",
        "aspect": {"value": "{}", "contentType": "application/json"}}}).status_code == 403


def test_an_executors_token_reads_no_other_pools_executors(cp, executor_double):
    from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig

    cp.create_pool("a", default=True)
    cp.create_pool("b")
    executor_double("a", "in-a").heartbeat()
    executor_double("b", "in-b").heartbeat()
    token_a = cp.create_executor_token(["a"])
    with DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=token_a)) as graph:
        assert graph.get_aspect("urn:li:dataHubRemoteExecutor:in-a", model.RemoteExecutorStatusClass).executorPoolId == "a"
        with pytest.raises(requests.HTTPError) as refused:
            graph.get_aspect("urn:li:dataHubRemoteExecutor:in-b", model.RemoteExecutorStatusClass)
        assert refused.value.response.status_code == 403
        with pytest.raises(requests.HTTPError) as refused:
            graph.get_entity_raw("urn:li:dataHubRemoteExecutor:in-b")
        assert refused.value.response.status_code == 403
        for spelled in ("urn:li:dataHubRemoteExecutor:(in-b)", "urn:li:dataHubRemoteExecutorPool:(b)"):
            with pytest.raises(requests.HTTPError) as refused:  # the same urns, as a urn parser reads them
                graph.get_entity_raw(spelled)
            assert refused.value.response.status_code == 403, spelled
    batch = raw(cp, token_a).get(f"{cp.gms_url}/entitiesV2?ids=List(urn%3Ali%3AdataHubRemoteExecutor%3Ain-b)", timeout=10)
    assert batch.status_code == 403 and "host-1" not in batch.text


def test_tokens_are_stored_hashed_and_never_listed(cp, tmp_path):
    cp.create_pool("p", default=True)
    token = cp.create_executor_token(["p"])
    database = (tmp_path / "cp" / "controlplane.sqlite3").read_bytes()
    assert token.encode() not in database and cp.admin_token.encode() not in database
    listed = cp.http.get(f"{cp.gms_url}/admin/v1/tokens", timeout=5).json()
    assert all("token" not in t and "hash" not in t for t in listed)
    assert requests.get(f"{cp.gms_url}/admin/v1/tokens", timeout=5).status_code == 401


def admin_cli_on(state_dir, *args: str) -> int:
    """The admin CLI pointed at a control plane by its state dir, as an operator on its host runs it."""
    from controlplane import admin_cli

    return admin_cli.main(["--state-dir", str(state_dir), *args])


def test_the_admin_token_file_gets_a_live_token_when_its_own_was_revoked(tmp_path, monkeypatch, capsys):
    """Another admin token kept the file's revoked one in place: serve said the admin token was
    there, and the CLI reading it got 401."""
    monkeypatch.delenv("DATAHUB_CONTROLPLANE_URL", raising=False)
    with running_controlplane(tmp_path / "cp") as cp:
        first = cp.admin_token
        other = cp.http.post(f"{cp.gms_url}/admin/v1/tokens", json={"kind": "admin"}, timeout=5).json()
        cp.http.headers["Authorization"] = f"Bearer {other['token']}"
        bootstrap = [t for t in cp.http.get(f"{cp.gms_url}/admin/v1/tokens", timeout=5).json()
                     if t["kind"] == "admin" and t["id"] != other["id"]]
        assert len(bootstrap) == 1
        assert cp.http.delete(f"{cp.gms_url}/admin/v1/tokens/{bootstrap[0]['id']}", timeout=5).status_code == 200
    with running_controlplane(tmp_path / "cp") as cp:
        token_file = tmp_path / "cp" / "admin-token"
        renewed = cp.admin_token != first  # compared, never shown: a failure would print the tokens
        assert renewed and token_file.stat().st_mode & 0o777 == 0o600
        capsys.readouterr()
        assert admin_cli_on(tmp_path / "cp", "--json", "pools", "list") == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out) == []
        second = cp.admin_token
    with running_controlplane(tmp_path / "cp") as cp:
        kept = cp.admin_token == second
        assert kept, "a live token is kept"


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh state dir", "existing database"])
def test_an_admin_token_file_others_may_read_is_refused_at_start(tmp_path, fresh):
    """On a fresh state dir the new live token went into a 0644 file already there (O_CREAT's mode
    applies only to a new file) and stayed readable by all; with a database, a loose mode was
    never looked at. The secret key is refused in both cases; so is this file now."""
    state = tmp_path / "cp"
    token_file = state / "admin-token"
    if fresh:
        state.mkdir()
        token_file.write_text("")
    else:
        with running_controlplane(state):
            pass
    before = token_file.read_text()
    token_file.chmod(0o644)
    server = ControlPlaneServer(ServerConfig(state_dir=state))
    with pytest.raises(StartRefused, match=f"the admin token file {token_file} may be read by others "
                                           rf"\(mode 0644\).*chmod 600 {token_file}") as refused:
        server.start()
    said = str(refused.value)
    assert said.index("chmod 600") < said.index("tokens revoke"), "a revoke needs the control plane, which needs the chmod"
    assert token_file.read_text() == before, "nothing was written into it"
    token_file.chmod(0o600)
    with running_controlplane(state) as cp:
        assert cp.http.get(f"{cp.gms_url}/admin/v1/tokens", timeout=5).status_code == 200
        assert token_file.stat().st_mode & 0o777 == 0o600


def send_huge_body(url: str, size: int, token: str | None) -> tuple[int | None, int]:
    """POST SIZE bytes (chunked, never held in memory here); the status and how much was sent."""
    sent = 0

    def chunks():
        nonlocal sent
        block = b"x" * (1 << 20)
        while sent < size:
            sent += len(block)
            yield block

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.post(url, data=chunks(), headers=headers, timeout=60)
        return response.status_code, sent
    except requests.ConnectionError:
        return None, sent  # the server answered and closed while we were still sending


def test_a_huge_unauthenticated_body_is_refused_before_it_is_read(cp):
    me = psutil.Process(os.getpid())
    before = me.memory_info().rss
    status, sent = send_huge_body(f"{cp.gms_url}/aspects?action=ingestProposalBatch", 150 << 20, token=None)
    assert status in (401, None)
    assert me.memory_info().rss - before < 40 << 20, "the control plane (this process) did not buffer it"
    headers = {"Authorization": "Bearer dhx_wrong", "Content-Length": str(150 << 20)}
    with socket.create_connection(("127.0.0.1", int(cp.gms_url.rsplit(":", 1)[1].split("/")[0])), timeout=10) as raw:
        raw.sendall(f"POST /gms/aspects?action=ingestProposal HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
                    + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n")
        answer = raw.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 401"), "answered from the headers alone, before any body byte"


def test_a_body_over_the_endpoints_limit_is_refused_with_413(cp):
    status, _ = send_huge_body(f"{cp.gms_url}/aspects?action=ingestProposalBatch", 40 << 20, token=cp.admin_token)
    assert status in (413, None)
    declared = requests.post(f"{cp.gms_url}/api/graphql", data=b"{}", timeout=10,
                             headers={"Authorization": f"Bearer {cp.admin_token}", "Content-Length": "2"})
    assert declared.status_code == 400
    big = requests.post(f"{cp.gms_url}/api/graphql", data=b" " * (2 << 20), timeout=10,
                        headers={"Authorization": f"Bearer {cp.admin_token}"})
    assert big.status_code == 413 and "at most" in big.json()["message"]
    time.sleep(0.1)
    assert requests.get(f"{cp.gms_url}/config", timeout=5).status_code == 200, "and the service goes on"


def test_only_the_task_log_upload_takes_a_large_body_on_the_executor_api(cp):
    """Claims and releases are tiny: 1 MiB, as for everything but aspects and the log."""
    headers = {"Authorization": f"Bearer {cp.create_executor_token(None)}", "Content-Type": "application/json"}
    for action in ("claim", "release"):
        big = requests.post(f"{cp.gms_url}/executor/v1/executions/x/{action}", data=b" " * (2 << 20), headers=headers,
                            timeout=10)
        assert big.status_code == 413, action
    log = requests.put(f"{cp.gms_url}/executor/v1/executions/x/log", data=b" " * (2 << 20), headers=headers, timeout=10)
    assert log.status_code != 413


def test_a_gzip_log_is_refused_when_it_is_not_one_stream_or_expands_past_the_cap(cp, executor_double):
    """A 64 MiB body limit says nothing of what a gzip body expands to: 100 MiB of zeros is a
    100 KiB body. It is refused having cost the control plane at most the cap, never stored."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    claimed = executor.claim(execution)

    def put(body: bytes, encoding: str) -> requests.Response:
        return requests.put(f"{cp.gms_url}/executor/v1/executions/{execution}/log", data=body, timeout=30,
                            headers={"Authorization": f"Bearer {executor.token}", "X-DataHub-Execution-Lease": claimed.lease,
                                     "Content-Encoding": encoding})

    bomb = gzip.compress(bytes(100 << 20), compresslevel=9)
    assert len(bomb) < 200_000
    refused = put(bomb, "gzip")
    assert refused.status_code == 400 and "expands past" in refused.json()["error"]
    whole = gzip.compress(b"line\n" * 1000)
    assert put(whole[:-9], "gzip").status_code == 400, "cut short"
    assert put(whole + b"trailing", "gzip").status_code == 400, "more after the stream"
    assert put(b"not gzip at all", "gzip").status_code == 400
    assert put(b"line\n", "br").status_code == 400
    assert not cp.execution(execution)["has_full_log"]
    assert put(whole, "GZIP").status_code == 200
    assert cp.logs(execution)["log"] == "line\n" * 1000


def test_json_nested_past_the_recursion_limit_is_a_400_and_a_refusal_not_a_traceback(cp):
    """A 10 KB body of `[` answered 500 and logged a traceback (RecursionError escaped every
    `except ValueError`); in a source's extraArgs it was refused only by accident, with Python's
    'maximum recursion depth' as the reason."""
    cp.create_pool("p", default=True)
    headers = {"Authorization": f"Bearer {cp.admin_token}", "Content-Type": "application/json"}
    deep = "[" * 5000 + "]" * 5000
    body = requests.post(f"{cp.gms_url}/api/graphql", data=deep.encode(), headers=headers, timeout=10)
    assert body.status_code == 400 and "nested deeper" in body.text, body.text[:300]
    for key in ("extra_env_vars", "extra_pip_requirements"):
        with pytest.raises(RuntimeError) as refused:
            cp.graphql("mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }",
                       i={"name": "s", "type": "datahub-mock-data", "config": {
                           "recipe": "source: {type: datahub-mock-data}", "executorId": "p",
                           "extraArgs": [{"key": key, "value": deep}]}})
        said = str(refused.value)
        assert f"extraArgs.{key}" in said and "'code': 400" in said and "recursion" not in said, key


def test_an_executor_token_does_not_outlive_its_pools_deletion(cp):
    """A deleted pool's executor tokens kept naming it, and spoke for a new pool of the same id
    (its queues, claims and results): a token an operator thought gone with the pool came back."""
    from executor.controlplane_client import ControlPlaneClient, ControlPlaneError

    cp.create_pool("a", default=True)
    cp.create_pool("b")
    only_a, a_and_b = cp.create_executor_token(["a"]), cp.create_executor_token(["a", "b"])
    assert ControlPlaneClient(cp.gms_url, only_a, retries=0).pool("a").pool_id == "a"
    cp.graphql('mutation { updateDefaultRemoteExecutorPool(urn: "urn:li:dataHubRemoteExecutorPool:b") }')
    deleted = requests.post(f"{cp.gms_url}/entities?action=delete", json={"urn": "urn:li:dataHubRemoteExecutorPool:a"},
                            headers={"Authorization": f"Bearer {cp.admin_token}"}, timeout=10)
    assert deleted.status_code == 200, deleted.text
    cp.create_pool("a")
    with pytest.raises(ControlPlaneError) as refused:
        ControlPlaneClient(cp.gms_url, only_a, retries=0).pool("a")
    assert refused.value.status == 401, "it named no other pool: revoked"
    with pytest.raises(ControlPlaneError) as refused:
        ControlPlaneClient(cp.gms_url, a_and_b, retries=0).pool("a")
    assert refused.value.status == 403, "the new pool a is not its pool"
    assert ControlPlaneClient(cp.gms_url, a_and_b, retries=0).pool("b").pool_id == "b"
