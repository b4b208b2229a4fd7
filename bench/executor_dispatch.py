"""Executor dispatch and footprint, against a bare baseline measured in the same run.

    .venv/bin/python bench/executor_dispatch.py [--runs 20]

- dispatch: enqueue (execution created) -> claimed by the executor (received, admitted, claimed,
  about to prepare and start), median and p99, on the embedded SQS server; baseline: a bare loop that
  long-polls the same kind of queue and starts /bin/true per message (enqueue -> spawn);
- master footprint: RSS and CPU of `datahub-executor run` idle for 20 s and while running 4 tasks.
Uses the shared venv cache (.cache/venvs) like the end-to-end tests.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from controlplane.testing import running_controlplane  # noqa: E402
from tests.e2e.conftest import System, custom_env, custom_recipe, mock_recipe, remove_cgroup_roots  # noqa: E402


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def bare_loop_baseline(cp, runs: int) -> list[float]:
    pool = cp.create_pool("baseline")
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                       aws_access_key_id="local", aws_secret_access_key="local")
    latencies = []
    for _ in range(runs):
        sent = time.time()
        sqs.send_message(QueueUrl=pool["queue_url"], MessageBody=json.dumps({"t": sent}))
        message = sqs.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=20)["Messages"][0]
        subprocess.Popen(["/bin/true"]).wait()
        latencies.append(time.time() - sent)
        sqs.delete_message(QueueUrl=pool["queue_url"], ReceiptHandle=message["ReceiptHandle"])
    return latencies


def footprint(pid: int, seconds: float) -> tuple[float, float]:
    proc = psutil.Process(pid)
    cpu_before = proc.cpu_times()
    peak = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.2)
    cpu_after = proc.cpu_times()
    used = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return peak / (1 << 20), 100 * used / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp, running_controlplane(Path(tmp) / "cp") as cp:
        tmp_path = Path(tmp)
        (tmp_path / "secrets").mkdir()
        cp.create_pool("remote", default=True, visibility_timeout_s=60)
        system = System(cp, tmp_path)
        executor = system.start_executor()
        try:
            idle_rss, idle_cpu = footprint(executor.process.pid, 20)
            source = cp.create_source("dispatch", mock_recipe(tmp_path / "out.json"))
            dispatch = []
            for _ in range(runs):
                execution = cp.run_source(source["id"])
                done = cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)
                dispatch.append(done["started_at"] - done["created_at"])
            for i in range(4):
                sleepy = cp.create_source(f"busy{i}", custom_recipe("SleepySource", tmp_path / f"b{i}.json", seconds=25),
                                          extra_env=custom_env())
                cp.run_source(sleepy["id"])
            time.sleep(8)  # let all four start
            busy_rss, busy_cpu = footprint(executor.process.pid, 10)
        finally:
            executor.stop()
            remove_cgroup_roots(system.cgroup_roots)
        baseline = bare_loop_baseline(cp, runs)
    ours_p50, base_p50 = statistics.median(dispatch) * 1000, statistics.median(baseline) * 1000
    print(f"dispatch (enqueue -> claimed), {runs} runs: p50 {ours_p50:.1f} ms, p99 {percentile(dispatch, .99) * 1000:.1f} ms")
    print(f"baseline (enqueue -> /bin/true spawned by a bare receive loop): p50 {base_p50:.1f} ms, "
          f"p99 {percentile(baseline, .99) * 1000:.1f} ms; ratio p50 {ours_p50 / base_p50:.1f}x")
    print(f"master idle 20 s: peak RSS {idle_rss:.0f} MiB, CPU {idle_cpu:.2f}%")
    print(f"master with 4 tasks running, 10 s: peak RSS {busy_rss:.0f} MiB, CPU {busy_cpu:.2f}%")


if __name__ == "__main__":
    main()
