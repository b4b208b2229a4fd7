"""At-least-once and never lost: visibility extension, duplicates, kill -9, health, check."""
from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import requests

from .conftest import EXECUTOR, ExecutorProcess, custom_env, custom_recipe, mock_recipe, wait_for_tick


def test_visibility_is_extended_so_a_long_task_runs_once(tmp_path, system):
    system.cp.create_pool("short-visibility", visibility_timeout_s=10)
    system.pool_id = "short-visibility"
    system.start_executor("executor-a")
    system.start_executor("executor-b")
    source = system.cp.create_source("long", custom_recipe("SleepySource", tmp_path / "f.json", seconds=25),
                                     pool_id="short-visibility", extra_env=custom_env())
    execution = system.cp.run_source(source["id"])
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=180)
    assert done["status"] == "SUCCESS"
    assert done["receive_count"] == 1, "the message was never redelivered"
    starts = sum("started: RUN_INGEST" in line and execution["id"] in line for ex in system.executors for line in ex.lines)
    assert starts == 1


def test_kill_9_of_the_master_mid_task_reruns_the_task_and_leaves_no_orphan(system, tmp_path):
    system.cp.create_pool("crash", visibility_timeout_s=10)
    system.pool_id = "crash"
    first = system.start_executor("executor-crash", DATAHUB_EXECUTOR_CGROUP_ROOT="test-exec-crash-root")
    source = system.cp.create_source("rerun", custom_recipe("SleepySource", tmp_path / "r.json", seconds=8),
                                     pool_id="crash", extra_env=custom_env())
    execution = system.cp.run_source(source["id"])
    wait_for_tick(system, execution["id"])
    first_claim = system.cp.execution(execution["id"])
    # This executor's task (`datahub ingest run -c -`, the recipe on its stdin), no one else's.
    task_pids = [pid for pid, argv in descendants(first.process.pid) if "ingest run" in argv]
    assert task_pids, "the task runs under the executor"
    first.kill9()
    # Same executor id and cgroup root: its restart sweeps what the crash left, then runs the
    # execution again to completion: from the message the control plane sends again once the
    # restart shows the run lost, or from the first one redelivered after the pool's 10 s
    # visibility timeout, whichever comes first (the other is deleted as a duplicate delivery).
    second = system.start_executor("executor-crash", DATAHUB_EXECUTOR_CGROUP_ROOT="test-exec-crash-root")
    assert any("killed 1 task(s) left by a previous run" in line for line in second.lines)
    # Whether it waited for the crashed process's heartbeats to stop depends on how long its own
    # start took (3 s of silence is enough here): the wait itself is the next test's.
    for pid in task_pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=180)
    assert done["status"] == "SUCCESS"
    assert done["lease_epoch"] > first_claim["lease_epoch"], "the run that ended is the crashed process's claim"
    assert done["executor_instance"] != first_claim["executor_instance"]


def test_a_second_process_under_a_live_executors_id_waits_until_that_one_goes_silent(system):
    """A restart under a fixed DATAHUB_EXECUTOR_ID while the crashed process's heartbeats are
    still fresh: the control plane refuses the new process (409, the id is in use) and it waits,
    saying so, rather than exit. Made certain by a first process that is still alive, and killed
    only once the second says it waits."""
    first = system.start_executor("executor-twin")
    second = ExecutorProcess(system.executor_env("executor-twin"))
    system.executors.append(second)
    second.wait_for_line("waiting for that process to go silent", timeout_s=60)
    assert not any("Starting datahub executor worker" in line for line in second.lines)
    first.kill9()
    second.wait_for_line("Starting datahub executor worker", timeout_s=60)


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process below PID."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found.append((child.pid, " ".join(child.cmdline())))
        except psutil.Error:
            continue  # ended meanwhile
    return found


def test_a_duplicate_delivery_is_recognised_by_claim_and_deleted(system, tmp_path):
    executor = system.start_executor()
    execution = system.cp.run_source(system.cp.create_source("dup", mock_recipe(tmp_path / "d.json"))["id"])
    assert system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)["status"] == "SUCCESS"
    import boto3

    pool = system.cp.cp.pools.get("remote")
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=system.cp.sqs_endpoint_url,
                       aws_access_key_id="local", aws_secret_access_key="local")
    sqs.send_message(QueueUrl=pool["queue_url"], MessageBody=json.dumps(
        {"v": 1, "execution_id": execution["id"], "task": "RUN_INGEST", "pool_id": "remote"}))
    executor.wait_for_line("duplicate delivery, deleting the message", timeout_s=60)
    assert system.cp.execution(execution["id"])["status"] == "SUCCESS"
    # Both messages go: the duplicate's right after that line, the original's with the next batch
    # of deletes (executor/acks.py, at most its linger later).
    deadline = time.monotonic() + 10
    while True:
        attributes = sqs.get_queue_attributes(QueueUrl=pool["queue_url"], AttributeNames=["All"])["Attributes"]
        left = int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_health_and_metrics_are_served_on_loopback(system, tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    system.start_executor(DATAHUB_EXECUTOR_HEALTH_ADDRESS=f"127.0.0.1:{port}")
    execution = system.cp.run_source(system.cp.create_source("metrics", mock_recipe(tmp_path / "m.json"))["id"])
    system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)
    health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    assert health.status_code == 200 and health.json()["ok"] is True
    wanted = 'datahub_executor_tasks_total{reason="",status="SUCCESS",task="RUN_INGEST"} 1.0'
    deadline = time.monotonic() + 10  # the control plane learns the result a moment before the counter moves
    while wanted not in (metrics := requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert 'datahub_executor_tasks_total{reason="",status="SUCCESS",task="RUN_INGEST"} 1.0' in metrics
    assert "datahub_executor_ledger_used_weight" in metrics
    assert "datahub_executor_sqs_receive_seconds_count" in metrics


def test_check_passes_against_a_healthy_setup_and_names_the_fix_when_not(system, tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    index = tmp_path / "index"
    (index / "acryl-datahub").mkdir(parents=True)
    (index / "acryl-datahub" / "index.html").write_text("<html></html>")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(index))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # a package index on loopback: no outside network
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = system.executor_env()
    env["PIP_INDEX_URL"] = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        ok = subprocess.run([EXECUTOR[0], "check"], env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()  # refused from now on, not accepted and left unanswered for 10 s
    lines = ok.stdout.splitlines()
    assert ok.returncode == 0, ok.stdout
    verdicts = {line[6:].split(":")[0]: line.split()[0] for line in lines}
    # The OOM line warns where the executor may not lower its score (no CAP_SYS_RESOURCE, as here):
    # a WARN fails nothing, and everything else passes.
    assert len(lines) == 11 and verdicts.pop("OOM protection") in {"PASS", "WARN"}, ok.stdout
    assert set(verdicts.values()) == {"PASS"}, ok.stdout
    assert {line[6:].split(":")[0] for line in lines} >= {"directories", "task python", "health address"}
    assert any(line.startswith("PASS  isolation: tasks run as the executor's own user") for line in lines)
    assert any(line.startswith("PASS  cgroups: mode cgroup-v") for line in lines)
    assert any(line.startswith("PASS  SQS: queues") and "-monitors reachable, credentials accepted" in line
               for line in lines)
    no_sqs = subprocess.run([EXECUTOR[0], "check"], env={**env, "DATAHUB_EXECUTOR_SQS_ENDPOINT_URL": "http://127.0.0.1:9"},
                            capture_output=True, text=True, timeout=120)
    assert no_sqs.returncode == 1
    assert "FAIL  SQS: EndpointConnectionError: allow outbound HTTPS" in no_sqs.stdout, no_sqs.stdout
    bad = subprocess.run([EXECUTOR[0], "check"], env={**env, "DATAHUB_EXECUTOR_POOL_ID": "nope"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "FAIL  token and pool: token not scoped to pool nope (403)" in bad.stdout
    all_pools = {**env, "DATAHUB_EXECUTOR_POOL_ID": "nope", "DATAHUB_GMS_TOKEN": system.cp.create_executor_token(None)}
    missing = subprocess.run([EXECUTOR[0], "check"], env=all_pools, capture_output=True, text=True, timeout=60)
    assert "FAIL  token and pool: pool nope does not exist: create it, or fix DATAHUB_EXECUTOR_POOL_ID" in missing.stdout
    wrong = subprocess.run([EXECUTOR[0], "check"], env={**env, "DATAHUB_GMS_TOKEN": "dhx_wrong"},
                           capture_output=True, text=True, timeout=60)
    assert "FAIL  token and pool: token refused (401)" in wrong.stdout
    assert env["DATAHUB_GMS_TOKEN"] not in ok.stdout + ok.stderr + bad.stdout + bad.stderr
