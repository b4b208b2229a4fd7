"""Fault suite 1: `kill -9` of the master while it runs 4 tasks. After a restart every task
reaches a final state exactly once in the control plane, and no task process or cgroup is left."""
from __future__ import annotations

import time

from tests.e2e.conftest import custom_env, custom_recipe, wait_for_tick

from .conftest import identities, still_running, task_pids_current, task_processes

EXECUTOR = "executor-crash"
ROOT = "test-faults-crash-root"


def test_kill_9_with_four_tasks_running_ends_each_exactly_once_and_leaves_nothing(system, tmp_path):
    first = system.start_executor(EXECUTOR, DATAHUB_EXECUTOR_CGROUP_ROOT=ROOT)
    cp = system.cp
    runs = []
    # 20 s: longer than the four starts take on a loaded 2-core machine (each CLI costs ~3 s of
    # CPU), so no task ends around the kill (its result recorded, its "finished:" line not). The
    # reruns after the restart end once they have started (RELEASE), not 20 s later.
    release = tmp_path / "release"
    for i in range(4):
        source = cp.create_source(f"crash-{i}", custom_recipe("SleepySource", tmp_path / f"{i}.json", seconds=20,
                                                              until_exists=str(release)),
                                  extra_env=custom_env())
        runs.append(cp.run_source(source["id"])["id"])
    for execution_id in runs:
        wait_for_tick(system, execution_id)
    assert len(task_pids_current(ROOT)) == 4, "four tasks in four cgroups"
    running = identities(task_processes(ROOT))
    assert len(running) >= 4

    first.kill9()
    second = system.start_executor(EXECUTOR, DATAHUB_EXECUTOR_CGROUP_ROOT=ROOT)
    assert any("task(s) left by a previous run" in line for line in second.lines)
    assert not still_running(running), "the crash's tasks died with it (parent-death signal) or by the sweep"
    release.touch()

    results = [cp.wait_for_status(execution_id, {"SUCCESS", "FAILURE", "ABORTED", "CANCELLED"}, timeout_s=240)
               for execution_id in runs]
    assert [r["status"] for r in results] == ["SUCCESS"] * 4, [(r["status"], r["reason"]) for r in results]
    for execution_id in runs:
        # The control plane records a result before its executor reads the answer and logs it.
        deadline = time.monotonic() + 20
        while not (finished := [line for ex in system.executors for line in ex.lines
                                if "finished:" in line and execution_id in line]):
            assert time.monotonic() < deadline, f"{execution_id}: no executor logged its end"
            time.sleep(0.05)
        assert len(finished) == 1, f"{execution_id} reported {len(finished)} final states"
    assert task_pids_current(ROOT) == {}, "no task cgroup left"
