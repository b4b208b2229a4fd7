"""The sandbox's own overhead: `/bin/true` started confined against a plain subprocess.run,
measured side by side (interleaved, so machine noise hits both alike) in one run.

    .venv/bin/python bench/sandbox_overhead.py [--runs 200]

Prints the median and p90 of each, the median added milliseconds, and the ratio. Target:
under 10 ms added (median). Not a test: the machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
import uuid

from sandbox import Limits, Sandbox


def measure(runs: int) -> dict:
    sandbox = Sandbox.open(f"bench-{uuid.uuid4().hex[:8]}")
    limits = Limits(memory_max_bytes=256 << 20, pids_max=64)
    plain: list[float] = []
    confined: list[float] = []
    try:
        for _ in range(10):  # warm caches on both paths
            subprocess.run(["/bin/true"], check=True)
            sandbox.start(["/bin/true"], limits).wait()
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(["/bin/true"], check=True)
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            outcome = sandbox.start(["/bin/true"], limits).wait()
            confined.append(time.perf_counter() - started)
            assert outcome.status.value == "SUCCEEDED"
    finally:
        sandbox.sweep()
        sandbox.close()

    def summary(samples: list[float]) -> dict:
        ordered = sorted(samples)
        return {"median_ms": statistics.median(ordered) * 1000, "p90_ms": ordered[int(len(ordered) * 0.9)] * 1000}

    base, ours = summary(plain), summary(confined)
    return {
        "mode": sandbox.mode,
        "runs": runs,
        "subprocess_run": base,
        "sandbox": ours,
        "added_median_ms": ours["median_ms"] - base["median_ms"],
        "ratio_median": ours["median_ms"] / base["median_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.runs)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"mode {result['mode']}, {result['runs']} runs of /bin/true, interleaved")
    print(f"{'':16} {'median ms':>10} {'p90 ms':>10}")
    for label, key in (("subprocess.run", "subprocess_run"), ("sandbox", "sandbox")):
        print(f"{label:16} {result[key]['median_ms']:10.2f} {result[key]['p90_ms']:10.2f}")
    print(f"added (median): {result['added_median_ms']:.2f} ms; ratio {result['ratio_median']:.2f}x (target: < 10 ms added)")


if __name__ == "__main__":
    main()
