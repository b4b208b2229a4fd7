"""Fencing, for real: a master paused past its visibility timeout (SIGSTOP: a VM freeze, a
partition) while another executor takes its execution over. When it wakes, its stale lease is
refused, it kills its task at once and says so, and the one final state is the new run's."""
from __future__ import annotations

import os
import signal
import time

import psutil

from .conftest import custom_env, custom_recipe, wait_for_tick


def test_a_paused_master_loses_its_execution_and_kills_its_task_when_it_wakes(system, tmp_path):
    system.cp.create_pool("fenced", visibility_timeout_s=4)
    system.pool_id = "fenced"
    # The paused master's message comes back after 4 s (or 8: a long poll it had in flight takes
    # it once more, frozen as it is). Its holder is STALE only after 9 s (3 missed heartbeats): a
    # claim before that is deferred (the message kept, test_execution_life_cycle.py), one after
    # succeeds; OFFLINE (an EXECUTOR_LOST abort) would come only at 18 s.
    paused = system.start_executor("paused-1", DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL="3")
    # The taker's run of it ends once the paused master's task is gone (RELEASE), not 25 s later.
    release = tmp_path / "release"
    source = system.cp.create_source("long", custom_recipe("SleepySource", tmp_path / "l.json", seconds=25,
                                                           until_exists=str(release)),
                                     pool_id="fenced", extra_env=custom_env())
    execution = system.cp.run_source(source["id"])
    wait_for_tick(system, execution["id"])
    old_task = [p for p in psutil.Process(paused.process.pid).children(recursive=True) if "datahub" in " ".join(p.cmdline())]
    assert old_task, "the paused master's task runs"
    taker = system.start_executor("taker-1")
    os.kill(paused.process.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while system.cp.execution(execution["id"])["executor_id"] != "taker-1":
            assert time.monotonic() < deadline, "the redelivered message was never claimed by the other executor"
            time.sleep(0.2)
        assert system.cp.execution(execution["id"])["lease_epoch"] == 2
    finally:
        os.kill(paused.process.pid, signal.SIGCONT)
    paused.wait_for_line("lost the execution", timeout_s=30)
    deadline = time.monotonic() + 15
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in old_task):
        assert time.monotonic() < deadline, "the stale run's task was not killed"
        time.sleep(0.1)
    release.touch()
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=120)
    assert (done["status"], done["executor_id"]) == ("SUCCESS", "taker-1"), "the run that holds the lease wrote the end"
    # The control plane records the result before the taker reads its answer and logs it.
    taker.wait_for_line("finished:", timeout_s=20)
    finishes = [line for e in (paused, taker) for line in e.lines if "finished:" in line]
    assert len(finishes) == 1 and "SUCCESS" in finishes[0], finishes
    assert paused.process.poll() is None and taker.process.poll() is None
