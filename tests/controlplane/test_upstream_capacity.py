"""Claims waiting on an upstream DataHub that hangs (it takes the request and never answers) hold
only the threads set aside for waiting on DataHub (controlplane/capacity.py), never the ones every
other call of the API runs in: anyio's 40 threads, shared by the whole process. A real control
plane fronting a stand-in DataHub behind a proxy that swallows getSecretValues, as in
test_upstream_sync.py."""
from __future__ import annotations

import threading
import time

import requests

from controlplane import capacity
from controlplane.upstream import gms as gms_module
from executor import datahub_aspects
from executor.controlplane_client import LeaseLost

from .conftest import ANYIO_DEFAULT_THREADS, ExecutorDouble, timed
from .test_upstream_sync import POOL, RECIPE, SECRET_RECIPE, Pair, claim, now_ms, pair, proxy  # noqa: F401 (fixtures)

CLAIMS = ANYIO_DEFAULT_THREADS + 8
SECRET_RUNS = [f"secret-{i:02d}" for i in range(CLAIMS)]
# What any call of the API may take while DataHub hangs; a call waiting for a thread waits until
# DataHub's client gives up (here: until the test ends the hang), so the two are far apart.
PROMPT_S = 5.0


def take_runs(pair: Pair, proxy, monkeypatch) -> ExecutorDouble:
    """CLAIMS runs whose recipes name secrets ("secret-NN") and two without ("plain-1",
    "plain-2"), taken from DataHub through PROXY; returns the executor that claims the first."""
    monkeypatch.setattr(gms_module, "TIMEOUT_S", 120)  # a hang lasts until the test ends it
    sync = pair.sync(url=proxy.url)
    sync.attach()
    made = []
    for execution_id in SECRET_RUNS + ["plain-1", "plain-2"]:
        request = pair.request(execution_id, now_ms())
        request.aspect.args["recipe"] = RECIPE if execution_id.startswith("plain") else SECRET_RECIPE
        made.append(request)
    pair.create(*made)
    taken = set()
    for _ in range(5):
        taken.update(sync.discover())
    assert taken == set(SECRET_RUNS) | {"plain-1", "plain-2"}
    claimer = ExecutorDouble(pair.ours, POOL, "executor-1")
    claimer.heartbeat()
    return claimer


def claim_all_while_datahub_hangs(pair: Pair, proxy, claimer: ExecutorDouble) -> tuple[object, list,
                                                                                        list[threading.Thread]]:
    """Every secret run claimed at once while DataHub swallows getSecretValues; returns once each
    claim either waits on DataHub or was answered: (the hang's rule, the answers so far, the
    claiming threads)."""
    hung = proxy.hang("POST", "/api/graphql", body_has=(b"getSecretValues",))
    answers: list = []

    def claim_one(execution_id: str) -> None:
        started = time.monotonic()
        try:
            response = claim(pair, claimer, execution_id)
            answers.append((response.status_code, response.json(), time.monotonic() - started,
                            response.headers.get("Retry-After")))
        except requests.RequestException as exc:
            answers.append((None, {"error": str(exc)}, time.monotonic() - started, None))

    threads = [threading.Thread(target=claim_one, args=(e,), daemon=True) for e in SECRET_RUNS]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while hung.hits + len(answers) < ANYIO_DEFAULT_THREADS:
        assert time.monotonic() < deadline, f"{hung.hits} claims reached DataHub, {len(answers)} answered"
        time.sleep(0.05)
    time.sleep(0.5)  # the last of them are inside DataHub's client now
    return hung, answers, threads


def test_claims_waiting_on_a_hanging_datahub_hold_up_no_other_executors_calls(pair, proxy, monkeypatch):
    """More claims waiting on DataHub than anyio has threads took every thread: another
    executor's claim of a run without secrets, its cancel check, its pool read, its log upload,
    the 409 refusing a stale result (Starlette built error answers in a thread) and /health all
    waited for DataHub's client to give up (15 s, then the claims queued behind took the threads
    again): runs started late, cancels and logs did not arrive, and a supervisor probing /health
    judged the control plane dead. Heartbeats and accepted results, ingested on the event loop,
    got through even then."""
    claimer = take_runs(pair, proxy, monkeypatch)
    other = ExecutorDouble(pair.ours, POOL, "executor-2")
    other.heartbeat()
    running = other.claim("plain-1")
    assert running is not None
    hung, _, threads = claim_all_while_datahub_hangs(pair, proxy, claimer)

    def stale_result_refused() -> None:
        try:
            other.client.report("plain-1", "not-its-lease", datahub_aspects.running_result(
                started_ms=now_ms(), report="", peak_memory_bytes=None, task=running.task))
        except LeaseLost:
            return
        raise AssertionError("a result under a stale lease was taken")

    slow: list[str] = []
    try:
        timed("heartbeat", lambda: other.heartbeat(running=["plain-1"]), slow, PROMPT_S)
        timed("progress", lambda: other.progress(running, "working"), slow, PROMPT_S)
        timed("result refused (409)", stale_result_refused, slow, PROMPT_S)
        timed("cancel check", lambda: other.client.cancel_requested("plain-1"), slow, PROMPT_S)
        timed("pool read", lambda: other.client.pool(POOL), slow, PROMPT_S)
        timed("log upload", lambda: other.client.upload_log("plain-1", running.lease, b"the whole log\n"), slow,
              PROMPT_S)
        timed("result", lambda: other.finish(running), slow, PROMPT_S)
        timed("claim without secrets", lambda: other.claim("plain-2"), slow, PROMPT_S)
        timed("/health", lambda: requests.get(f"{pair.ours.base_url}/health", timeout=10).raise_for_status(), slow,
              PROMPT_S)
    finally:
        proxy.stop()  # DataHub's connections drop: the hung claims answer
        for thread in threads:
            thread.join(timeout=30)
    assert not slow, f"{hung.hits} claims waiting on DataHub held up: " + "; ".join(slow)
    assert pair.ours.execution("plain-1")["status"] == "SUCCESS"


def test_a_claim_finding_every_datahub_slot_taken_is_told_to_ask_again_later(pair, proxy, monkeypatch):
    """A claim that would wait for a thread to ask DataHub in is answered at once with 503 and
    retry_after_s (the executor keeps the message and asks again, as through a DataHub outage),
    not queued behind the claims that hang: no more of them wait on DataHub than it has slots."""
    hung, answers, threads = claim_all_while_datahub_hangs(pair, proxy, take_runs(pair, proxy, monkeypatch))
    try:
        deadline = time.monotonic() + 20
        while len(answers) < CLAIMS - capacity.DATAHUB_CALLS and time.monotonic() < deadline:
            time.sleep(0.05)
        waiting_on_datahub = hung.hits
        answered = list(answers)
    finally:
        proxy.stop()
        for thread in threads:
            thread.join(timeout=30)
    assert waiting_on_datahub <= capacity.DATAHUB_CALLS
    assert len(answered) == CLAIMS - capacity.DATAHUB_CALLS, f"{len(answered)} of {CLAIMS} claims answered"
    for status, body, took, retry_after in answered:
        assert status == 503 and body.get("retry_after_s", 0) > 0 and retry_after, (status, body)
        assert took < PROMPT_S + 1, f"refused after {took:.1f} s"
        assert "DataHub" in body["error"]
    assert all(answer[0] == 503 for answer in answers), "the claims that waited on DataHub answer when it drops"
