"""A running control plane (HTTP API and embedded SQS on 127.0.0.1, free ports) for tests,
benchmarks and the quickstart, driven through DataHub's GraphQL API and our admin endpoints
like any client. `execution()` and `executors()` read the control plane's own records (the
truth a test asserts against), in process."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from vocabulary.results import executor_details

from . import entities as E
from .executions import input_for_source
from .server import ControlPlaneServer, ServerConfig


class ControlPlaneHandle:
    def __init__(self, state_dir: Path, **config: Any) -> None:
        self.server = ControlPlaneServer(ServerConfig(state_dir=state_dir, **config))
        self.http = requests.Session()

    def start(self) -> None:
        self.server.start()
        self.admin_token = self.server.admin_token_path.read_text().strip()
        self.http.headers["Authorization"] = f"Bearer {self.admin_token}"

    def stop(self) -> None:
        self.server.stop()

    def stop_queue(self) -> None:
        self.server.stop_queue_server()

    def start_queue(self) -> None:
        self.server.start_queue_server()

    @property
    def gms_url(self) -> str:
        return self.server.gms_url

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def sqs_endpoint_url(self) -> str | None:
        return self.server.sqs_endpoint_url

    @property
    def cp(self):
        return self.server.cp

    # DataHub's API ----------------------------------------------------------------------------
    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self.http.post(f"{self.gms_url}/api/graphql", json={"query": query, "variables": variables}, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"GraphQL: HTTP {response.status_code} {response.text[:500]}")
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL: {body['errors']}")
        return body["data"]

    def ingest(self, urn: str, aspect: str, value: dict[str, Any]) -> None:
        entity = urn.split(":", 3)[2]
        proposal = {"entityType": entity, "entityUrn": urn, "changeType": "UPSERT", "aspectName": aspect,
                    "aspect": {"value": json.dumps(value), "contentType": "application/json"}}
        response = self.http.post(f"{self.gms_url}/aspects?action=ingestProposal", json={"proposal": proposal}, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"ingestProposal: HTTP {response.status_code} {response.text[:500]}")

    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.gms_url}/admin/v1{path}", timeout=30, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def create_pool(self, pool_id: str, *, default: bool = False, visibility_timeout_s: int | None = None,
                    max_receive_count: int | None = None, description: str = "") -> dict:
        self.graphql("mutation($i: CreateRemoteExecutorPoolInput!) { createRemoteExecutorPool(input: $i) }",
                     i={"executorPoolId": pool_id, "description": description or None, "isDefault": default})
        if visibility_timeout_s is not None or max_receive_count is not None:
            self._admin("PUT", f"/pools/{pool_id}/queues", json={"visibility_timeout_s": visibility_timeout_s,
                                                                   "max_receive_count": max_receive_count})
        return self.cp.pools.get(pool_id)

    def create_executor_token(self, pool_ids: list[str] | None) -> str:
        return self._admin("POST", "/tokens", json={"kind": "executor", "pools": pool_ids})["token"]

    def create_source(self, name: str, recipe: str, *, pool_id: str | None = None, extra_env: dict | None = None,
                      version: str | None = None, extra_pip: list[str] | None = None) -> dict:
        source_type = self.cp.sources.check_type(recipe)
        config: dict[str, Any] = {"recipe": recipe, "executorId": pool_id or E.DEFAULT_EXECUTOR_ID}
        if version:
            config["version"] = version
        extra_args = []
        if extra_env:
            extra_args.append({"key": "extra_env_vars", "value": json.dumps(extra_env)})
        if extra_pip:
            extra_args.append({"key": "extra_pip_requirements", "value": json.dumps(extra_pip)})
        if extra_args:
            config["extraArgs"] = extra_args
        urn = self.graphql("mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }",
                           i={"name": name, "type": source_type, "config": config})["createIngestionSource"]
        return {"id": E.key_of(urn, E.SOURCE), "urn": urn, "name": name}

    def run_source(self, source_id: str, task: str = "RUN_INGEST") -> dict:
        urn = E.source_urn(E.key_of(source_id, E.SOURCE))
        if task == "RUN_INGEST":
            execution_urn = self.graphql("mutation($u: String!) { createIngestionExecutionRequest("
                                         "input: {ingestionSourceUrn: $u}) }", u=urn)["createIngestionExecutionRequest"]
        else:
            source = self.cp.sources.get(urn)
            execution_urn = E.execution_urn(self.cp.executions.new_id())
            self.ingest(execution_urn, E.EXECUTION_INPUT, input_for_source(source, task))
        return {"id": E.key_of(execution_urn, E.EXECUTION), "urn": execution_urn}

    def cancel(self, execution_id: str) -> dict:
        view = self.cp.executions.view(execution_id)
        self.graphql("mutation($i: CancelIngestionExecutionRequestInput!) { cancelIngestionExecutionRequest(input: $i) }",
                     i={"ingestionSourceUrn": view["source_urn"], "executionRequestUrn": view["urn"]})
        return self.execution(execution_id)

    def logs(self, execution_id: str) -> dict:
        return self._admin("GET", f"/executions/{quote(execution_id, safe='')}/log")  # as the admin CLI asks

    # the control plane's own records ---------------------------------------------------------
    def execution(self, execution_id: str) -> dict:
        """The execution as the control plane holds it, with DataHub's result unpacked: log_tail
        (result.report) and structured_report (the ingestion report of result.structuredReport)."""
        view = self.cp.executions.view(execution_id)
        result = view["result"] or {}
        report = None
        if result.get("structuredReport"):
            try:
                report = json.loads(result["structuredReport"]["serializedValue"])
                report.pop("executor", None)
            except ValueError:
                report = None
        return {**view, "log_tail": result.get("report"), "duration_ms": result.get("durationMs"),
                "structured_report": report or None, "executor_details": executor_details(result)}

    def wait_for_status(self, execution_id: str, statuses: set[str], timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            execution = self.execution(execution_id)
            if execution["status"] in statuses:
                return execution
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} is {execution['status']}, not {sorted(statuses)}, "
                                   f"after {timeout_s}s")
            time.sleep(0.1)

    def executors(self, pool_id: str) -> list[dict]:
        return self.cp.executors.list(pool_id)


@contextmanager
def running_controlplane(state_dir: Path, **config: Any) -> Iterator[ControlPlaneHandle]:
    handle = ControlPlaneHandle(Path(state_dir), **config)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
