"""A running control plane per test, DataHub's own client for it, and an executor double: the
executor's real control-plane client driven step by step, so a test can play an executor
process (or two) without running one."""
from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from controlplane.testing import ControlPlaneHandle, running_controlplane
from executor import datahub_aspects
from executor.controlplane_client import Claimed, ControlPlaneClient, ControlPlaneError

RECIPE = "source:\n  type: datahub-mock-data\n  config: {}\n"
ANYIO_DEFAULT_THREADS = 40  # anyio's default thread limiter: Starlette's sync routes and run_in_threadpool


def timed(name: str, call: Callable[[], object], slow: list[str], prompt_s: float) -> None:
    """CALL, a call of the API that must answer within PROMPT_S while something holds threads:
    what failed or took longer is added to SLOW, by NAME, with its time."""
    started = time.monotonic()
    try:
        call()
    except (ControlPlaneError, requests.RequestException, AssertionError) as exc:
        slow.append(f"{name}: {type(exc).__name__} after {time.monotonic() - started:.1f} s ({str(exc)[:120]})")
        return
    if time.monotonic() - started > prompt_s:
        slow.append(f"{name}: {time.monotonic() - started:.1f} s")


@pytest.fixture
def cp(tmp_path) -> Iterator[ControlPlaneHandle]:
    with running_controlplane(tmp_path / "cp") as handle:
        yield handle


@pytest.fixture
def graph(cp):
    """DataHub's own Python client, with the admin token."""
    from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig

    with DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=cp.admin_token)) as client:
        yield client


def raw(cp: ControlPlaneHandle, token: str | None = None) -> requests.Session:
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


class ExecutorDouble:
    """One executor process, as the control plane sees it: its id, its instance, its pool."""

    def __init__(self, cp: ControlPlaneHandle, pool_id: str, executor_id: str, token: str | None = None,
                 interval_s: float = 1.0) -> None:
        self.cp = cp
        self.pool_id = pool_id
        self.executor_id = executor_id
        self.instance_id = secrets.token_hex(8)
        self.interval_s = interval_s
        self.token = token or cp.create_executor_token([pool_id])
        self.client = ControlPlaneClient(cp.gms_url, self.token, retries=0, timeout_s=10)

    def heartbeat(self, *, state: str = "ACTIVE", running: list[str] | None = None, interval_s: float | None = None) -> None:
        status = datahub_aspects.executor_status(pool_id=self.pool_id, version="0.1.0", address="10.0.0.1",
                                                 hostname="host-1", uptime_s=1.0, stopped=state == "STOPPED",
                                                 log_delivery=False)
        properties = {"instanceId": self.instance_id, "heartbeatIntervalSeconds": str(interval_s or self.interval_s),
                      "state": state, "runningExecutions": json.dumps(running or []),
                      "capacity": json.dumps({"ingestion": {"max_workers": 4, "used_weight": 0.25, "running": 1}}),
                      "sandbox": json.dumps({"mode": "cgroup-v1"}), "health": json.dumps({})}
        self.client.heartbeat(self.executor_id, status, properties)

    def claim(self, execution_id: str, receive_count: int | None = 1) -> Claimed | None:
        return self.client.claim(execution_id, executor_id=self.executor_id, instance_id=self.instance_id,
                                 pool_id=self.pool_id, receive_count=receive_count)

    def progress(self, claimed: Claimed, tail: str, peak: int | None = None) -> None:
        self.client.report(claimed.execution_id, claimed.lease, datahub_aspects.running_result(
            started_ms=datahub_aspects.now_ms(), report=tail, peak_memory_bytes=peak, task=claimed.task))

    def finish(self, claimed: Claimed, status: str = "SUCCESS", reason: str | None = None,
               ingestion_report: dict | None = None, peak: int | None = None) -> None:
        self.client.report(claimed.execution_id, claimed.lease, datahub_aspects.final_result(
            status=status, task=claimed.task, started_ms=datahub_aspects.now_ms(), duration_ms=5, report="done",
            ingestion_report=ingestion_report, reason=reason, peak_memory_bytes=peak, executor_id=self.executor_id))


@pytest.fixture
def executor_double(cp):
    def make(pool_id: str, executor_id: str, **kwargs) -> ExecutorDouble:
        return ExecutorDouble(cp, pool_id, executor_id, **kwargs)
    return make
