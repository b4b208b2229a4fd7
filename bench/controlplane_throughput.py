"""Control-plane throughput, each figure against a baseline measured in the same run on the
same servers (docs/protocol.md names the calls):

- create + enqueue: DataHub's GraphQL `createIngestionExecutionRequest` (through
  ControlPlaneHandle.run_source), which writes the execution request, until its message is in
  the pool's queue (sent by the control plane's outbox thread after the answer; the execution's
  `enqueued_at` says when), against a bare SQS send to the same embedded queue server;
- heartbeat: an ingested `dataHubRemoteExecutorStatus`, sent by the executor's own client
  (executor/controlplane_client.py ControlPlaneClient.heartbeat) for 50 executors in turn, against
  a bare SQLite insert+commit (WAL, the control plane's own settings);
- ingest: 1,000 MCPs (status, subTypes and datasetProperties of a few hundred datasets) sent with
  DataHub's own DatahubRestEmitter.emit_mcps, which posts them to
  `/gms/aspects?action=ingestProposalBatch` in chunks of 200, against a bare SQLite insert of the
  same 1,000 rows (urn, aspect, JSON) in one transaction. Every round writes new datasets, so
  every MCP is a first write. The time is split into DataHub's client (serializing the MCPs,
  measured alone), the control plane's ingest (parse, validate, authorize, write: timed inside
  the server), and HTTP (the rest).

    .venv/bin/python bench/controlplane_throughput.py [--n 300] [--rounds 5]

One client thread, sequential requests over keep-alive HTTP: the latency-bound rate a single
caller sees, not the server's saturation point. The control plane runs in this process (its
HTTP server and the embedded SQS server on threads), as in the tests.
"""
from __future__ import annotations

import argparse
import json
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from controlplane.testing import ControlPlaneHandle, running_controlplane  # noqa: E402
from executor import datahub_aspects  # noqa: E402
from executor.controlplane_client import ControlPlaneClient  # noqa: E402

RECIPE = "source:\n  type: datahub-mock-data\n  config: {}\n"
EXECUTORS = 50
MCPS = 1000
DATASETS = 334  # three aspects each: 1,000 MCPs over 334 datasets


def timed(n: int, call) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000  # noqa: E731
    return {"per_s": len(samples) / sum(samples), "p50_ms": statistics.median(ordered) * 1000,
            "p90_ms": pick(0.9), "p99_ms": pick(0.99)}


def baseline_db(path: Path) -> sqlite3.Connection:
    """SQLite as the control plane's store opens it (controlplane/store.py): WAL, autocommit."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return db


# --- create + enqueue, heartbeat -----------------------------------------------------------------
def create_and_enqueue(cp: ControlPlaneHandle, n: int) -> tuple[dict, dict]:
    pool = cp.cp.pools.get("bench")
    source = cp.create_source("bench", RECIPE, pool_id="bench")
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                       aws_access_key_id="local", aws_secret_access_key="local")
    body = json.dumps({"v": 1, "execution_id": "00000000-0000-0000-0000-000000000000", "task": "RUN_INGEST",
                       "pool_id": "bench", "requested_at": 0})
    sqs.send_message(QueueUrl=pool["queue_url"], MessageBody=body)  # the client's first call builds its connection
    cp.run_source(source["id"])
    send = summary(timed(n, lambda i: sqs.send_message(QueueUrl=pool["queue_url"], MessageBody=body)))

    def create_until_sent(_: int) -> None:
        execution = cp.run_source(source["id"])["id"]
        while cp.cp.store.one("SELECT enqueued_at FROM executions WHERE id=?", (execution,))["enqueued_at"] is None:
            time.sleep(0.0002)

    create = summary(timed(n, create_until_sent))
    return create, send


def heartbeat(cp: ControlPlaneHandle, tmp: Path, n: int) -> tuple[dict, dict]:
    client = ControlPlaneClient(cp.gms_url, cp.create_executor_token(["bench"]))
    address = socket.gethostbyname("localhost")
    capacity = json.dumps({"ingestion": {"max_workers": 4, "used_weight": 0.5, "running": 2, "waiting": 0},
                           "monitors": {"max_workers": 1, "used_weight": 0.0, "running": 0, "waiting": 0}})

    def beat(i: int) -> None:
        executor = f"bench-{i % EXECUTORS}"
        status = datahub_aspects.executor_status(pool_id="bench", version="bench", address=address, hostname="bench",
                                                 uptime_s=i, stopped=False, log_delivery=False)
        client.heartbeat(executor, status, {
            "instanceId": f"instance-{i % EXECUTORS}", "heartbeatIntervalSeconds": "30", "state": "ACTIVE",
            "startedAt": "2025-01-01T00:00:00+00:00", "runningExecutions": "[]", "capacity": capacity,
            "sandbox": json.dumps({"mode": "v2", "master_oom_protected": True}),
            "health": json.dumps({"control_plane": "ok", "sqs": "ok", "threads": "ok"})})

    for i in range(EXECUTORS):  # each executor's first heartbeat registers it; the measured ones update
        beat(i)
    db = baseline_db(tmp / "baseline-commit.sqlite3")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    commit = summary(timed(n, lambda i: db.execute("INSERT INTO t (body) VALUES (?)", ("x" * 200,))))
    beats = summary(timed(n, beat))
    db.close()
    return beats, commit


# --- ingest --------------------------------------------------------------------------------------
def proposals(round_no: int) -> list:
    """1,000 MCPs of new datasets: status, subTypes and datasetProperties, in that order."""
    from datahub.emitter.mcp import MetadataChangeProposalWrapper
    from datahub.metadata.schema_classes import DatasetPropertiesClass, StatusClass, SubTypesClass

    mcps = []
    for i in range(MCPS):
        table, kind = i % DATASETS, i // DATASETS
        urn = f"urn:li:dataset:(urn:li:dataPlatform:hive,bench{round_no}.table_{table},PROD)"
        aspect = (StatusClass(removed=False) if kind == 0 else SubTypesClass(typeNames=["Table"]) if kind == 1 else
                  DatasetPropertiesClass(name=f"table_{table}", description=f"bench table {table} of round {round_no}",
                                         customProperties={"owner": "bench", "round": str(round_no)}))
        mcps.append(MetadataChangeProposalWrapper(entityUrn=urn, aspect=aspect))
    return mcps


def ingest(cp: ControlPlaneHandle, tmp: Path, rounds: int) -> dict[str, Any]:
    from datahub.emitter.rest_emitter import DatahubRestEmitter
    from datahub.emitter.serialization_helper import pre_json_transform

    emitter = DatahubRestEmitter(cp.gms_url, token=cp.admin_token)
    emitter.test_connection()
    server_s = [0.0]
    real_ingest = cp.cp.ingest.ingest

    def timed_ingest(*args, **kwargs):  # the route looks the method up per request, so this times it
        started = time.perf_counter()
        try:
            return real_ingest(*args, **kwargs)
        finally:
            server_s[0] += time.perf_counter() - started

    cp.cp.ingest.ingest = timed_ingest
    ours, server, client, bare = [], [], [], []
    try:
        for round_no in range(rounds + 1):  # round 0 warms both paths and is not counted
            mcps = proposals(round_no)
            server_s[0] = 0.0
            started = time.perf_counter()
            emitter.emit_mcps(mcps)
            elapsed = time.perf_counter() - started
            started = time.perf_counter()
            objects = [pre_json_transform(m.to_obj()) for m in mcps]
            [json.dumps(o) for o in objects]  # as emit_mcps does: each MCP for its size, then each chunk
            json.dumps({"proposals": objects})
            serialize_s = time.perf_counter() - started
            rows = [(o["entityUrn"], o["aspectName"], o["aspect"]["value"]) for o in objects]
            db = baseline_db(tmp / f"baseline-ingest-{round_no}.sqlite3")
            db.execute("CREATE TABLE aspects (urn TEXT NOT NULL, aspect TEXT NOT NULL, metadata TEXT NOT NULL, "
                       "PRIMARY KEY (urn, aspect)) WITHOUT ROWID")
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO aspects VALUES (?,?,?)", rows)
            db.execute("COMMIT")
            bare_s = time.perf_counter() - started
            db.close()
            if round_no:
                ours.append(elapsed)
                server.append(server_s[0])
                client.append(serialize_s)
                bare.append(bare_s)
    finally:
        del cp.cp.ingest.ingest  # the class's method again
    stored = cp.cp.store.one("SELECT COUNT(*) AS n FROM aspects WHERE urn LIKE 'urn:li:dataset:%' AND version=0")["n"]
    assert stored == (rounds + 1) * MCPS, f"{stored} dataset aspects stored, expected {(rounds + 1) * MCPS}"
    median = statistics.median
    return {"mcps": MCPS, "rounds": rounds, "per_s": MCPS / median(ours), "ms": median(ours) * 1000,
            "server_ms": median(server) * 1000, "client_ms": median(client) * 1000,
            "bare_per_s": MCPS / median(bare), "bare_ms": median(bare) * 1000}


def measure(n: int, rounds: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name, running_controlplane(Path(tmp_name) / "cp") as cp:
        tmp = Path(tmp_name)
        cp.create_pool("bench", default=True)
        create, send = create_and_enqueue(cp, n)
        beats, commit = heartbeat(cp, tmp, n)
        ingested = ingest(cp, tmp, rounds)
    return {"n": n, "create": create, "send": send, "heartbeat": beats, "commit": commit, "ingest": ingested}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="sequential calls per latency figure")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 1,000 MCPs")
    args = parser.parse_args()
    r = measure(args.n, args.rounds)
    print(f"{'':44} {'per s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for label, key in (("baseline: bare SQS send", "send"), ("create + enqueue (GraphQL)", "create"),
                       ("baseline: bare SQLite insert+commit", "commit"), (f"heartbeat ({EXECUTORS} executors)", "heartbeat")):
        s = r[key]
        print(f"{label:44} {s['per_s']:8.0f} {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} {s['p99_ms']:8.2f}")
    i = r["ingest"]
    print(f"create+enqueue costs {r['create']['p50_ms'] / r['send']['p50_ms']:.1f}x a bare SQS send (p50); "
          f"a heartbeat {r['heartbeat']['p50_ms'] / r['commit']['p50_ms']:.1f}x a bare SQLite commit")
    print(f"ingest: {i['per_s']:.0f} MCPs/s ({i['ms']:.0f} ms per {i['mcps']}: DataHub's client {i['client_ms']:.0f} ms, "
          f"control plane ingest {i['server_ms']:.0f} ms, HTTP the rest); bare SQLite {i['bare_per_s']:.0f} rows/s "
          f"({i['bare_ms']:.1f} ms); ratio {i['per_s'] / i['bare_per_s']:.4f}x (median of {i['rounds']} rounds)")


if __name__ == "__main__":
    main()
