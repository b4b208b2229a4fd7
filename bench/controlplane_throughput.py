"""Control-plane throughput: executions created and enqueued per second, heartbeats absorbed per
second, with latency percentiles, each against a baseline measured in the same run on the same
servers (a bare SQS send to the same embedded server; a bare SQLite insert+commit).

    .venv/bin/python bench/controlplane_throughput.py [--n 300]

One client thread, sequential requests over keep-alive HTTP: this is the latency-bound rate a
single caller sees, not the server's saturation point.
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import boto3
import requests

from controlplane.testing import running_controlplane

RECIPE = "source:\n  type: datahub-mock-data\n  config: {}\nsink:\n  type: file\n  config: {filename: /tmp/x.json}\n"


def timed(n: int, call) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return samples


def summary(name: str, samples: list[float]) -> dict:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000  # noqa: E731
    return {"name": name, "per_s": len(samples) / sum(samples), "p50_ms": statistics.median(ordered) * 1000,
            "p90_ms": pick(0.9), "p99_ms": pick(0.99)}


def measure(n: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp, running_controlplane(Path(tmp) / "cp") as cp:
        pool = cp.create_pool("bench", default=True)
        source = cp.create_source("bench", RECIPE)
        token = cp.create_executor_token(["bench"])
        sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                           aws_access_key_id="local", aws_secret_access_key="local")
        db = sqlite3.connect(str(Path(tmp) / "baseline.sqlite3"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        executor = requests.Session()
        executor.headers["Authorization"] = f"Bearer {token}"
        beat = {"hostname": "h", "version": "0", "state": "ACTIVE", "heartbeat_interval_s": 15,
                "capacity": {"ingestion": {"max_workers": 4, "used_weight": 0.5, "running": 2}}}
        results = [
            summary("baseline: SQS send (same server)", timed(n, lambda i: sqs.send_message(QueueUrl=pool["queue_url"], MessageBody="{}"))),
            summary("create + enqueue execution", timed(n, lambda i: cp.run_source(source["id"]))),
            summary("baseline: SQLite insert+commit", timed(n, lambda i: db.execute("INSERT INTO t (body) VALUES (?)", ("x" * 200,)))),
            summary("heartbeat (50 executors)", timed(n, lambda i: executor.put(
                f"{cp.gms_url}/executor/v1/pools/bench/executors/e{i % 50}", json=beat, timeout=10).raise_for_status())),
        ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    results = measure(parser.parse_args().n)
    print(f"{'':36} {'per s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(f"{r['name']:36} {r['per_s']:8.0f} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f}")
    print(f"create+enqueue costs {results[1]['p50_ms'] / results[0]['p50_ms']:.1f}x a bare SQS send (p50); "
          f"a heartbeat {results[3]['p50_ms'] / results[2]['p50_ms']:.1f}x a bare SQLite commit")


if __name__ == "__main__":
    main()
