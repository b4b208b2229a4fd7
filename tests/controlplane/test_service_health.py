"""The control plane's /health speaks for its background threads, not only for its HTTP server:
an API that answers while the lost-executor sweep or the outbox is gone looks healthy to a
supervisor, and nothing restarts it."""
from __future__ import annotations

import time

import pytest
import requests

from controlplane import server
from controlplane.testing import running_controlplane

from .conftest import RECIPE


@pytest.fixture
def cp(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "SWEEP_INTERVAL_S", 0.05)
    with running_controlplane(tmp_path / "cp") as handle:
        yield handle


def _health(cp) -> requests.Response:
    return requests.get(f"{cp.base_url}/health", timeout=10)


def _wait_until(condition, what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's end is the point
def test_health_fails_naming_the_sweeper_once_it_is_gone(cp, monkeypatch):
    assert _health(cp).status_code == 200

    def library_exits() -> None:
        raise SystemExit(1)  # not an Exception: the thread ends, and Python's excepthook says nothing

    monkeypatch.setattr(cp.cp, "sweep", library_exits)
    sweeper = next(t for t in cp.server._threads if t.name == "controlplane-sweeper")
    sweeper.join(timeout=20)
    assert not sweeper.is_alive()

    answer = _health(cp)
    assert answer.status_code == 503
    assert "controlplane-sweeper" in answer.json()["problem"]


def test_the_outbox_outlives_a_failure_of_its_wait_and_still_sends(cp, monkeypatch):
    """The outbox's wait stood outside its try: one failure there ended the thread, and from then
    on no run reached a queue while the API still answered 200."""
    wait = cp.cp.executions.wait_for_send
    failures: list[int] = []

    def fails_once(timeout_s: float) -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("database is locked")
        wait(timeout_s)

    monkeypatch.setattr(cp.cp.executions, "wait_for_send", fails_once)
    cp.cp.executions.request_send()
    _wait_until(lambda: failures, "the outbox never turned")

    cp.create_pool("p", default=True)
    run = cp.run_source(cp.create_source("s", RECIPE)["id"])
    _wait_until(lambda: cp.execution(run["id"])["enqueued_at"] is not None, "the run never reached its queue")
    assert _health(cp).status_code == 200


def test_a_stopped_control_plane_names_no_thread_gone(cp):
    cp.stop()
    assert cp.server.threads_gone() == []
