from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from controlplane.testing import ControlPlaneHandle, running_controlplane

RECIPE = "source:\n  type: datahub-mock-data\n  config: {}\nsink:\n  type: file\n  config: {filename: /tmp/unused.json}\n"


@pytest.fixture
def cp(tmp_path) -> Iterator[ControlPlaneHandle]:
    with running_controlplane(tmp_path / "cp") as handle:
        yield handle


def executor_api(cp: ControlPlaneHandle, token: str):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    base = cp.gms_url + "/executor/v1"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, base + path, timeout=10, **kwargs)

    return call


def heartbeat_body(interval: float = 1.0, state: str = "ACTIVE", running: list[str] | None = None) -> dict:
    return {"hostname": "host-1", "version": "0.1.0", "state": state, "heartbeat_interval_s": interval,
            "capacity": {"ingestion": {"max_workers": 4, "used_weight": 0.25, "running": 1}},
            "running_executions": running or [], "sandbox": {"mode": "cgroup-v1"}, "health": {}}
