"""Memory limits, cancellation, timeouts and concurrency, end to end."""
from __future__ import annotations

import time

from .conftest import custom_env, custom_recipe, live_tasks, wait_for_tick


def test_a_leaking_task_fails_with_memory_limit_exceeded_and_the_rest_carries_on(system, tmp_path):
    executor = system.start_executor()
    leaky = system.cp.create_source("leaky", custom_recipe("LeakySource", tmp_path / "l.json"),
                                    extra_env=custom_env(EXECUTOR_TASK_MEMORY_LIMIT="300000"))  # KB
    sleepy = system.cp.create_source("sleepy", custom_recipe("SleepySource", tmp_path / "s.json", seconds=3),
                                     extra_env=custom_env())
    leak_run = system.cp.run_source(leaky["id"])
    calm_run = system.cp.run_source(sleepy["id"])
    leaked = system.cp.wait_for_status(leak_run["id"], {"FAILURE", "SUCCESS"}, timeout_s=300)
    assert leaked["status"] == "FAILURE"
    assert leaked["reason"] == "MEMORY_LIMIT_EXCEEDED"
    assert 250_000 * 1024 <= leaked["peak_memory_bytes"] <= 300_000 * 1024 * 1.05
    assert system.cp.wait_for_status(calm_run["id"], {"FAILURE", "SUCCESS"}, timeout_s=120)["status"] == "SUCCESS"
    assert executor.process.poll() is None, "the master survives"
    assert f"memory limit: {300_000 * 1024} bytes" in system.cp.logs(leak_run["id"])["log"]


def test_cancel_reaches_the_task_within_a_progress_interval(system, tmp_path):
    system.start_executor()
    source = system.cp.create_source("long", custom_recipe("SleepySource", tmp_path / "s.json", seconds=120),
                                     extra_env=custom_env())
    execution = system.cp.run_source(source["id"])
    wait_for_tick(system, execution["id"])  # the masked tail arrives while the task runs
    asked = time.monotonic()
    system.cp.cancel(execution["id"])
    done = system.cp.wait_for_status(execution["id"], {"CANCELLED", "SUCCESS", "FAILURE"}, timeout_s=30)
    assert done["status"] == "CANCELLED"
    assert time.monotonic() - asked < 10
    assert system.cp.cancel(execution["id"])["status"] == "CANCELLED", "a late cancel changes nothing"


def test_a_task_that_ignores_sigterm_is_killed_after_the_grace_period(system, tmp_path):
    system.start_executor(DATAHUB_EXECUTOR_CANCEL_GRACE="2")
    source = system.cp.create_source("stubborn", custom_recipe("SleepySource", tmp_path / "s.json", seconds=120,
                                                               ignore_sigterm=True), extra_env=custom_env())
    execution = system.cp.run_source(source["id"])
    wait_for_tick(system, execution["id"])
    system.cp.cancel(execution["id"])
    done = system.cp.wait_for_status(execution["id"], {"CANCELLED", "SUCCESS", "FAILURE"}, timeout_s=30)
    assert done["status"] == "CANCELLED"
    assert done["signal"] == 9


def test_a_task_over_its_timeout_ends_in_timeout(system, tmp_path):
    system.start_executor(DATAHUB_EXECUTOR_TASK_TIMEOUT="8")
    source = system.cp.create_source("slow", custom_recipe("SleepySource", tmp_path / "s.json", seconds=120),
                                     extra_env=custom_env())
    done = system.cp.wait_for_status(system.cp.run_source(source["id"])["id"], {"TIMEOUT", "SUCCESS", "FAILURE"},
                                     timeout_s=120)
    assert done["status"] == "TIMEOUT"


def test_weights_two_halves_run_together_and_a_third_waits(system, tmp_path):
    executor = system.start_executor()
    runs = []
    for i in range(3):
        source = system.cp.create_source(f"half{i}", custom_recipe("SleepySource", tmp_path / f"h{i}.json", seconds=6),
                                         extra_env=custom_env(EXECUTOR_TASK_WEIGHT="0.5"))
        runs.append(system.cp.run_source(source["id"])["id"])
    most_running = 0
    waiting_said = False
    root = executor.env["DATAHUB_EXECUTOR_CGROUP_ROOT"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = [system.cp.execution(r)["status"] for r in runs]
        most_running = max(most_running, live_tasks(root))
        waiting_said |= any("waiting for capacity" in (system.cp.execution(r)["log_tail"] or "") for r in runs)
        if all(s in ("SUCCESS", "FAILURE") for s in states):
            break
        time.sleep(0.2)
    assert states == ["SUCCESS"] * 3
    assert most_running == 2, "two halves run together, the third waits"
    assert waiting_said, "the waiting one says why in its report"
    assert executor.process.poll() is None
