"""Answers that say "not now" or "nothing", from servers that behave so for real (on 127.0.0.1):
a Retry-After of an hour from a gateway, and an SQS endpoint that ignores long polling. Found by
review: the first put the heartbeat thread to sleep for an hour, so the control plane judged the
executor gone and ended its tasks; the second had the intake ask tens of times a second."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from executor import controlplane_client, datahub_aspects
from executor.consumer import SqsConsumer
from executor.controlplane_client import ControlPlaneClient
from executor.leases import Leases
from executor.ledger import Ledger
from executor.services import EMPTY_RECEIVE_MIN_S, Intake, Loop, OutageLog
from tests.http_handler import QuietHandler


class Scripted:
    """An HTTP server answering each POST with the next of ANSWERS ((status, headers, body)), then
    with the last one for ever; it counts what it was asked."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = list(answers)
        self.asked = 0
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.asked += 1
                status, headers, body = server.answers[0] if len(server.answers) == 1 else server.answers.pop(0)
                self.answer(status, body, {"Content-Type": "application/json", **headers})

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def scripted() -> Iterator[list[Scripted]]:
    made: list[Scripted] = []
    yield made
    for server in made:
        server.close()


def test_a_retry_after_of_an_hour_is_obeyed_only_up_to_the_cap(scripted, monkeypatch):
    monkeypatch.setattr(controlplane_client, "RETRY_AFTER_MAX_S", 0.5, raising=False)
    gms = Scripted([(503, {"Retry-After": "3600"}, b'{"message": "busy"}'),
                    (200, {}, json.dumps({"value": "urn:li:dataHubRemoteExecutor:e1"}).encode())])
    scripted.append(gms)
    client = ControlPlaneClient(gms.url + "/gms", "token-not-checked-here", retries=2, timeout_s=5)
    status = datahub_aspects.executor_status(pool_id="p", version="0.1.0", address="10.0.0.1", hostname="h",
                                             uptime_s=1.0, stopped=False, log_delivery=False)
    beat = threading.Thread(target=client.heartbeat, args=("e1", status, {"instanceId": "i"}), daemon=True)
    began = time.monotonic()
    beat.start()
    beat.join(20)
    assert not beat.is_alive(), "the heartbeat slept the hour the gateway asked for"
    assert gms.asked == 2 and time.monotonic() - began < 10


def test_an_endpoint_that_answers_empty_receives_at_once_is_not_asked_again_at_once(scripted):
    sqs = Scripted([(200, {"Content-Type": "application/x-amz-json-1.0"}, b"{}")])  # no messages, no wait
    scripted.append(sqs)
    consumer = SqsConsumer(f"{sqs.url}/123456789012/q", "ingestion", region="us-east-1", endpoint_url=sqs.url,
                           visibility_timeout_s=30, local_credentials=True)
    stop = threading.Event()
    intake = Intake(consumer, Ledger("ingestion", 2), Leases(), offer=lambda message: None, stop=stop,
                    outage=OutageLog())
    loop = Loop("intake-test", intake.step, stop)
    loop.start()
    time.sleep(2.5)
    stop.set()
    loop.join(5)
    assert 1 <= sqs.asked <= 2.5 / EMPTY_RECEIVE_MIN_S + 1, f"{sqs.asked} receives in 2.5 s"
