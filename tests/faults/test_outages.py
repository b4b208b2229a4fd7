"""Fault suite 3: the SQS server stops for 30 s and comes back; then the control plane (API and
its embedded queue, as when its process restarts) stops for 60 s and comes back. A task runs
through both: it goes on, its result is delivered late rather than dropped, work queued after
the first outage runs, the executor never crashes and says so once per outage."""
from __future__ import annotations

import signal
import time
from pathlib import Path

from executor.testing import ExecutorProcess, free_port
from tests.e2e.conftest import custom_env, custom_recipe, mock_recipe, wait_for_tick

SQS_OUTAGE_S = 30
CONTROL_PLANE_OUTAGE_S = 60


def test_sqs_and_control_plane_outages_lose_nothing_and_are_logged_once_each(system, tmp_path):
    executor = system.start_executor()
    cp = system.cp
    # Long enough to run through the SQS outage and end inside the control-plane outage.
    long_run = cp.run_source(cp.create_source("through-both", custom_recipe("SleepySource", tmp_path / "a.json",
                                                                            seconds=SQS_OUTAGE_S + 40),
                                              extra_env=custom_env())["id"])
    wait_for_tick(system, long_run["id"])

    cp.stop_queue()
    time.sleep(SQS_OUTAGE_S)
    assert executor.process.poll() is None
    assert cp.execution(long_run["id"])["status"] == "RUNNING", "the task goes on without its queue"
    cp.start_queue()
    after_sqs = cp.run_source(cp.create_source("after-sqs-outage", mock_recipe(tmp_path / "b.json"))["id"])
    assert cp.wait_for_status(after_sqs["id"], {"SUCCESS", "FAILURE"}, timeout_s=120)["status"] == "SUCCESS"
    executor.wait_for_line("SQS reachable again", timeout_s=5)

    cp.stop()
    time.sleep(CONTROL_PLANE_OUTAGE_S)  # the long task ends while nobody can hear its result
    assert executor.process.poll() is None
    cp.start()
    done = cp.wait_for_status(long_run["id"], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=120)
    assert done["status"] == "SUCCESS", "the result was delivered late, not dropped"
    assert done["executor_id"] == "executor-1"
    after_cp = cp.run_source(cp.create_source("after-cp-outage", mock_recipe(tmp_path / "c.json"))["id"])
    assert cp.wait_for_status(after_cp["id"], {"SUCCESS", "FAILURE"}, timeout_s=120)["status"] == "SUCCESS"

    def count(text: str) -> int:
        return sum(text in line for line in executor.lines)

    # The control plane's restart took its embedded queue down too: two SQS outages, one API outage.
    assert count("SQS unreachable") == 2, [line for line in executor.lines if "SQS" in line]
    assert count("SQS reachable again") == 2
    assert count("control plane unreachable") == 1, [line for line in executor.lines if "control plane" in line]
    assert count("control plane reachable again") == 1
    assert not any("Traceback" in line for line in executor.lines)
    assert "[executor] outcome: SUCCEEDED" in cp.logs(long_run["id"])["log"], "the full log, too, arrived late"
    starts = sum("started: RUN_INGEST" in line and long_run["id"] in line for line in executor.lines)
    assert starts == 1, "the long task ran once, though its message outlived its visibility during the outage"
    # It heartbeats every second, and is STALE after three missed: on a loaded machine one beat
    # can be late, so it is given a few seconds to show ONLINE rather than read once.
    deadline = time.monotonic() + 15
    while (status := cp.executors("remote")[0]["status"]) != "ONLINE" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == "ONLINE"


def test_a_stop_while_the_control_plane_is_unreachable_at_start_leaves_no_cgroup_root(system):
    """The start waits for the control plane (the pool lookup); a SIGTERM then ended the process
    through SystemExit past the clean-up, and the sandbox's cgroup root stayed behind."""
    from sandbox.detect import read_hierarchies, v1_hierarchy, v2_hierarchy

    env = system.executor_env(DATAHUB_GMS_URL=f"http://127.0.0.1:{free_port()}/gms")
    executor = ExecutorProcess(env)
    system.executors.append(executor)
    hierarchies = read_hierarchies()
    hierarchy = v1_hierarchy(hierarchies, "memory") or v2_hierarchy(hierarchies)
    root = Path(hierarchy.own_dir) / env["DATAHUB_EXECUTOR_CGROUP_ROOT"]
    deadline = time.monotonic() + 30
    while not root.exists():  # the sandbox is open: the executor now waits for its control plane
        assert time.monotonic() < deadline and executor.process.poll() is None, "\n".join(executor.lines)
        time.sleep(0.05)
    time.sleep(1)
    executor.process.send_signal(signal.SIGTERM)
    assert executor.process.wait(timeout=30) == 0
    assert not root.exists(), "the executor's cgroup root was left behind"


def test_a_start_waiting_for_an_unreachable_control_plane_keeps_asking_systemd_for_time(system, tmp_path):
    """Under Type=notify, READY=1 comes once the control plane answered; until then systemd's
    start timeout (90 s by default) ran, killed the waiting executor and restarted it in a loop
    while DataHub was unreachable (`systemctl start` failing each time). Each wait of the start
    now extends it (EXTEND_TIMEOUT_USEC), naming what it waits on."""
    import socket

    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(0.5)
        env = system.executor_env(DATAHUB_GMS_URL=f"http://127.0.0.1:{free_port()}/gms", NOTIFY_SOCKET=path)
        executor = ExecutorProcess(env)
        system.executors.append(executor)
        extensions: list[str] = []
        deadline = time.monotonic() + 30
        while len(extensions) < 2 and time.monotonic() < deadline:
            try:
                message = notify.recv(4096).decode()
            except socket.timeout:
                continue
            assert "READY=1" not in message, "ready before the control plane answered"
            if "EXTEND_TIMEOUT_USEC=" in message:
                extensions.append(message)
        executor.process.send_signal(signal.SIGTERM)
        assert executor.process.wait(timeout=30) == 0
    assert len(extensions) == 2, "no extension of systemd's start timeout while the control plane was unreachable"
    assert all("STATUS=waiting for the control plane" in message for message in extensions), extensions
    asked_s = [int(message.split("EXTEND_TIMEOUT_USEC=")[1].split()[0]) / 1e6 for message in extensions]
    assert all(seconds >= 60 for seconds in asked_s), asked_s
