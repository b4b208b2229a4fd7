"""Pool changes against writes that land while they run: a pool's delete, the default pool's
change and a pool's creation each decide from what they read, so what they check is checked
again inside the transaction that writes. A write is slipped in right before that transaction,
in process, as the upstream sync thread (or any request thread) makes it."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
import requests

from controlplane import server
from controlplane.testing import ControlPlaneHandle, running_controlplane

from .conftest import RECIPE


@pytest.fixture
def cp(tmp_path, monkeypatch) -> Iterator[ControlPlaneHandle]:
    monkeypatch.setattr(server, "SWEEP_INTERVAL_S", 3600.0)
    with running_controlplane(tmp_path / "cp") as handle:
        yield handle


def _before_next_write(monkeypatch, cp: ControlPlaneHandle, write: Callable[[], Any]) -> list:
    """Run WRITE once, right before the next transaction any thread opens (the change under
    test's: it has read what it decides from, and is about to write)."""
    store = cp.cp.store
    opened = store.transaction
    done: list = []

    @contextmanager
    def write_first():
        if not done:
            done.append(None)
            done[0] = write()
        with opened() as tx:
            yield tx

    monkeypatch.setattr(store, "transaction", write_first)
    return done


def _delete(cp: ControlPlaneHandle, pool_id: str) -> requests.Response:
    return cp.http.post(f"{cp.gms_url}/entities?action=delete", json={"urn": f"urn:li:dataHubRemoteExecutorPool:{pool_id}"},
                        timeout=30)


def _admin(cp: ControlPlaneHandle):
    return cp.cp.tokens.authenticate(f"Bearer {cp.admin_token}")


def test_a_run_created_while_its_pool_is_deleted_keeps_the_pool(cp, monkeypatch):
    """Deleted, the pool took its queues with it and left the run PENDING for good: never sent,
    never claimed, and neither cancellable (its pool no longer ours) nor deletable."""
    cp.create_pool("p", default=True)
    cp.create_pool("q")
    created = _before_next_write(monkeypatch, cp, lambda: cp.cp.test_connection(RECIPE, None, "q", _admin(cp)))
    answer = _delete(cp, "q")
    assert created and created[0], "the run was created while the delete ran"
    assert answer.status_code == 409, answer.text
    assert "q" in cp.cp.pools.ids()
    execution = created[0].rsplit(":", 1)[1]
    deadline = time.monotonic() + 10
    while cp.execution(execution)["enqueued_at"] is None:
        assert time.monotonic() < deadline, "the run was never sent to its pool's queue"
        time.sleep(0.1)


def test_a_pool_made_the_default_while_it_is_deleted_keeps_the_pool(cp, monkeypatch):
    """Deleted, the default named no pool: every run of a default-routed source was refused."""
    cp.create_pool("p", default=True)
    cp.create_pool("q")
    _before_next_write(monkeypatch, cp, lambda: cp.cp.pools.set_default("q"))
    answer = _delete(cp, "q")
    assert answer.status_code == 409, answer.text
    assert cp.cp.pools.default_pool_id() == "q"
    assert "q" in cp.cp.pools.ids()


def test_a_pool_deleted_while_it_is_made_the_default_is_not_the_default(cp, monkeypatch):
    cp.create_pool("p", default=True)
    cp.create_pool("q")
    deleted = _before_next_write(monkeypatch, cp, lambda: cp.cp.pools.delete("q"))
    answer = cp.http.post(f"{cp.gms_url}/api/graphql", timeout=30, json={
        "query": "mutation($u: String!) { updateDefaultRemoteExecutorPool(urn: $u) }",
        "variables": {"u": "urn:li:dataHubRemoteExecutorPool:q"}}).json()
    assert len(deleted) == 1 and deleted[0].rows > 0, "the delete ran first, and deleted the pool's aspects"
    assert "q" not in cp.cp.pools.ids()
    assert answer.get("errors"), answer
    assert cp.cp.pools.default_pool_id() == "p"
    source = cp.create_source("s", RECIPE)["id"]
    assert cp.run_source(source)["id"], "a default-routed source still runs"


def test_a_pool_created_twice_at_once_is_a_conflict_not_a_server_error(cp, monkeypatch):
    cp.create_pool("p", default=True)
    first: list = []
    _before_next_write(monkeypatch, cp, lambda: first.append(cp.cp.pools.create("q")))
    answer = cp.http.post(f"{cp.gms_url}/api/graphql", timeout=30, json={
        "query": "mutation($i: CreateRemoteExecutorPoolInput!) { createRemoteExecutorPool(input: $i) }",
        "variables": {"i": {"executorPoolId": "q", "isDefault": False}}}).json()
    assert first, answer
    assert "already exists" in str(answer.get("errors")), answer
    assert cp.cp.pools.get("q")["queue_url"] == first[0]["queue_url"]


def test_two_queue_settings_at_once_leave_the_queues_as_the_pool_says(cp, monkeypatch):
    """The later change's queue attributes and the earlier change's record: the pool said 30 s
    while its queues hid a message for 90 s, and real SQS refused the control plane's next start
    (CreateQueue with other attributes than the queue's: QueueAlreadyExists)."""
    cp.create_pool("p", default=True)
    other = threading.Thread(target=lambda: cp.cp.pools.set_queue_settings("p", visibility_timeout_s=90))

    def other_change_meanwhile() -> None:
        other.start()
        other.join(timeout=3)  # done by then, unless it waits for this change to end

    _before_next_write(monkeypatch, cp, other_change_meanwhile)
    answer = cp.http.put(f"{cp.gms_url}/admin/v1/pools/p/queues", json={"visibility_timeout_s": 30}, timeout=30)
    assert answer.status_code == 200, answer.text
    other.join(timeout=30)
    pool = cp.cp.pools.get("p")
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                          aws_access_key_id="local", aws_secret_access_key="local")
    for url in (pool["queue_url"], pool["monitors_queue_url"]):
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
        assert int(attributes["VisibilityTimeout"]) == pool["visibility_timeout_s"], url
