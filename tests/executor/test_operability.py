"""sd_notify over a real unix datagram socket, and the executor's logging set-up."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

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

