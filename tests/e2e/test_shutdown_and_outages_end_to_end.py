"""Graceful shutdown with work in flight, and a control-plane outage mid-task."""
from __future__ import annotations

import time

from .conftest import custom_env, custom_recipe, wait_for_tick


def test_sigterm_kills_what_outlasts_the_drain_reports_aborted_and_returns_unstarted_work(system, tmp_path):
    executor = system.start_executor(DATAHUB_EXECUTOR_DRAIN_TIMEOUT="3")
    long = system.cp.create_source("long", custom_recipe("SleepySource", tmp_path / "l.json", seconds=300),
                                   extra_env=custom_env(EXECUTOR_TASK_WEIGHT="1.0"))
    waiting = system.cp.create_source("waiting", custom_recipe("SleepySource", tmp_path / "w.json", seconds=1),
                                      extra_env=custom_env())
    running = system.cp.run_source(long["id"])
    wait_for_tick(system, running["id"])
    queued = system.cp.run_source(waiting["id"])  # received but cannot be admitted beside a weight-1.0 task
    time.sleep(3)
    started = time.monotonic()
    assert executor.stop(timeout_s=60) == 0
    assert time.monotonic() - started < 30
    done = system.cp.execution(running["id"])
    assert (done["status"], done["reason"]) == ("ABORTED", "EXECUTOR_SHUTDOWN")
    assert system.cp.execution(queued["id"])["status"] == "PENDING"
    # The unstarted message went back at once: the next executor runs it without waiting out a visibility timeout.
    system.start_executor("executor-2")
    assert system.cp.wait_for_status(queued["id"], {"SUCCESS", "FAILURE"}, timeout_s=120)["status"] == "SUCCESS"


def test_a_control_plane_outage_mid_task_delays_the_result_but_loses_nothing(system, tmp_path):
    executor = system.start_executor()
    source = system.cp.create_source("through-outage", custom_recipe("SleepySource", tmp_path / "o.json", seconds=6),
                                     extra_env=custom_env())
    execution = system.cp.run_source(source["id"])
    wait_for_tick(system, execution["id"])
    system.cp.stop()
    time.sleep(12)  # the task finishes while the control plane is down
    system.cp.start()
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=90)
    assert done["status"] == "SUCCESS", "the result was delivered late rather than dropped"
    assert executor.process.poll() is None, "the executor never crashed"
    # The control plane records the result before the executor reads its answer and logs.
    executor.wait_for_line("control plane reachable again", timeout_s=20)
    unreachable = [line for line in executor.lines if "control plane unreachable" in line]
    assert len(unreachable) == 1, unreachable
