"""A running control plane (HTTP API and embedded SQS on 127.0.0.1, free ports) for tests,
benchmarks and the quickstart, driven through its real admin API."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from .server import ControlPlaneServer, ServerConfig


class ControlPlaneHandle:
    def __init__(self, state_dir: Path) -> None:
        self.server = ControlPlaneServer(ServerConfig(state_dir=state_dir))
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

    def _call(self, method: str, path: str, **kwargs) -> dict | list:
        response = self.http.request(method, f"{self.gms_url}/admin/v1{path}", timeout=30, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def create_pool(self, pool_id: str, *, default: bool = False, visibility_timeout_s: int = 60,
                    max_receive_count: int = 5, description: str = "") -> dict:
        return self._call("POST", "/pools", json={"id": pool_id, "default": default, "description": description,
                                                   "visibility_timeout_s": visibility_timeout_s,
                                                   "max_receive_count": max_receive_count})

    def create_executor_token(self, pool_ids: list[str] | None) -> str:
        return self._call("POST", "/tokens", json={"kind": "executor", "pools": pool_ids})["token"]

    def create_source(self, name: str, recipe: str, *, pool_id: str | None = None, extra_env: dict | None = None,
                      version: str | None = None) -> dict:
        return self._call("POST", "/sources", json={"name": name, "recipe": recipe, "pool_id": pool_id,
                                                     "extra_env": extra_env or {}, "version": version})

    def run_source(self, source_id: str, task: str = "RUN_INGEST") -> dict:
        return self._call("POST", f"/sources/{source_id}/run", json={"task": task})

    def execution(self, execution_id: str) -> dict:
        return self._call("GET", f"/executions/{execution_id}")

    def logs(self, execution_id: str) -> dict:
        return self._call("GET", f"/executions/{execution_id}/logs")

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

    def cancel(self, execution_id: str) -> dict:
        return self._call("POST", f"/executions/{execution_id}/cancel")

    def executors(self, pool_id: str) -> list[dict]:
        return self._call("GET", f"/pools/{pool_id}/executors")


@contextmanager
def running_controlplane(state_dir: Path) -> Iterator[ControlPlaneHandle]:
    handle = ControlPlaneHandle(Path(state_dir))
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
