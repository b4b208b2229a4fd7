"""The embedded SQS server's CPU per task as its queue fills: one task's calls (send, receive,
visibility change, delete, as the control plane and an executor make them) with DEPTH messages in
flight in the same queue, against the same calls with none, on the same server in the same run.
moto as shipped, without controlplane/embedded_sqs.correct(), is measured beside it: its cost
grows with the queue (each receive counted the whole queue several times).

    .venv/bin/python bench/embedded_sqs_depth.py [--depth 300] [--n 200] [--rounds 3]

Each server runs in a process of its own, whose CPU time (user + kernel) is the figure;
the client is boto3, as the executor's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.peers import cpu_seconds  # noqa: E402

BODY = json.dumps({"pad": "x" * 1500})  # about an execution's message
SERVER = """
import sys
if sys.argv[1] == "corrected":
    from controlplane.queues import EmbeddedSqs
    server = EmbeddedSqs(0)
    print(server.start(), flush=True)
else:
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # as EmbeddedSqs does: a line per request otherwise
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(f"http://127.0.0.1:{server._server.server_port}", flush=True)
sys.stdin.read()  # until the benchmark closes it
"""


def _server_cpu_ms_per_task(kind: str, depth: int, n: int) -> float:
    server = subprocess.Popen([sys.executable, "-c", SERVER, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=server.stdout.readline().strip(),
                           aws_access_key_id="local", aws_secret_access_key="local")
        queue = sqs.create_queue(QueueName="bench", Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
        for _ in range(depth):  # held by other executors: received, not deleted
            sqs.send_message(QueueUrl=queue, MessageBody=BODY)
            sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1)
        process = psutil.Process(server.pid)
        before = cpu_seconds(process)
        for _ in range(n):
            sqs.send_message(QueueUrl=queue, MessageBody=BODY)
            handle = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                         AttributeNames=["All"])["Messages"][0]["ReceiptHandle"]
            sqs.change_message_visibility_batch(QueueUrl=queue, Entries=[
                {"Id": "0", "ReceiptHandle": handle, "VisibilityTimeout": 600}])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=handle)
        return (cpu_seconds(process) - before) / n * 1000
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def measure(depth: int = 300, n: int = 200, rounds: int = 3) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"empty": [], "deep": [], "moto_empty": [], "moto_deep": []}
    for _ in range(rounds):  # interleaved, so a noisy moment spreads over all four
        runs["empty"].append(_server_cpu_ms_per_task("corrected", 0, n))
        runs["deep"].append(_server_cpu_ms_per_task("corrected", depth, n))
        runs["moto_empty"].append(_server_cpu_ms_per_task("moto", 0, n))
        runs["moto_deep"].append(_server_cpu_ms_per_task("moto", depth, n))
    result: dict[str, Any] = {name: statistics.median(values) for name, values in runs.items()}
    result.update(depth=depth, n=n, rounds=rounds, ratio=result["deep"] / result["empty"],
                  moto_ratio=result["moto_deep"] / result["moto_empty"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=300)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    r = measure(args.depth, args.n, args.rounds)
    print(f"server CPU per task: {r['deep']:.2f} ms with {r['depth']} in flight, {r['empty']:.2f} ms with none "
          f"({r['ratio']:.2f}x); moto as shipped {r['moto_deep']:.2f} against {r['moto_empty']:.2f} ms "
          f"({r['moto_ratio']:.2f}x)")


if __name__ == "__main__":
    main()
