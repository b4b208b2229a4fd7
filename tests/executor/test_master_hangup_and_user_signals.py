"""The signals beyond SIGTERM and SIGINT that reach the master: SIGHUP (a closed terminal, `kill
-HUP`, `docker kill -s HUP`) and SIGUSR1/SIGUSR2 (datahub-executor-init forwards all three). Their
default action killed the master at once: no drain, no report, the task's cgroup left behind and
its run ended ABORTED (EXECUTOR_LOST) a while later. A real executor, control plane and task."""
from __future__ import annotations

import signal
import time

from tests.e2e.conftest import custom_env, custom_recipe, live_tasks, system, wait_for_tick  # noqa: F401 (the fixture)


def a_running_task(system, tmp_path, seconds: int) -> tuple[object, dict]:
    executor = system.start_executor(DATAHUB_EXECUTOR_DRAIN_TIMEOUT="60")
    execution = system.cp.run_source(system.cp.create_source(
        "sleepy", custom_recipe("SleepySource", tmp_path / "s.json", seconds=seconds), extra_env=custom_env())["id"])
    wait_for_tick(system, execution["id"])
    return executor, execution


def test_sighup_drains_as_sigterm_does_and_the_running_task_finishes(system, tmp_path):
    executor, execution = a_running_task(system, tmp_path, seconds=6)
    executor.process.send_signal(signal.SIGHUP)
    executor.wait_for_line("stop requested", timeout_s=10)
    assert executor.process.wait(timeout=60) == 0
    done = system.cp.execution(execution["id"])
    assert done["status"] == "SUCCESS", "the task was let finish, and its result recorded"
    assert live_tasks(executor.env["DATAHUB_EXECUTOR_CGROUP_ROOT"]) == 0
    assert any("executor stopped" in line for line in executor.lines)


def test_sigusr1_and_sigusr2_change_nothing(system, tmp_path):
    executor, execution = a_running_task(system, tmp_path, seconds=4)
    for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1):
        executor.process.send_signal(signum)
    time.sleep(1)
    assert executor.process.poll() is None, "the master died of a signal it has no use for"
    assert not any("stop requested" in line for line in executor.lines), "taken for a stop"
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=60)
    assert done["status"] == "SUCCESS"
    assert executor.stop(timeout_s=60) == 0
