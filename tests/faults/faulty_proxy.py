"""A reverse proxy on 127.0.0.1 in front of the control plane that breaks chosen answers: what a
broken load balancer, a captive portal or a half-dead control plane sends. Each rule matches a
method and a path fragment and says how often to answer in its own way, or only counts the
requests that pass through it (watch)."""
from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from urllib.parse import urlparse

from executor.testing import stop_all_without_draining
from tests.http_handler import QuietHandler


@dataclass
class Rule:
    method: str
    fragment: str
    status: int
    body: bytes
    times: int  # -1: always
    header: tuple[str, str] | None = None  # also match a request header (SQS names its action in X-Amz-Target)
    hits: int = 0
    hang: bool = False  # read the request and never answer (until the proxy stops): a black hole
    body_has: tuple[bytes, ...] = ()  # also match only bodies holding each of these (one kind of proposal)
    forward: bool = False  # count the request and pass it on as it is (watch)
    delay_s: float = 0.0  # pass it on at once, and hold the answer back this long (delay)


class FaultyProxy:
    def __init__(self, upstream_url: str) -> None:
        upstream = urlparse(upstream_url)
        self.rules: list[Rule] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        outer = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rule = outer._match(self.command, self.path, self.headers, body)
                if rule is not None and rule.hang:
                    outer._stopped.wait()
                    self.close_connection = True
                    return
                if rule is not None and not rule.forward:
                    self.answer(rule.status, rule.body, {"Content-Type": "text/html"})
                    return
                connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                kind = answer.getheader("Content-Type") or "application/json"
                data = answer.read()
                if rule is not None and rule.delay_s:
                    outer._stopped.wait(rule.delay_s)
                self.answer(answer.status, data, {"Content-Type": kind})
                connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{upstream.path}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def break_(self, method: str, fragment: str, *, status: int = 200, body: bytes = b"<html>not json</html>",
               times: int = -1, header: tuple[str, str] | None = None, body_has: tuple[bytes, ...] = ()) -> Rule:
        return self._add(Rule(method, fragment, status, body, times, header, body_has=body_has))

    def hang(self, method: str, fragment: str, *, body_has: tuple[bytes, ...] = ()) -> Rule:
        """Requests that match are read and never answered, until the proxy stops."""
        return self._add(Rule(method, fragment, 0, b"", -1, hang=True, body_has=body_has))

    def watch(self, method: str, fragment: str) -> Rule:
        """Requests that match are passed on unchanged and counted (rule.hits): how many reach the
        upstream. A rule added before it for the same requests takes them first."""
        return self._add(Rule(method, fragment, 0, b"", -1, forward=True))

    def delay(self, method: str, fragment: str, seconds: float, *, times: int = -1) -> Rule:
        """Requests that match reach the upstream at once; their answers come SECONDS later: a
        slow network on the way back, the request already acted on."""
        return self._add(Rule(method, fragment, 0, b"", times, forward=True, delay_s=seconds))

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def heal(self) -> None:
        with self._lock:
            self.rules.clear()

    def _match(self, method: str, path: str, headers, body: bytes) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                header_ok = rule.header is None or rule.header[1] in (headers.get(rule.header[0]) or "")
                body_ok = all(part in body for part in rule.body_has)
                if rule.method == method and rule.fragment in path and header_ok and body_ok and rule.times != 0:
                    rule.hits += 1
                    if rule.times > 0:
                        rule.times -= 1
                    return rule
        return None

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()  # refused from now on, not accepted and left unanswered


@contextmanager
def in_front_of(upstream_url: str, executors: list) -> Iterator[FaultyProxy]:
    """A FaultyProxy for a test's fixture. At the end it heals first and the EXECUTORS that may
    talk through it stop, then it goes: an executor stopping behind a proxy that still breaks
    answers (or is gone) spent seconds on its last heartbeats in every teardown."""
    proxy = FaultyProxy(upstream_url)
    try:
        yield proxy
    finally:
        proxy.heal()
        proxy._stopped.set()  # requests held in a black hole are let go (their connections closed)
        stop_all_without_draining(executors)
        proxy.stop()
