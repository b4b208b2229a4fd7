"""Fault suite 4: many executions queued at once with 4 workers. All complete, each ran exactly
once, and the weight ledger never exceeded 1.0: sampled from the executor's own /metrics and,
independently, from the kernel (task cgroups alive at once never above 4).

Each task is a real `datahub ingest` of acryl-datahub 1.7.0.17 (about 3 s of CPU on this
machine for the CLI alone: 120 of them took 237 s on 2 cores). The suite runs DHX_FAULTS_BULK
executions, 32 by default (8 rounds of 4) to keep CI well under its budget; `DHX_FAULTS_BULK=1000`
runs the full scenario."""
from __future__ import annotations

import os
import re
import time

import requests

from tests.e2e.conftest import free_port, mock_recipe

from .conftest import Sampler, task_pids_current

EXECUTIONS = int(os.environ.get("DHX_FAULTS_BULK", "32"))
WORKERS = 4
LEDGER = re.compile(r'^datahub_executor_ledger_used_weight\{task_class="ingestion"\} (\S+)$', re.M)


def test_many_executions_queued_at_once_all_run_once_within_the_ledger(system, tmp_path):
    port = free_port()
    root = "test-faults-bulk"
    executor = system.start_executor(DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS=str(WORKERS),
                                     DATAHUB_EXECUTOR_HEALTH_ADDRESS=f"127.0.0.1:{port}",
                                     DATAHUB_EXECUTOR_CGROUP_ROOT=root, DATAHUB_EXECUTOR_PROGRESS_INTERVAL="3")
    cp = system.cp
    metrics = requests.Session()

    def ledger_used() -> float:
        return float(LEDGER.search(metrics.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text).group(1))

    sources = [cp.create_source(f"bulk-{i}", mock_recipe(tmp_path / "out" / f"{i}.json"))["id"]
               for i in range(EXECUTIONS)]
    started = time.monotonic()
    with Sampler(ledger_used, interval_s=0.1) as ledger, \
            Sampler(lambda: len(task_pids_current(root)), interval_s=0.1) as alive:
        runs = [cp.run_source(source)["id"] for source in sources]
        done = [cp.wait_for_status(run, {"SUCCESS", "FAILURE", "ABORTED", "CANCELLED", "TIMEOUT"},
                                   timeout_s=60 + 8 * EXECUTIONS) for run in runs]
    elapsed = time.monotonic() - started

    assert [d["status"] for d in done] == ["SUCCESS"] * EXECUTIONS, {d["status"] for d in done}
    assert len(ledger.values) > 100 and max(ledger.values) <= 1.0, max(ledger.values)
    assert max(ledger.values) == 1.0, "the ledger was full at times: four ran together"
    assert max(alive.values) <= WORKERS, "never more task cgroups alive than the ledger admits"
    starts = {}
    for line in executor.lines:
        match = re.search(r"\| ([\w-]+) +\| task process \d+ started: RUN_INGEST", line)
        if match:
            starts[match.group(1)] = starts.get(match.group(1), 0) + 1
    assert set(starts) == set(runs) and set(starts.values()) == {1}, "each execution started exactly once"
    assert executor.process.poll() is None
    print(f"\n{EXECUTIONS} executions with {WORKERS} workers in {elapsed:.0f} s "
          f"({EXECUTIONS / elapsed:.2f}/s); ledger max {max(ledger.values)}, task cgroups max {max(alive.values)}")
