"""`datahub-executor healthcheck`, the probe command of the container image and the ECS task,
run as a real process against a real /health server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from executor.healthcheck import health_url
from executor.operability import ExecutorMetrics, HealthServer

CLI = str(Path(sys.executable).parent / "datahub-executor")


def probe(address: str, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}
    env["DATAHUB_EXECUTOR_HEALTH_ADDRESS"] = address
    return subprocess.run([CLI, "healthcheck", *flags], env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture
def server():
    state = {"ok": True, "reason": "polling", "live": True}
    health = HealthServer("0.0.0.0", 0, ExecutorMetrics(), lambda: (state["ok"], state["reason"]),
                          lambda: (state["live"], "loops turn" if state["live"] else "main loop stalled for 70s"))
    health.start()
    try:
        yield health, state
    finally:
        health.stop()


def test_healthy_executor_exits_0_and_a_wildcard_bind_is_asked_on_loopback(server):
    health, _ = server
    result = probe(f"0.0.0.0:{health.port}")
    assert result.returncode == 0, result.stderr
    assert "polling" in result.stdout


def test_unhealthy_executor_exits_1_with_its_reason(server):
    health, state = server
    state.update(ok=False, reason='poll loop stalled for 95 s "quoted"')
    result = probe(f"127.0.0.1:{health.port}")
    assert result.returncode == 1
    assert "503" in result.stderr and 'stalled for 95 s "quoted"' in result.stderr


def test_live_asks_only_whether_the_loops_turn(server):
    """--live (ECS's and the image's check, which restart on failure) fails on a stalled loop,
    not on what /health alone fails on (a refused token)."""
    health, state = server
    state.update(ok=False, reason="the control plane refuses this executor's token")
    assert probe(f"127.0.0.1:{health.port}").returncode == 1
    live = probe(f"127.0.0.1:{health.port}", "--live")
    assert live.returncode == 0 and "loops turn" in live.stdout, live.stderr
    state.update(live=False)
    stalled = probe(f"127.0.0.1:{health.port}", "--live")
    assert stalled.returncode == 1 and "stalled for 70s" in stalled.stderr and "/health/live" not in stalled.stderr


def test_the_address_set_in_the_env_file_is_asked_and_the_environment_wins_over_it(server, tmp_path):
    """--env-file was read only after healthcheck had answered: an executor whose address is set
    in its executor.env was asked at the default one and reported down."""
    health, _ = server
    env_file = tmp_path / "executor.env"
    env_file.write_text(f"DATAHUB_GMS_TOKEN=unused\nDATAHUB_EXECUTOR_HEALTH_ADDRESS=127.0.0.1:{health.port}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}

    def probe_with_file(**environ: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, "--env-file", str(env_file), "healthcheck"], env={**env, **environ},
                              capture_output=True, text=True, timeout=30)

    from_file = probe_with_file()
    assert from_file.returncode == 0 and "polling" in from_file.stdout, from_file.stderr
    empty = probe_with_file(DATAHUB_EXECUTOR_HEALTH_ADDRESS="")
    assert empty.returncode == 0, "an empty variable hides nothing of the file's, as for run and check"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        elsewhere = closed.getsockname()[1]
    overridden = probe_with_file(DATAHUB_EXECUTOR_HEALTH_ADDRESS=f"127.0.0.1:{elsewhere}")
    assert overridden.returncode == 1 and f"127.0.0.1:{elsewhere}/health" in overridden.stderr
    env_file.unlink()
    unreadable = probe_with_file()
    assert unreadable.returncode == 1 and "Traceback" not in unreadable.stderr
    assert unreadable.stderr.strip() == f"datahub-executor: cannot read settings file {env_file}: No such file or directory"


def test_nothing_listening_exits_1_naming_the_address(server):
    health, _ = server
    port = health.port
    health.stop()
    result = probe(f"127.0.0.1:{port}")
    assert result.returncode == 1 and f"127.0.0.1:{port}/health" in result.stderr


def test_invalid_address_names_the_setting():
    result = probe("nonsense")
    assert result.returncode == 1 and "DATAHUB_EXECUTOR_HEALTH_ADDRESS" in result.stderr


def test_health_url_follows_the_setting_and_its_default():
    assert health_url({}) == "http://127.0.0.1:9087/health"
    assert health_url({"DATAHUB_EXECUTOR_HEALTH_ADDRESS": "[::]:9100"}) == "http://[::1]:9100/health"


def test_an_answer_that_is_not_http_is_unhealthy_in_one_line_not_a_traceback():
    """Something else on the health port (a port reused by another service) answers garbage:
    http.client raised BadStatusLine, outside the probe's errors, and the probe printed a traceback."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer_garbage() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(4096)
            connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    try:
        result = probe(f"127.0.0.1:{listener.getsockname()[1]}")
    finally:
        listener.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len((result.stdout + result.stderr).strip().splitlines()) == 1


def test_an_ipv6_address_is_bound_and_probed(tmp_path):
    """The address an IPv6-only cluster needs: [::]:PORT passed the settings, then the IPv4-only
    server failed the start with socket.gaierror (a traceback, not a settings error)."""
    health = HealthServer("::", 0, ExecutorMetrics(), lambda: (True, "polling"), lambda: (True, "loops turn"))
    health.start()
    try:
        result = probe(f"[::]:{health.port}")
        assert result.returncode == 0 and "polling" in result.stdout, result.stderr
    finally:
        health.stop()
    bare = probe("::1:9087")
    assert bare.returncode == 1 and "in brackets" in bare.stderr


def test_a_proxy_in_the_environment_is_not_used_to_reach_the_executors_own_health(server):
    """urllib's default opener sent the loopback request to HTTP_PROXY (a proxied host's NO_PROXY
    seldom names 127.0.0.1): a healthy executor was reported down, and a probe restarted it."""
    health, _ = server
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_") and "proxy" not in k.lower()}
    env.update({"DATAHUB_EXECUTOR_HEALTH_ADDRESS": f"127.0.0.1:{health.port}", "HTTP_PROXY": "http://127.0.0.1:9",
                "http_proxy": "http://127.0.0.1:9"})
    result = subprocess.run([CLI, "healthcheck"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "polling" in result.stdout, result.stderr
