"""The systemd watchdog is fed while the master is healthy, whatever the control plane does:
a real notify socket, a real heartbeat against a slow HTTP server, the master's own loops."""
from __future__ import annotations

import os
import socket
import threading
import time

from executor.controlplane_client import ControlPlaneClient
from executor.master import Master
from executor.services import Heartbeat, Loop
from executor.settings import load_settings

from .test_heartbeat import StatusServer


def test_a_slow_control_plane_does_not_starve_the_systemd_watchdog(tmp_path, monkeypatch):
    """The heartbeat thread was the one that fed the watchdog, between beats: a heartbeat held
    by a slow control plane (each attempt up to 15 s, retried) stopped the pings, and systemd
    killed a healthy executor for its control plane's latency."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify, \
            StatusServer(fail_first_state="ACTIVE", hold_s=4.0) as server:
        notify.bind(path)
        notify.settimeout(0.2)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # a ping every 0.5 s
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        settings = load_settings({"DATAHUB_GMS_URL": server.gms_url, "DATAHUB_GMS_TOKEN": "t",
                                  "DATAHUB_EXECUTOR_POOL_ID": "p", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)})
        master = Master(settings)
        master.state = "ACTIVE"
        master.heartbeat = Heartbeat(client=ControlPlaneClient(server.gms_url, "t"), executor_id="exec-1",
                                     instance_id="i1", pool_id="p", interval_s=30, leases=master.leases,
                                     ledgers=master.ledgers, state=lambda: master.state, sandbox=dict, health=dict,
                                     log_delivery=False, started_at="2026-01-01T00:00:00+00:00",
                                     gms_url=server.gms_url)
        master._stop_loops = threading.Event()
        master._threads = [Loop("heartbeat", master._heartbeat_step, master._stop_loops)]
        main = threading.Thread(target=master._wait_and_drain, daemon=True)
        main.start()
        master._threads[0].start()
        try:
            assert server.failed_once.wait(10), "the heartbeat reached the slow control plane"
            pings, until = 0, time.monotonic() + 3.0  # while that heartbeat is held
            while time.monotonic() < until:
                try:
                    pings += notify.recv(4096) == b"WATCHDOG=1"
                except socket.timeout:
                    pass
        finally:
            master._stop_loops.set()
            master.request_stop()
            main.join(timeout=10)
            master._threads[0].join(timeout=30)
    assert pings >= 2, f"{pings} watchdog ping(s) in 3 s with a 1 s watchdog"
