"""Answers that are not the control plane's, or that say "not now": what a proxy, a captive
portal or a throttling gateway in the way sends. Found by review, each reproduced first with a
real executor behind a breaking proxy:
- a 200 whose body is not GMS's answer to the result was taken as the result recorded: the
  message was deleted, the control plane kept the run RUNNING, and reconciliation ran it again;
- a 429 on the result was a refusal for good: the run was given back and run again;
- a 429 on the claim left the message for the dead-letter queue;
- a log endpoint that took the upload and never answered held the result back ~80 s (the
  client's retries), past a container's stop grace period;
- a 409 on the log after the result was recorded was taken for a lost lease.
Five runs at once, one fault each, one executor."""
from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import custom_env, custom_recipe, mock_recipe

from .faulty_proxy import in_front_of

THROTTLED = b'{"status": 429, "message": "Too many requests"}'


@pytest.fixture
def proxy(system):
    with in_front_of(system.cp.gms_url, system.executors) as broken:
        yield broken


def starts(executor, execution_id: str) -> int:
    return sum("started: RUN_INGEST" in line and execution_id in line for line in executor.lines)


def test_answers_in_the_way_neither_lose_nor_repeat_a_run_nor_hold_back_its_result(system, proxy, tmp_path):
    runs = {}
    for name in ("portal", "throttled-result", "throttled-claim", "log-hangs", "log-409-after-result"):
        if name.startswith("log"):  # a log the result's report cannot hold whole, so it is uploaded
            source = system.cp.create_source(name, custom_recipe("FloodSource", tmp_path / f"{name}.json", megabytes=1),
                                             extra_env=custom_env())
        else:
            source = system.cp.create_source(name, mock_recipe(tmp_path / f"{name}.json"))
        runs[name] = system.cp.run_source(source["id"])["id"]
    # Each final result carries durationMs; progress reports do not.
    proxy.break_("POST", "ingestProposal", status=200, body=b"<html>502 Bad Gateway</html>", times=1,
                 body_has=(b"durationMs", runs["portal"].encode()))
    proxy.break_("POST", "ingestProposal", status=429, body=THROTTLED, times=1,
                 body_has=(b"durationMs", runs["throttled-result"].encode()))
    claims = proxy.break_("POST", f"/executions/{runs['throttled-claim']}/claim", status=429, body=THROTTLED, times=2)
    hangs = proxy.hang("PUT", f"/executions/{runs['log-hangs']}/log")
    # Its log's one try before the result fails; the tries after it meet a 409 (a proxy's).
    proxy.break_("PUT", f"/executions/{runs['log-409-after-result']}/log", status=503, body=b"{}", times=1)
    proxy.break_("PUT", f"/executions/{runs['log-409-after-result']}/log", status=409, body=b'{"message": "stale"}')
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url)

    ended = {name: system.cp.wait_for_status(execution_id, {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=240)
             for name, execution_id in runs.items()}

    assert {name: e["status"] for name, e in ended.items()} == dict.fromkeys(runs, "SUCCESS"), ended
    assert {name: starts(executor, execution_id) for name, execution_id in runs.items()} == dict.fromkeys(runs, 1), \
        "a run whose result or claim met an answer in the way ran again"
    assert claims.hits == 2
    assert not any("lost the execution" in line or "Traceback" in line for line in executor.lines)
    assert any("full log not uploaded: the control plane does not take it" in line
               and runs["log-409-after-result"] in line for line in executor.lines)
    assert not any("dead-letter queue" in line for line in executor.lines)
    # Its result waited one quick try of the log (10 s), not the client's retries (~80 s).
    assert hangs.hits >= 1, "its log was uploaded before its result"
    held = ended["log-hangs"]["finished_at"] - ended["log-hangs"]["started_at"]
    assert held < 45, f"the result came {held:.0f} s after the run began"


def test_heartbeats_refused_for_good_are_said_once_and_their_return_too(system, proxy):
    """A 400 on every heartbeat: the client logs outages only, so the executor went OFFLINE at
    the control plane (and its running tasks were ended as lost) without a line in its own log."""
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url)
    refusal = json.dumps({"status": 400, "message": "this heartbeat is not taken here"}).encode()
    refused = proxy.break_("POST", "ingestProposal", status=400, body=refusal,
                           body_has=(b"dataHubRemoteExecutorStatus",))
    said = executor.wait_for_line("refuses this executor's heartbeat", timeout_s=30)
    assert "this heartbeat is not taken here" in said
    deadline = time.monotonic() + 30
    while refused.hits < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert refused.hits >= 3
    proxy.heal()
    executor.wait_for_line("takes this executor's heartbeats again", timeout_s=30)
    assert sum("refuses this executor's heartbeat" in line for line in executor.lines) == 1
