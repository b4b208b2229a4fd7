"""Every benchmark in one run, written as one Markdown table to bench/results/benchmarks.md.

    .venv/bin/python bench/run_all.py [--quick]

Each row is measured side by side with its baseline or peer in this same run, on this machine,
and reported as a time or rate and as a ratio. --quick shrinks every count for a smoke run.
Not part of the test suite: the machines are shared and noisy, figures are for comparison.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import (  # noqa: E402
    controlplane_throughput,
    embedded_sqs_depth,
    peers,
    sample_run,
    sandbox_overhead,
    upstream_latency,
)
from bench.peers import Row  # noqa: E402


def sandbox_rows(runs: int) -> list[Row]:
    r = sandbox_overhead.measure(runs)
    return [Row("sandbox: start /bin/true confined and wait", f"{r['sandbox']['median_ms']:.2f} ms",
                f"subprocess.run {r['subprocess_run']['median_ms']:.2f} ms", f"{r['ratio_median']:.2f}x",
                f"+{r['added_median_ms']:.2f} ms added; mode {r['mode']}; {runs} interleaved runs")]


def controlplane_rows(n: int, rounds: int) -> list[Row]:
    r = controlplane_throughput.measure(n, rounds)
    create, send, beat, commit, ingest = r["create"], r["send"], r["heartbeat"], r["commit"], r["ingest"]
    return [
        Row("control plane: create + enqueue an execution (GraphQL createIngestionExecutionRequest)",
            f"p50 {create['p50_ms']:.1f} ms ({create['per_s']:.0f}/s)", f"bare SQS send p50 {send['p50_ms']:.1f} ms",
            f"{create['p50_ms'] / send['p50_ms']:.2f}x", f"{n} sequential; from the call to its message sent (by the "
            "outbox thread, after the answer), which includes one such send"),
        Row("control plane: heartbeat (an ingested dataHubRemoteExecutorStatus, the executor's client)",
            f"p50 {beat['p50_ms']:.2f} ms ({beat['per_s']:.0f}/s)", f"bare SQLite insert+commit p50 {commit['p50_ms']:.2f} ms",
            f"{beat['p50_ms'] / commit['p50_ms']:.2f}x", f"{n} sequential, 50 executors in turn"),
        Row(f"control plane: ingestProposalBatch, {ingest['mcps']:,} MCPs (DatahubRestEmitter.emit_mcps)",
            f"{ingest['per_s']:,.0f} MCPs/s ({ingest['ms']:.0f} ms)",
            f"bare SQLite insert of the same rows, one transaction: {ingest['bare_per_s']:,.0f} rows/s ({ingest['bare_ms']:.1f} ms)",
            f"{ingest['per_s'] / ingest['bare_per_s']:.4f}x ({ingest['ms'] / ingest['bare_ms']:.0f}x the time)",
            f"median of {ingest['rounds']} rounds of new datasets; of the {ingest['ms']:.0f} ms: DataHub's client "
            f"{ingest['client_ms']:.0f}, the control plane's ingest {ingest['server_ms']:.0f}, HTTP the rest"),
    ]


def queue_depth_rows(n: int, rounds: int) -> list[Row]:
    r = embedded_sqs_depth.measure(300, n, rounds)
    return [Row(f"embedded SQS: server CPU per task with {r['depth']} messages in flight",
                f"{r['deep']:.1f} ms", f"the same calls with none in flight {r['empty']:.1f} ms", f"{r['ratio']:.2f}x",
                f"send, receive, visibility change, delete; {n} tasks, median of {rounds} interleaved rounds; moto "
                f"as shipped: {r['moto_deep']:.1f} against {r['moto_empty']:.1f} ms ({r['moto_ratio']:.2f}x)")]


def sample_rows(runs: int) -> list[Row]:
    r = sample_run.measure(runs)
    return [Row("sample run end to end: createIngestionExecutionRequest -> SUCCESS (quickstart's recipe)",
                f"{r['ours_s']:.2f} s", f"the same `datahub ingest` by hand {r['baseline_s']:.2f} s", f"{r['ratio']:.2f}x",
                f"{r['added_s'] * 1000:+.0f} ms per run; median of {runs} alternating runs; datahub-mock-data into the "
                f"control plane through the datahub-rest sink ({r['entities']} entities, {r['aspects']} aspects)")]


def upstream_rows(runs: int) -> list[Row]:
    r = upstream_latency.measure(runs)
    b = r["baseline"]
    return [Row(f"upstream mode: createIngestionExecutionRequest in DataHub -> task process started, poll {k} s",
                f"p50 {u['p50_s'] * 1000:.0f} ms, p90 {u['p90_s'] * 1000:.0f} ms",
                f"same run started on our control plane: p50 {b['p50_s'] * 1000:.0f} ms, p90 {b['p90_s'] * 1000:.0f} ms",
                f"{u['ratio_p50']:.2f}x p50, {u['ratio_p90']:.2f}x p90",
                f"+{u['added_mean_s'] * 1000:.0f} ms mean, of which the discovery wait {u['discovery_mean_s'] * 1000:.0f} ms "
                f"(expected {u['expected_discovery_s'] * 1000:.0f}); {runs} interleaved runs each")
            for k, u in r["upstream"].items()]


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | ours | baseline / peer | ratio | notes |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.benchmark} | {r.ours} | {r.peer} | {r.ratio} | {r.note} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "benchmarks.md"))
    args = parser.parse_args()
    quick, out = args.quick, Path(args.out)
    started = time.monotonic()
    rows = (sandbox_rows(20 if quick else 200) + controlplane_rows(30 if quick else 300, 2 if quick else 5)
            + queue_depth_rows(30 if quick else 200, 1 if quick else 3)
            + sample_rows(2 if quick else 7) + upstream_rows(2 if quick else 10) + peers.run(quick=quick))
    header = (f"# Benchmarks ({time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, {os.cpu_count()} CPUs, "
              f"{'quick' if quick else 'full'} run, {time.monotonic() - started:.0f} s)\n\n"
              "Written by `bench/run_all.py`; how each is measured: the docstrings of bench/peers.py and the "
              "bench modules.\n\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + table(rows))
    print(header + table(rows))


if __name__ == "__main__":
    main()
