"""What a new user meets first: `bin/quickstart` and `bin/test` on a fresh machine, and the
quickstart's port on a quick restart."""
from __future__ import annotations

import socket

import pytest

from controlplane.quickstart import _free_or


def _tcp_states(port: int) -> set[str]:
    """The kernel's states (hex codes of /proc/net/tcp) of IPv4 sockets whose local port is `port`."""
    states = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            states.add(fields[3])
    return states


TIME_WAIT = "06"


def test_the_quickstart_keeps_its_port_while_the_previous_runs_connections_are_in_time_wait():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first, so its end of the connection goes to TIME_WAIT
        client.close()
    assert TIME_WAIT in _tcp_states(port)
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the probe used to do: the port looked taken

    assert _free_or(port) == port


def test_a_port_another_process_listens_on_gives_a_different_free_port():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]

        chosen = _free_or(taken)

        assert chosen != taken
        with socket.socket() as check:
            check.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            check.bind(("127.0.0.1", chosen))
            check.listen()
