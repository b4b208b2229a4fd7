"""The outbox that sends PENDING executions to their pool's queue, against a queue service that
fails: it refuses, or it hangs (a network partition: connections open, answers never come).
Neither may hold up the control plane's API, which executors heartbeat and report through."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from controlplane import server
from controlplane.testing import ControlPlaneHandle, running_controlplane

from .conftest import RECIPE, ExecutorDouble


@pytest.fixture
def cp(tmp_path, monkeypatch) -> Iterator[ControlPlaneHandle]:
    """A control plane whose lost-executor sweep runs only when a test calls it: what is judged
    here is the API and the outbox, not the sweep."""
    monkeypatch.setattr(server, "SWEEP_INTERVAL_S", 3600.0)
    with running_controlplane(tmp_path / "cp") as handle:
        yield handle


@contextmanager
def hung_queue_service(cp: ControlPlaneHandle) -> Iterator[None]:
    """The embedded SQS server replaced, on its port, by a socket that takes connections (the
    kernel completes them) and never answers; the real server back on the port afterwards."""
    port = int(cp.sqs_endpoint_url.rsplit(":", 1)[1])
    cp.stop_queue()
    hung = socket.socket()
    hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hung.bind(("127.0.0.1", port))
    hung.listen(128)
    try:
        yield
    finally:
        hung.close()  # the connections it holds are reset: a send waiting on one fails and is retried
        cp.start_queue()


def _timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_a_hung_queue_service_holds_up_neither_the_run_request_nor_heartbeats(cp):
    cp.create_pool("p", default=True)
    executor = ExecutorDouble(cp, "p", "e1", interval_s=1)
    executor.heartbeat()
    source = cp.create_source("s", RECIPE)["id"]
    with hung_queue_service(cp):
        created: list[dict] = []
        request = threading.Thread(target=lambda: created.append(cp.run_source(source)), daemon=True)
        request.start()
        request.join(timeout=3)
        assert created, "the request that creates a run waits on the queue service"
        assert _timed(executor.heartbeat) < 2, "heartbeats wait while a send hangs"
        assert cp.execution(created[0]["id"])["status"] == "PENDING"
    deadline = time.monotonic() + 60
    while cp.execution(created[0]["id"])["enqueued_at"] is None:
        assert time.monotonic() < deadline, "the run was not sent once the queue service answered again"
        time.sleep(0.1)


def test_a_healthy_executors_run_survives_a_hung_queue_service(tmp_path):
    """Heartbeats that could not land while a send blocked the API made the sweep judge a live
    executor OFFLINE and end its run ABORTED (EXECUTOR_LOST)."""
    with running_controlplane(tmp_path / "cp") as cp:
        cp.create_pool("p", default=True)
        executor = ExecutorDouble(cp, "p", "e1", interval_s=0.5)
        executor.heartbeat()
        running = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
        assert executor.claim(running) is not None
        stop = threading.Event()
        beating = threading.Thread(target=_heartbeat_until, args=(executor, running, stop))
        beating.start()
        try:
            with hung_queue_service(cp):
                threading.Thread(target=cp.run_source, args=(cp.create_source("t", RECIPE)["id"],), daemon=True).start()
                time.sleep(6)  # twice the six intervals after which a silent executor is OFFLINE
        finally:
            stop.set()
            beating.join()
        shown = cp.execution(running)
        assert (shown["status"], shown["reason"]) == ("RUNNING", None)


def _heartbeat_until(executor: ExecutorDouble, running: str, stop: threading.Event) -> None:
    """An executor's heartbeat loop: every interval, whatever became of the last one."""
    while not stop.wait(executor.interval_s / 2):
        try:
            executor.heartbeat(running=[running])
        except Exception:  # the control plane unreachable: the executor tries again next interval
            pass


@pytest.mark.parametrize("change", ["create", "queue settings", "delete"])
def test_a_pool_change_waiting_on_a_hung_queue_service_does_not_hold_up_heartbeats(cp, change):
    """A pool's create, queue settings and delete call the queue service: from the API's event
    loop, one that hung froze every other call until botocore gave up."""
    cp.create_pool("p", default=True)
    cp.create_pool("idle")
    executor = ExecutorDouble(cp, "p", "e1", interval_s=1)
    executor.heartbeat()
    calls = {"create": lambda: cp.create_pool("q"),
             "queue settings": lambda: cp._admin("PUT", "/pools/idle/queues", json={"visibility_timeout_s": 30}),
             "delete": lambda: cp.http.post(f"{cp.gms_url}/entities?action=delete",
                                            json={"urn": "urn:li:dataHubRemoteExecutorPool:idle"}, timeout=120)}
    with hung_queue_service(cp):
        admin = threading.Thread(target=_swallowing(calls[change]), daemon=True)
        admin.start()
        time.sleep(0.5)  # the change is waiting on the queue service
        assert admin.is_alive(), f"the pool {change} did not wait on the hung queue service"
        assert _timed(executor.heartbeat) < 2, f"heartbeats wait while a pool {change} waits on the queue service"
    admin.join(timeout=60)


def _swallowing(call):
    """CALL, whatever it answers: what the queue service's hang does to the call itself is not
    judged here."""
    def run() -> None:
        try:
            call()
        except Exception:
            pass
    return run
