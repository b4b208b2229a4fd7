"""services.Heartbeat against a real HTTP server standing in for the control plane's ingest
endpoint: what arrives, and in which order."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from executor.controlplane_client import ControlPlaneClient
from executor.leases import Leases
from executor.ledger import Ledger
from executor.services import Heartbeat


class StatusServer:
    """Records the state property of every heartbeat it accepts, in the order it accepted them.
    The first heartbeat saying FAIL_FIRST_STATE is held for HOLD_S and answered 503, as a slow
    control plane behind a load balancer would, so the client retries it."""

    def __init__(self, *, fail_first_state: str | None = None, hold_s: float = 0.0) -> None:
        self.accepted: list[str] = []
        self.fail_first_state = fail_first_state
        self.hold_s = hold_s
        self.failed_once = threading.Event()
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                state = body["proposal"]["systemMetadata"]["properties"]["state"]
                status = 200
                with lock:
                    fail = state == outer.fail_first_state and not outer.failed_once.is_set()
                    if fail:
                        outer.failed_once.set()
                if fail:
                    time.sleep(outer.hold_s)
                    status = 503
                else:
                    with lock:
                        outer.accepted.append(state)
                payload = json.dumps({"value": body["proposal"]["entityUrn"]}).encode()  # GMS's answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.gms_url = f"http://127.0.0.1:{self._server.server_address[1]}/gms"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "StatusServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def heartbeat(gms_url: str, state: list[str]) -> Heartbeat:
    return Heartbeat(client=ControlPlaneClient(gms_url, "t"), executor_id="exec-1", instance_id="i1", pool_id="p",
                     interval_s=30, leases=Leases(), ledgers={"ingestion": Ledger("ingestion", 2)},
                     state=lambda: state[0], sandbox=dict, health=dict, log_delivery=False,
                     started_at="2026-01-01T00:00:00+00:00", gms_url=gms_url)


def stopping_with_a_draining_beat_in_flight(server: StatusServer) -> tuple[Heartbeat, threading.Thread]:
    """The heartbeat thread's DRAINING beat is held (answered 503 after a while, then retried)
    and the executor now says STOPPED: where the final beat is sent from."""
    state = ["DRAINING"]
    beats = heartbeat(server.gms_url, state)
    draining = threading.Thread(target=beats.beat)
    draining.start()
    assert server.failed_once.wait(10), "the DRAINING beat reached the server"
    state[0] = "STOPPED"
    return beats, draining


def test_no_draining_heartbeat_arrives_after_the_final_stopped_one():
    """The heartbeat thread's DRAINING beat, retried through a slow control plane, landed after
    the main thread's STOPPED one: the control plane stores the state of whatever arrives last,
    so a stopped executor showed DRAINING (alive) again. The last heartbeat accepted is STOPPED,
    and no beat is sent after it."""
    with StatusServer(fail_first_state="DRAINING", hold_s=1.0) as server:
        beats, draining = stopping_with_a_draining_beat_in_flight(server)
        beats.beat(via=ControlPlaneClient(server.gms_url, "t", retries=0, timeout_s=5))
        draining.join(timeout=30)
        beats.beat()  # a heartbeat turn that comes after the final beat sends nothing
        assert server.accepted[-1] == "STOPPED" and server.accepted.count("STOPPED") == 1, server.accepted


def test_a_final_beat_that_cannot_wait_for_the_one_in_flight_sends_nothing_then_or_later():
    """A control plane that does not answer must not hold a stopping executor: the final beat
    waits a few seconds for the one in flight, and if that is still unanswered it is not sent
    (it could be overtaken), and neither is any other beat after it."""
    with StatusServer(fail_first_state="DRAINING", hold_s=3.0) as server:
        beats, draining = stopping_with_a_draining_beat_in_flight(server)
        began = time.monotonic()
        assert beats.beat(via=ControlPlaneClient(server.gms_url, "t", retries=0, timeout_s=5), wait_s=0.5) is False
        assert time.monotonic() - began < 2.5, "the final beat waited out the beat in flight"
        draining.join(timeout=30)
        assert beats.beat() is False
        assert server.accepted == ["DRAINING"], server.accepted
