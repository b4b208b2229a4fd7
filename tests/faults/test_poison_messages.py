"""Fault suite 5: poison messages. Not JSON, an unknown protocol version, an execution the
control plane never created: each reaches the pool's dead-letter queue after exactly the redrive
count of receives, while the consumer goes on running real work beside them."""
from __future__ import annotations

import json
import time

import boto3

from tests.e2e.conftest import mock_recipe

MAX_RECEIVES = 2


def test_poison_messages_reach_the_dlq_after_the_redrive_count_while_work_goes_on(system, tmp_path):
    system.cp.create_pool("poison", visibility_timeout_s=1, max_receive_count=MAX_RECEIVES)
    system.pool_id = "poison"
    executor = system.start_executor("executor-poison")
    pool = system.cp.cp.pools.get("poison")
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=system.cp.sqs_endpoint_url,
                       aws_access_key_id="local", aws_secret_access_key="local")
    poison = {
        "not json": "{not json",
        "unknown version": json.dumps({"v": 99, "execution_id": "x", "task": "RUN_INGEST"}),
        "unknown execution": json.dumps({"v": 1, "execution_id": "no-such-execution", "task": "RUN_INGEST",
                                         "pool_id": "poison", "requested_at": int(time.time() * 1000)}),
    }
    for body in poison.values():
        sqs.send_message(QueueUrl=pool["queue_url"], MessageBody=body)
    good = [system.cp.run_source(system.cp.create_source(f"good-{i}", mock_recipe(tmp_path / f"g{i}.json"),
                                                         pool_id="poison")["id"])["id"] for i in range(2)]
    for execution_id in good:
        assert system.cp.wait_for_status(execution_id, {"SUCCESS", "FAILURE"}, timeout_s=300)["status"] == "SUCCESS"

    dead: dict[str, int] = {}
    deadline = time.monotonic() + 90
    while len(dead) < len(poison) and time.monotonic() < deadline:
        answer = sqs.receive_message(QueueUrl=pool["dlq_url"], MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     AttributeNames=["ApproximateReceiveCount"], VisibilityTimeout=300)
        for message in answer.get("Messages", []):
            # moto counts our receive from the DLQ too: the main queue's count is one less.
            dead[message["Body"]] = int(message["Attributes"]["ApproximateReceiveCount"]) - 1
    assert set(dead) == set(poison.values()), f"missing from the DLQ: {set(poison.values()) - set(dead)}"
    assert all(count == MAX_RECEIVES for count in dead.values()), dead
    executor.wait_for_line("is malformed", timeout_s=5)
    executor.wait_for_line("claim refused", timeout_s=5)
    assert not any("Traceback" in line for line in executor.lines), "poison is refused, not crashed on"
    assert executor.process.poll() is None
