"""Anyone who can send to a pool's queue can forge a message. Forged messages, sent for real:
an execution id that walks out of its URL path and the work directory, a message naming another
pool's execution (with a token for every pool), a forged weight, a control character meant to
forge a log line. None is trusted for more than its shape."""
from __future__ import annotations

import json
import os
import time
import uuid

import boto3

from .conftest import mock_recipe


def sqs(system):
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=system.cp.sqs_endpoint_url,
                        aws_access_key_id="local", aws_secret_access_key="local")


def test_forged_messages_are_refused_and_change_nothing(system, tmp_path):
    canary = f"/tmp/dhx-canary-{uuid.uuid4().hex[:8]}"
    os.makedirs(canary)
    try:
        system.cp.create_pool("other")
        pool = system.cp.cp.pools.get("remote")
        executor = system.start_executor(DATAHUB_GMS_TOKEN=system.cp.create_executor_token(None))
        real = system.cp.run_source(system.cp.create_source("real", mock_recipe(tmp_path / "r.json"))["id"])
        system.cp.wait_for_status(real["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)
        theirs = system.cp.run_source(system.cp.create_source("theirs", mock_recipe(tmp_path / "t.json"),
                                                              pool_id="other")["id"])
        client = sqs(system)
        walk_out = f"{real['id']}/claim?/../../../../..{canary}"
        for body in ({"v": 1, "execution_id": walk_out, "task": "RUN_INGEST", "pool_id": "remote"},
                     {"v": 1, "execution_id": theirs["id"], "task": "RUN_INGEST", "pool_id": "other", "weight": 0.0001},
                     {"v": 1, "execution_id": theirs["id"], "task": "RUN_INGEST", "pool_id": "remote", "weight": 0.0001},
                     {"v": 1, "execution_id": "x\n2026-01-01 00:00:00.000 | INFO | - | finished: SUCCESS",
                      "task": "RUN_INGEST", "pool_id": "remote"}):
            client.send_message(QueueUrl=pool["queue_url"], MessageBody=json.dumps(body))
        executor.wait_for_line("is malformed", timeout_s=60)
        executor.wait_for_line("names pool other, not this executor's pool remote", timeout_s=60)
        executor.wait_for_line("claim refused", timeout_s=60)
        time.sleep(2)
        assert os.path.isdir(canary), "a forged id never names a path"
        assert system.cp.execution(real["id"])["status"] == "SUCCESS" and system.cp.execution(real["id"])["lease_epoch"] == 1
        shown = system.cp.execution(theirs["id"])
        assert shown["status"] == "PENDING" and shown["executor_id"] is None, "another pool's execution is not ours to run"
        forged_lines = [line for line in executor.lines if line.startswith("2026-01-01")]
        assert forged_lines == [], "a control character in a message never starts a log line of its own"
        assert any("\\n2026-01-01" in line for line in executor.lines), "it is shown escaped"
    finally:
        os.rmdir(canary) if os.path.isdir(canary) else None
