"""Fault suite 2: tasks that misbehave on purpose, all at once, beside one that behaves.

A memory leak, a fork bomb, a task that ignores SIGTERM, one that closes its output and keeps
working, and one that writes 1 GiB of log: each must be contained and reported for what it is,
while the master and the well-behaved task are unharmed and nothing is left behind."""
from __future__ import annotations

import time

from tests.e2e.conftest import custom_env, custom_recipe, mock_recipe, wait_for_tick

from .conftest import (
    Sampler,
    identities,
    rss_mib,
    still_running,
    task_pids_current,
    task_processes,
    wait_for_log_tail,
)

PIDS_MAX = 64
FINAL = {"SUCCESS", "FAILURE", "CANCELLED", "TIMEOUT", "ABORTED"}


def test_hostile_tasks_are_each_contained_and_reported_and_the_rest_is_unharmed(system, tmp_path):
    cgroup_root = "test-faults-hostile"
    executor = system.start_executor(DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS="6", DATAHUB_EXECUTOR_CGROUP_ROOT=cgroup_root,
                                     DATAHUB_EXECUTOR_TASK_PIDS_MAX=str(PIDS_MAX), DATAHUB_EXECUTOR_CANCEL_GRACE="3")
    master = executor.process.pid
    cp = system.cp
    time.sleep(1)
    rss_before = rss_mib(master)
    done_file = tmp_path / "silent-finished"

    def source(name: str, kind: str, memory_kb: str | None = None, **config) -> str:
        env = custom_env(**({"EXECUTOR_TASK_MEMORY_LIMIT": memory_kb} if memory_kb else {}))
        return cp.create_source(name, custom_recipe(kind, tmp_path / f"{name}.json", **config), extra_env=env)["id"]

    sources = {
        "leak": source("leak", "LeakySource", memory_kb="300000"),
        "bomb": source("bomb", "ForkBombSource"),
        "stubborn": source("stubborn", "SleepySource", seconds=300, ignore_sigterm=True),
        "silent": source("silent", "SilentSource", seconds=8, done_file=str(done_file)),
        "flood": source("flood", "FloodSource", megabytes=1024),
        "calm": cp.create_source("calm", mock_recipe(tmp_path / "calm.json"))["id"],
    }
    with Sampler(lambda: rss_mib(master)) as master_rss, Sampler(lambda: task_pids_current(cgroup_root)) as task_pids, \
            Sampler(lambda: identities(task_processes(cgroup_root)), interval_s=1.0) as seen_processes:
        runs = {name: cp.run_source(source_id)["id"] for name, source_id in sources.items()}
        wait_for_log_tail(cp, runs["bomb"], "fork bomb armed")
        wait_for_tick(system, runs["stubborn"])
        time.sleep(5)  # the bomb presses against its limit meanwhile
        cp.cancel(runs["bomb"])
        cp.cancel(runs["stubborn"])
        results = {name: cp.wait_for_status(run, FINAL, timeout_s=300) for name, run in runs.items()}

    def log(name: str) -> str:
        return cp.logs(runs[name])["log"]

    assert (results["leak"]["status"], results["leak"]["reason"]) == ("FAILURE", "MEMORY_LIMIT_EXCEEDED")
    assert results["leak"]["peak_memory_bytes"] <= 300_000 * 1024 * 1.05

    assert results["bomb"]["status"] == "CANCELLED"
    assert "reached its process limit" in log("bomb") and f"at {PIDS_MAX} processes" in log("bomb")
    bomb_task = f"task-{runs['bomb']}"
    bomb_pids = [sample[bomb_task] for sample in task_pids.values if bomb_task in sample]
    assert bomb_pids and max(bomb_pids) <= PIDS_MAX, "the pids limit held"
    assert max(bomb_pids) >= PIDS_MAX // 2, "the bomb really pressed against it"

    assert (results["stubborn"]["status"], results["stubborn"]["signal"]) == ("CANCELLED", 9)

    assert results["silent"]["status"] == "SUCCESS", log("silent")[-2000:]
    assert done_file.read_text() == "finished", "end of output is not end of task: it ran to the end"
    assert results["silent"]["duration_ms"] >= 8000

    assert results["flood"]["status"] == "SUCCESS", results["flood"]["log_tail"]
    assert "flood done" in results["flood"]["log_tail"], "the tail keeps the end of a huge log"
    flood_log = log("flood")
    assert len(flood_log) < 16 << 20, "1 GiB of output is capped in what is stored and shipped"
    assert "flood xxx" in flood_log

    assert results["calm"]["status"] == "SUCCESS"

    assert executor.process.poll() is None, "the master survived all of it"
    assert max(master_rss.values) - rss_before < 64, (rss_before, max(master_rss.values))
    seen = set().union(*seen_processes.values)
    assert len(seen) > 6, "the sampler saw the tasks' processes"
    assert not still_running(seen), "no process of any task is left"
    assert task_pids_current(cgroup_root) == {}, "no task cgroup is left"
