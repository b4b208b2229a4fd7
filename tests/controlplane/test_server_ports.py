"""The control plane's ports: the one it settles on is the one it serves, whoever else is binding
ports on this machine meanwhile (other test workers, other services)."""
from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from controlplane import server as server_module
from controlplane.server import ControlPlaneServer, ServerConfig, StartRefused


def _take(port: int) -> socket.socket | OSError:
    """A listener on 127.0.0.1:PORT as another program would make one, or the error that refused it."""
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        other.bind(("127.0.0.1", port))
        other.listen()
    except OSError as exc:
        other.close()
        return exc
    return other


@contextmanager
def running(state: Path) -> Iterator[ControlPlaneServer]:
    """A control plane on STATE, started, and stopped after."""
    server = ControlPlaneServer(ServerConfig(state_dir=state))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_port_another_program_binds_while_the_control_plane_starts_is_still_the_one_it_serves(tmp_path, monkeypatch):
    """Another program binds the chosen port between the control plane settling on it and the HTTP
    server starting. It used to be a check then a bind: uvicorn found the port taken and the start
    failed with "the control plane's HTTP server did not start" (seen in CI with xdist workers)."""
    server = ControlPlaneServer(ServerConfig(state_dir=tmp_path / "cp"))
    interlopers: list[socket.socket | OSError] = []
    create_app = server_module.create_app

    def bind_first_then_create_app(*args, **kwargs):
        interlopers.append(_take(server.port))  # the moment between choosing the port and serving it
        return create_app(*args, **kwargs)

    monkeypatch.setattr(server_module, "create_app", bind_first_then_create_app)
    try:
        server.start()
        assert requests.get(f"{server.base_url}/health", timeout=10).status_code == 200
    finally:
        for interloper in interlopers:
            if isinstance(interloper, socket.socket):
                interloper.close()
        server.stop()

    [interloper] = interlopers
    assert isinstance(interloper, OSError) and interloper.errno == errno.EADDRINUSE


def test_a_remembered_port_something_listens_on_is_given_up_for_a_free_one_and_an_asked_one_refused(tmp_path):
    state = tmp_path / "cp"
    with running(state) as first:
        remembered = first.port

    squatter = _take(remembered)
    assert isinstance(squatter, socket.socket)
    try:
        with running(state) as again:
            assert again.port != remembered
            assert requests.get(f"{again.base_url}/health", timeout=10).status_code == 200
            assert int((state / "api-port").read_text()) == again.port  # clients find it there next time

        refused = ControlPlaneServer(ServerConfig(state_dir=tmp_path / "other", port=remembered))
        with pytest.raises(StartRefused, match="address already in use"):
            refused.start()
    finally:
        squatter.close()


def test_the_embedded_queue_port_is_remembered_across_a_restart(tmp_path):
    """Executors keep their queue URLs across a control-plane restart only if the port stays."""
    state = tmp_path / "cp"
    with running(state) as first:
        endpoint = first.sqs_endpoint_url
    with running(state) as again:
        assert again.sqs_endpoint_url == endpoint
