"""A stop signal while the start waits on a control plane that takes connections and never
answers (a hung load balancer, a proxy without its upstream): the start's call has a 10 s read
timeout, and SIGTERM waited it out, ~9 s, where _until_ok promises the wait ends at once."""
from __future__ import annotations

import signal
import socket
import threading
import time

from executor.testing import ExecutorProcess

from .test_check_local_resources import environment


class BlackHole:
    """127.0.0.1:<port>: accepts, reads what comes, answers nothing, until closed."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.asked = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self._held.append(connection)
            if connection.recv(65536):
                self.asked.set()

    def close(self) -> None:
        self.listener.close()
        for connection in self._held:
            connection.close()


def test_sigterm_ends_a_start_waiting_on_a_control_plane_that_never_answers_within_a_second(tmp_path):
    hole = BlackHole()
    executor = ExecutorProcess(environment(tmp_path, DATAHUB_GMS_URL=f"http://127.0.0.1:{hole.port}/gms"))
    try:
        assert hole.asked.wait(60), "the executor never asked for its pool"
        time.sleep(0.5)  # well inside the call's 10 s read timeout
        sent = time.monotonic()
        executor.process.send_signal(signal.SIGTERM)
        status = executor.process.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if executor.process.poll() is None:
            executor.kill9()
        hole.close()
    assert took < 1.5, f"the stop waited {took:.1f} s for the unanswered call"
    assert status == 0, "\n".join(executor.lines[-10:])
    assert not any("Traceback" in line for line in executor.lines), "\n".join(executor.lines)
