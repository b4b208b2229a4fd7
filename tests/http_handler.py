"""The request handler the tests' small HTTP servers and proxies on 127.0.0.1 build on."""
from __future__ import annotations

from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler


class QuietHandler(BaseHTTPRequestHandler):
    """Answers with a whole body and its Content-Length, and logs nothing: a test asserts on
    what it recorded, not on the server's access log."""

    def answer(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass
