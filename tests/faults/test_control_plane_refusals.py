"""The control plane says no for good: a result it refuses (a 4xx other than 409), and an
executor token revoked while its executors run. Neither may leave work held for ever, nor send
queued work to the dead-letter queue."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from executor.testing import free_port
from tests.e2e.conftest import mock_recipe

from .faulty_proxy import in_front_of

REFUSED = "refused this execution's result for good"
TOKEN_REFUSED = "refuses this executor's token"


@pytest.fixture
def proxy(system):
    with in_front_of(system.cp.gms_url, system.executors) as broken:
        yield broken


def _sqs(system):
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=system.cp.sqs_endpoint_url,
                        aws_access_key_id="local", aws_secret_access_key="local")


def _messages(sqs, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def _health(port: int, path: str = "/health") -> tuple[int, str]:
    answer = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    return answer.status_code, answer.json()["reason"]


def test_a_result_the_control_plane_refuses_for_good_is_given_back_and_ends_failure_at_the_third_run(
        system, proxy, tmp_path):
    """Every final result answered 422: the lease stayed REPORTING, its message extended and its
    execution listed by the heartbeat, so the control plane kept it RUNNING for ever. Now each
    run gives it back as failed, and the third give-back ends it FAILURE (EXECUTOR_ERROR)."""
    refusal = json.dumps({"exceptionClass": "com.linkedin.restli.server.RestLiServiceException",
                          "message": "unprocessable result", "status": 422}).encode()
    results = proxy.break_("POST", "ingestProposal", status=422, body=refusal,
                           body_has=(b"dataHubExecutionRequestResult", b"durationMs"))
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url, DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS="1")
    execution = system.cp.run_source(system.cp.create_source("refused", mock_recipe(tmp_path / "r.json"))["id"])

    ended = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=240)
    assert (ended["status"], ended["reason"]) == ("FAILURE", "EXECUTOR_ERROR")
    assert "refused its result (HTTP 422)" in (ended["log_tail"] or "")
    assert results.hits == 3, "one result per run, each refused once: no retry loop, no fallback result"
    assert sum(REFUSED in line for line in executor.lines) == 3, "said once per run"
    assert sum("unprocessable result" in line for line in executor.lines) == 3, "naming the control plane's reason"
    # Nothing of it is held: its message is gone, the heartbeat lists nothing.
    pool = system.cp.cp.pools.get("remote")
    deadline = time.monotonic() + 30
    while _messages(_sqs(system), pool["queue_url"]) or system.cp.executors("remote")[0]["running_executions"]:
        assert time.monotonic() < deadline, "the refused execution is still held"
        time.sleep(0.5)
    # And its one weight is free: the next run (results accepted again) runs at once.
    proxy.heal()
    after = system.cp.run_source(system.cp.create_source("after", mock_recipe(tmp_path / "a.json"))["id"])
    assert system.cp.wait_for_status(after["id"], {"SUCCESS", "FAILURE"}, timeout_s=120)["status"] == "SUCCESS"
    assert not any("Traceback" in line or "failed unexpectedly" in line for line in executor.lines)
    assert executor.process.poll() is None


def test_a_revoked_token_stops_consumption_without_spending_receives_and_resumes_when_accepted_again(system, tmp_path):
    """A revoked token made every claim 401: each receive was dropped for the redrive, and queued
    work reached the dead-letter queue, never to run. Now the executor stops receiving, /health
    names the cause, and it resumes by itself once the token works again."""
    cp = system.cp
    cp._admin("PUT", "/pools/remote/queues", json={"visibility_timeout_s": 5, "max_receive_count": 4})
    created = cp._admin("POST", "/tokens", json={"kind": "executor", "pools": ["remote"]})
    row = cp.cp.store.one("SELECT * FROM tokens WHERE id=?", (created["id"],))
    port = free_port()
    executor = system.start_executor(DATAHUB_GMS_TOKEN=created["token"],
                                     DATAHUB_EXECUTOR_HEALTH_ADDRESS=f"127.0.0.1:{port}")
    assert _health(port)[0] == 200

    cp._admin("DELETE", f"/tokens/{created['id']}")
    deadline = time.monotonic() + 30
    while (health := _health(port))[0] != 503:
        assert time.monotonic() < deadline, f"/health still says {health} with the token revoked"
        time.sleep(0.2)
    assert TOKEN_REFUSED in health[1] and "DATAHUB_GMS_TOKEN" in health[1], health
    executor.wait_for_line(TOKEN_REFUSED, timeout_s=5)
    # Liveness stays good: a liveness probe (the chart's, ECS's and the image's checks) that
    # failed here would restart the executor, killing its tasks and mending nothing.
    assert _health(port, "/health/live")[0] == 200
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}
    env["DATAHUB_EXECUTOR_HEALTH_ADDRESS"] = f"127.0.0.1:{port}"
    check = [str(Path(sys.executable).parent / "datahub-executor"), "healthcheck", "--live"]
    assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0

    execution = cp.run_source(cp.create_source("queued", mock_recipe(tmp_path / "q.json"))["id"])
    time.sleep(20)  # four visibility timeouts: an executor that dropped it at each receive sent it to the DLQ
    assert cp.execution(execution["id"])["status"] == "PENDING"
    pool = cp.cp.pools.get("remote")
    sqs = _sqs(system)
    assert _messages(sqs, pool["dlq_url"]) == 0, "queued work went to the dead-letter queue"
    seen = sqs.receive_message(QueueUrl=pool["queue_url"], MaxNumberOfMessages=1, WaitTimeSeconds=5,
                               VisibilityTimeout=0, MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"]
    # Ours is one receive; a long poll in flight when the token was refused may have been another
    # (its message is returned unclaimed at once). No more: nothing was received since.
    assert int(seen[0]["Attributes"]["ApproximateReceiveCount"]) <= 2, "the executor kept receiving it"
    assert not any("claim refused" in line for line in executor.lines)
    assert sum("no more messages are received" in line for line in executor.lines) == 1, "said once, not per heartbeat"

    with cp.cp.store.transaction() as tx:  # the same token accepted again (restored, as from a backup)
        tx.execute(f"INSERT INTO tokens ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
    executor.wait_for_line("accepts this executor's token again", timeout_s=30)
    done = cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=120)
    assert (done["status"], done["executor_id"]) == ("SUCCESS", "executor-1")
    assert _health(port)[0] == 200
    assert not any("Traceback" in line for line in executor.lines)


@pytest.fixture
def s3_bucket():
    """A versioned bucket on moto's S3 server: every write of a key is kept, so a log written
    over shows as a second version."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        client = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="test",
                              aws_secret_access_key="test")
        client.create_bucket(Bucket="task-logs")
        client.put_bucket_versioning(Bucket="task-logs", VersioningConfiguration={"Status": "Enabled"})
        yield client, endpoint
    finally:
        server.stop()


def test_a_holder_whose_result_is_refused_as_stale_writes_no_log_to_s3(system, proxy, s3_bucket, tmp_path):
    """S3 checks no lease. The full log went to the bucket before the result, so a holder that
    had lost the execution (its result answered 409) wrote its log under the key of the run that
    replaced it. Now the log goes to S3 only once the result is recorded."""
    s3, endpoint = s3_bucket
    stale = proxy.break_("POST", "ingestProposal", status=409, times=1,
                         body=json.dumps({"message": "lease superseded", "status": 409}).encode(),
                         body_has=(b"dataHubExecutionRequestResult", b"durationMs"))
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url, DATAHUB_EXECUTOR_LOG_S3_BUCKET="task-logs",
                                     AWS_ENDPOINT_URL_S3=endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                                     AWS_DEFAULT_REGION="us-east-1")
    execution = system.cp.run_source(system.cp.create_source("logged", mock_recipe(tmp_path / "l.json"))["id"])
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=180)
    assert done["status"] == "SUCCESS", "run again after the first holder lost it"
    assert stale.hits == 1
    assert any("lost the execution" in line for line in executor.lines)
    key = f"datahub-executor/remote/{execution['id']}.log"
    deadline = time.monotonic() + 60
    while not s3.list_object_versions(Bucket="task-logs", Prefix=key).get("Versions"):
        assert time.monotonic() < deadline, "the recorded run's log never reached S3"
        time.sleep(0.2)
    time.sleep(1)
    versions = s3.list_object_versions(Bucket="task-logs", Prefix=key)["Versions"]
    assert len(versions) == 1, f"{len(versions)} writes of the log: the stale holder's too"
