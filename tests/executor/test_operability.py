"""sd_notify over a real unix datagram socket, and the executor's logging set-up."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from executor.operability import SystemdNotifier


def test_sd_notify_sends_ready_status_watchdog_and_stopping(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())})
        assert notifier.watchdog_interval_s == 10.0, "pinged at half the watchdog timeout"
        notifier.ready()
        notifier.status("ACTIVE: ingestion 0.25 used")
        notifier.watchdog()
        notifier.stopping()
        received = [server.recv(4096).decode() for _ in range(4)]
    assert received == ["READY=1\nSTATUS=consuming tasks", "STATUS=ACTIVE: ingestion 0.25 used", "WATCHDOG=1",
                        "STOPPING=1\nSTATUS=draining"]


def test_a_drain_asks_systemd_for_its_time_whatever_the_units_stop_timeout(tmp_path, monkeypatch):
    """TimeoutStopSec= is written in the unit (360 s: the default 300 s drain and a minute), and
    systemd cannot read it from the environment file: a DATAHUB_EXECUTOR_DRAIN_TIMEOUT of 900
    there was SIGKILLed at 360 s, tasks and all, nothing reported. The master's stop now asks
    for the drain and a minute (EXTEND_TIMEOUT_USEC), which systemd grants beyond the unit's."""
    from executor.master import Master
    from executor.settings import load_settings

    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        settings = load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "t",
                                  "DATAHUB_EXECUTOR_POOL_ID": "p", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path),
                                  "DATAHUB_EXECUTOR_DRAIN_TIMEOUT": "900"})
        Master(settings)._begin_drain()
        said = dict(line.split("=", 1) for line in server.recv(4096).decode().splitlines())
    assert said["STOPPING"] == "1"
    assert int(said["EXTEND_TIMEOUT_USEC"]) == (900 + 60) * 1_000_000


def test_sd_notify_reaches_an_abstract_socket():
    name = f"datahub-executor-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert server.recv(4096).startswith(b"READY=1")


def test_outside_systemd_it_is_silent():
    notifier = SystemdNotifier({})
    notifier.ready()
    assert notifier.watchdog_interval_s is None


def test_json_logs_carry_the_execution_id():
    code = ("from loguru import logger\nfrom executor.operability import configure_logging\n"
            "configure_logging(json=True)\nlogger.bind(execution_id='exe_42').info('task line')\nlogger.info('master line')")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr.splitlines()
    records = [json.loads(line)["record"] for line in lines]
    assert [(r["message"], r["extra"]["execution_id"]) for r in records] == [("task line", "exe_42"), ("master line", "-")]



def test_connections_a_task_holds_to_the_health_port_are_bounded_and_time_out(monkeypatch):
    """Tasks share the master's network: each connection to /health held a thread and a
    descriptor of the master, unbounded and for ever, and a task holding a thousand ran the master
    out of descriptors. At most HEALTH_CONNECTIONS are served at once; an idle one is closed."""
    import time as time_module
    import urllib.request

    import executor.operability as operability

    monkeypatch.setattr(operability, "HEALTH_IDLE_S", 0.5)
    server = operability.HealthServer("127.0.0.1", 0, operability.ExecutorMetrics(), lambda: (True, "ACTIVE"))
    server.start()
    held = []
    try:
        base = threading.active_count()
        for _ in range(40):
            held.append(socket.create_connection(("127.0.0.1", server.port)))
        time_module.sleep(0.2)
        assert threading.active_count() - base <= operability.HEALTH_CONNECTIONS
        time_module.sleep(1.0)  # past the idle limit: the served ones are closed, their slots free
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://127.0.0.1:{server.port}/health", timeout=5) as answer:
            assert answer.status == 200
    finally:
        for connection in held:
            connection.close()
        server.stop()


def test_the_sandboxs_own_lines_are_in_the_executors_log_format_json_too(tmp_path):
    """The sandbox logs through the standard library's logging ("swept leftover task cgroup ...",
    a task whose processes would not die, a failed clean-up), which nothing configured: its
    warnings and errors reached stderr bare, through logging's last-resort handler, with no time,
    level or execution id, and as plain text in a DATAHUB_EXECUTOR_LOG_JSON=true log, whose
    collector expects one JSON object per line; its info lines were dropped. Here a previous run
    left a task cgroup (its master SIGKILLed), which the next start sweeps and says so."""
    import time
    import uuid

    import pytest

    from executor.testing import ExecutorProcess, remove_cgroup_roots
    from sandbox import Sandbox

    from .test_check_local_resources import environment

    root = f"test-logs-{uuid.uuid4().hex[:8]}"
    probe = Sandbox.open(root)
    mode = probe.mode
    probe.close()
    if mode == "none":
        pytest.skip("no writable cgroups here: nothing is left to sweep")
    crashed = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom sandbox import Limits, Sandbox\n"
        f"Sandbox.open({root!r}).start(['sleep', '300'], Limits())\nprint('started', flush=True)\ntime.sleep(300)")],
        stdout=subprocess.PIPE, text=True)
    executor = None
    try:
        assert crashed.stdout.readline().strip() == "started"
        crashed.kill()  # as a crash: the task dies of its parent-death signal, its cgroup stays
        crashed.wait()
        executor = ExecutorProcess(environment(tmp_path, DATAHUB_EXECUTOR_SANDBOX_MODE="auto",
                                               DATAHUB_EXECUTOR_CGROUP_ROOT=root, DATAHUB_EXECUTOR_LOG_JSON="true"))
        executor.wait_for_line("left by a previous run of this executor")
        time.sleep(0.5)
    finally:
        if crashed.poll() is None:
            crashed.kill()
            crashed.wait()
        if executor is not None:
            executor.stop()
        remove_cgroup_roots({root})
    records = []
    for line in executor.lines:
        try:
            records.append(json.loads(line)["record"])
        except ValueError:
            raise AssertionError(f"a line that is not JSON in a JSON log: {line!r}") from None
    swept = [r for r in records if r["message"].startswith("swept leftover task cgroup ")]
    assert len(swept) == 1 and swept[0]["level"]["name"] == "WARNING", records


def test_a_master_out_of_descriptors_goes_on_without_its_notifications(tmp_path):
    """At its open-files limit (EMFILE) the master cannot make the datagram socket a notification
    needs: the notification is lost, not the main thread (ready, watchdog and stopping are sent
    from it; raised, the master ended without a drain). Run in a process of its own, whose
    limit is lowered until nothing more can be opened."""
    script = """
import os, resource, socket
from executor.operability import SystemdNotifier
notifier = SystemdNotifier({"NOTIFY_SOCKET": os.environ["SOCKET_PATH"]})
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
held = []
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
notifier.ready()
notifier.watchdog()
notifier.stopping()
print("went on")
"""
    path = str(tmp_path / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    try:
        ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "SOCKET_PATH": path}, cwd=str(Path(__file__).resolve().parents[2]))
    finally:
        receiver.close()
    assert ran.returncode == 0 and ran.stdout.strip() == "went on", ran.stderr[-2000:]
