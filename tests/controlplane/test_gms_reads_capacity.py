"""GMS reads (an executor's cancel check and pool read, DataHub's client reading what a run
wrote, /config which it asks first) answer while admin changes waiting on a queue service that
hangs hold every one of anyio's default threads (controlplane/capacity.py). They ran in those
threads, so each waited until the queue service answered or its client gave up."""
from __future__ import annotations

import threading
import time

import requests

from .conftest import ANYIO_DEFAULT_THREADS, timed

CHANGES = ANYIO_DEFAULT_THREADS + 8
PROMPT_S = 5.0  # what a read may take here; a read waiting for a default thread waits until the hang ends


def test_gms_reads_answer_while_pool_changes_hold_every_default_thread(cp, executor_double, monkeypatch):
    cp.create_pool("p1")
    executor = executor_double("p1", "executor-1")
    executor.heartbeat()
    source = cp.create_source("reads", "source:\n  type: datahub-mock-data\n  config: {}\n", pool_id="p1")
    execution_id = cp.run_source(source["id"])["id"]

    hang, entered = threading.Event(), []
    pools = cp.cp.pools
    change = pools.set_queue_settings

    def counted(*args, **kwargs):  # in a default thread, before the pools' lock and the queue service
        entered.append(None)
        return change(*args, **kwargs)

    def hanging_queue_service(*args, **kwargs) -> None:  # takes the request, never answers
        hang.wait(120)

    monkeypatch.setattr(pools, "set_queue_settings", counted)
    monkeypatch.setattr(pools.queues, "set_queue_settings", hanging_queue_service)
    admin = requests.Session()
    admin.headers["Authorization"] = f"Bearer {cp.admin_token}"

    def change_queue_settings() -> None:
        try:
            admin.put(f"{cp.gms_url}/admin/v1/pools/p1/queues", json={"visibility_timeout_s": 45}, timeout=120)
        except requests.RequestException:
            pass

    changes = [threading.Thread(target=change_queue_settings, daemon=True) for _ in range(CHANGES)]
    for thread in changes:
        thread.start()
    slow: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while len(entered) < ANYIO_DEFAULT_THREADS:
            assert time.monotonic() < deadline, f"only {len(entered)} pool changes took a thread"
            time.sleep(0.05)
        time.sleep(0.3)

        reader = requests.Session()
        reader.headers["Authorization"] = f"Bearer {executor.token}"
        urn = f"urn:li:dataHubExecutionRequest:{execution_id}"
        timed("cancel check", lambda: executor.client.cancel_requested(execution_id), slow, PROMPT_S)
        timed("pool read", lambda: executor.client.pool("p1"), slow, PROMPT_S)
        timed("/config", lambda: reader.get(f"{cp.gms_url}/config", timeout=PROMPT_S * 2).raise_for_status(), slow,
              PROMPT_S)
        timed("batch get", lambda: reader.get(
            f"{cp.gms_url}/entitiesV2?ids=List({requests.utils.quote(urn, safe='')})", timeout=PROMPT_S * 2,
        ).raise_for_status(), slow, PROMPT_S)
    finally:
        hang.set()
        for thread in changes:
            thread.join(timeout=60)
    assert not slow, f"{len(entered)} pool changes waiting on the queue service held up: " + "; ".join(slow)
