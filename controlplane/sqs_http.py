"""The embedded SQS server's HTTP side: moto's WSGI application served over HTTP/1.1 connections
that stay open between requests, as AWS SQS's do.

moto serves through werkzeug's development server, which answers every request with
`Connection: close`: each SQS call of the executor and of the control plane's outbox opened a
TCP connection, and the server started a thread for it, for one request. botocore keeps
connections in a pool and uses them again where the server lets it, as AWS's endpoints do.
Measured on the benchmark machine (a boto3 receive and delete, 590 of each, alternating runs),
kept connections cut their client's CPU from 3.6 to 3.2 ms and the server's from 5.3 to 4.1 ms.

werkzeug closes because Python's http.server does not drain a request body its application left
unread, and the rest of it would be read as the next request. Here the body is read whole,
by its Content-Length, before the application sees it (as wsgi.input), so nothing is left on
the connection whatever the application reads; a request whose length is not given that way
(chunked, which no SQS client sends) or is over MAX_BODY_BYTES is refused and its connection
closed. Each answer carries its Content-Length. A connection idle for IDLE_TIMEOUT_S is closed
(botocore opens a new one; AWS closes idle connections too), and stop() closes every open one,
so that no client keeps talking to a server that is gone.

A request, once its first byte came, is read whole (request line, headers, body) within
REQUEST_READ_TIMEOUT_S, or its connection is closed. The socket's timeout bounds each read, not
the request: a client sending a byte just inside it (slowloris) held its connection's thread for
as long as it liked, and the server starts a thread for every connection it accepts. The
deadline ends with the body: a long poll is the server answering slowly, not the client sending.

At most MAX_CONNECTIONS connections are open at once: there was no cap, and a client opening
thousands of idle connections held a thread each for the idle timeout, until the process ran out
of threads or memory and the executors' long polls failed. At the cap, the connection idle
longest (accepted or answered, and no byte of its next request come) is closed for the new one,
as botocore reopens a kept connection it finds closed; a connection in a request or a long poll
is never closed for the cap. Only when none is idle is the new connection closed at once,
reported once until a connection is taken again, not once for each in a burst.
"""
from __future__ import annotations

import fcntl
import io
import select
import socket
import socketserver
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

# SQS takes messages of up to 1 MiB (256 KiB before August 2025), a batch of up to ten within the
# same total. botocore's JSON escapes a character outside ASCII as \uXXXX (six bytes for one of
# two in UTF-8), and the query protocol's percent-encoding triples a byte: three times the
# largest message, and room for the request's other parameters.
MAX_BODY_BYTES = 4 << 20
IDLE_TIMEOUT_S = 60  # longer than a long poll (20 s), so a consumer's connection stays open between polls
# botocore sends a request in one go: its largest (MAX_BODY_BYTES) takes milliseconds on this
# machine's loopback, and a few seconds over a slow tunnel to it.
REQUEST_READ_TIMEOUT_S = 30
# Each executor holds a long poll per queue and botocore's pool of up to 10 connections per
# client; the control plane's outbox holds a pool too. 1024 threads' stacks are virtual memory,
# committed only as used, and a few dozen executors stay well inside it.
MAX_CONNECTIONS = 1024
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer",
                        "upgrade", "proxy-connection"})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# The handler whose request this thread is answering, if any (set by the handler).
_answering = threading.local()


def request_abandoned() -> bool:
    """Whether the request this thread answers can no longer be answered: its server stopped
    and reset the connection, or its client closed it (an executor stopped mid-poll). A long
    poll asks before each scan. One that went on inside moto took the next message sent, for an
    answer no one would read, and the message stayed invisible for its visibility timeout: after
    a stop, the first message sent after the restart (the backend outlives the server); after an
    executor's Ctrl-C, the first run started before it was back."""
    handler = getattr(_answering, "handler", None)
    return handler is not None and (handler.server.stopped.is_set() or _closed_by_peer(handler.connection))


def _closed_by_peer(connection: socket.socket) -> bool:
    """Whether the client has closed CONNECTION: it reads as ended, with nothing in it (a
    request sent behind the one being answered is data, not an end). Looked at with a poll of
    no wait first: the socket has a timeout, and its recv() would wait that long for data."""
    readable = select.poll()
    readable.register(connection, select.POLLIN)
    if not readable.poll(0):
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True  # reset


def _bytes_arrived(connection: socket.socket) -> bool:
    """Whether bytes wait unread on CONNECTION, asked of the kernel without reading. Not with
    a poll and a peek, as _closed_by_peer: the connection's own thread might read the bytes
    between the two, and the peek would then wait out the socket's timeout, the lock held."""
    try:
        waiting = fcntl.ioctl(connection.fileno(), termios.FIONREAD, struct.pack("i", 0))
    except OSError:
        return False
    return struct.unpack("i", waiting)[0] > 0


class _DeadlineReader(io.RawIOBase):
    """A connection's bytes as http.server reads them, no read waiting past the request's
    deadline; between requests (no deadline), each read waits up to the idle timeout."""

    def __init__(self, connection: socket.socket, idle_timeout_s: float) -> None:
        super().__init__()
        self._connection = connection
        self._idle_timeout_s = idle_timeout_s
        self.deadline: float | None = None  # time.monotonic() by which the request must be read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wait = self._idle_timeout_s
        if self.deadline is not None:
            wait = self.deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError("the request was not read whole by its deadline")
        self._connection.settimeout(wait)
        return self._connection.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    # An answer leaves in one write (buffered, flushed after each request by http.server) with
    # Nagle's algorithm off: headers and body in two small writes waited for the client's
    # delayed ACK, 40 ms a request, on a connection that stays open.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: KeepAliveServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # http.server's reader: each of its reads waited the whole timeout anew
        self._reader = _DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        """Wait up to the idle timeout for the next request's first byte (one already sent
        behind the last request is there at once), then read the request by its deadline. A
        request not read by then ends in TimeoutError, which http.server answers by closing."""
        self._reader.deadline = None
        if not self.server.connection_waiting(self.connection):  # closed for the cap already
            self.close_connection = True
            return
        try:
            started = self.rfile.peek(1)
        except TimeoutError:  # idle for the idle timeout
            started = b""
        if not started or not self.server.connection_in_request(self.connection):
            self.close_connection = True
            return
        self._reader.deadline = time.monotonic() + self.server.request_read_timeout_s
        super().handle_one_request()

    def _request_read(self) -> None:
        """The request is read: the answer, and a long poll before it, have no deadline; the
        answer's writes wait as long as an idle read would."""
        self._reader.deadline = None
        self.connection.settimeout(self.timeout)

    def handle_expect_100(self) -> bool:
        """A client that waits for 100 Continue before its body gets it now, or the refusal of
        its length as the final answer. http.server's own wrote the 100 into the buffer that
        is sent after the request, which a waiting client never sees."""
        refusal = self._length_refusal()
        if refusal is not None:
            self._refuse(*refusal)
            self.wfile.flush()
            return False
        self.send_response_only(HTTPStatus.CONTINUE)
        self.end_headers()
        self.wfile.flush()
        return True

    def do_request(self) -> None:
        _answering.handler = self
        body = self._body()
        if body is None:
            return
        environ = self._environ(body)
        status_line: list[str] = []
        headers: list[tuple[str, str]] = []

        def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            if exc_info and status_line:
                raise exc_info[1].with_traceback(exc_info[2])
            status_line[:] = [status]
            headers[:] = response_headers
            return lambda data: chunks.append(data)  # the legacy write(): kept with the rest

        chunks: list[bytes] = []
        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:  # the application failed: an answer and a closed connection, not a dead thread
            self.server.report_error(self.command, self.path, sys.exc_info())
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, "the embedded SQS server failed on this request")
            return
        self._answer(status_line[0] if status_line else "500 Internal Server Error", headers, b"".join(chunks))

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_request

    def _length_refusal(self) -> tuple[HTTPStatus, str] | None:
        """Why the body's length cannot be trusted, or None. Only one Content-Length, of ASCII
        digits, is taken: with two that differ (RFC 9112 6.3) the rest of the body would be
        read as another request on the kept connection."""
        if "Transfer-Encoding" in self.headers:
            return HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked"
        given = {value.strip() for value in self.headers.get_all("Content-Length") or ["0"]}
        text = next(iter(given))
        if len(given) > 1 or not (text.isascii() and text.isdigit()):
            return HTTPStatus.BAD_REQUEST, "Content-Length is not one number"
        if int(text) > MAX_BODY_BYTES:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY_BYTES} bytes"
        return None

    def _body(self) -> bytes | None:
        """The request's body, read whole; None (the request answered and the connection to be
        closed) when its length is not a Content-Length this server takes."""
        refusal = self._length_refusal()
        if refusal is not None:
            self._refuse(*refusal)
            return None
        length = int(self.headers.get("Content-Length", "0").strip())
        body = self.rfile.read(length) if length else b""
        self._request_read()
        if len(body) < length:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _environ(self, body: bytes) -> dict[str, Any]:
        target = self.path
        if target.startswith(("http://", "https://")):  # absolute form: only its path and query are ours
            parts = urlsplit(target)
            target = parts.path + ("?" + parts.query if parts.query else "")
        path, _, query = target.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command, "SCRIPT_NAME": "", "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query, "SERVER_NAME": str(host), "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version, "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]), "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            if "_" in name:  # CGI folds '-' into '_': a header spelt with '_' could pose as another
                continue
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            elif key != "CONTENT_LENGTH":
                key = "HTTP_" + key
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _answer(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        length = str(len(body))
        for name, value in headers:
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value  # what a GET would carry (RFC 9110 9.3.2)
            elif name.lower() not in HOP_BY_HOP and name.lower() not in ("server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        if self.close_connection:
            self.send_header("Connection", "close")
        elif self.request_version == "HTTP/1.0":  # it asked to keep the connection: say it is kept
            self.send_header("Connection", "keep-alive")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _refuse(self, status: HTTPStatus, why: str) -> None:
        self._request_read()
        self.close_connection = True
        self._answer(f"{status.value} {status.phrase}", [("Content-Type", "text/plain")], why.encode() + b"\n")

    def log_message(self, format: str, *args: Any) -> None:
        """One line per request is noise in the control plane's log; failures are reported
        through report_error."""


class KeepAliveServer(socketserver.ThreadingMixIn, HTTPServer):
    """A thread per connection, each serving its connection's requests one after another; at
    most max_connections of them (see the module's docstring for which one gives way)."""

    daemon_threads = True
    block_on_close = False  # stop() closes the connections; a long poll's thread is not waited for
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 dropped a burst's connections for a 1 s retry (werkzeug: 128)
    request_read_timeout_s: float = REQUEST_READ_TIMEOUT_S  # per server, so that a test can shorten it
    max_connections: int = MAX_CONNECTIONS  # per server, so that a test can lower it

    def __init__(self, address: tuple[str, int], app: WsgiApp,
                 on_error: Callable[[str], None] = lambda message: None) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self._on_error = on_error
        # Each open connection, with the time.monotonic() since which it has waited for a
        # request's first byte, or None while it is in a request. One closed for the cap leaves
        # it at once: its thread ends at its next read, and a new connection takes its place.
        self._open: dict[socket.socket, float | None] = {}
        self._open_lock = threading.Lock()
        self._refusing = False  # a refusal was reported, and no connection taken since
        self.stopped = threading.Event()  # close_connections() was called: no request can be answered

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            taken = len(self._open) < self.max_connections or self._close_longest_idle()
            if taken:
                self._open[request] = time.monotonic()
                report = self._refusing = False
            else:
                report, self._refusing = not self._refusing, True
        if not taken:
            self.shutdown_request(request)
            if report:
                self._on_error(
                    f"refused a connection from {client_address[0]}:{client_address[1]}: all {self.max_connections} "
                    f"open connections (MAX_CONNECTIONS in controlplane/sqs_http.py) are in a request or a long "
                    f"poll. Refusals are not reported again until a connection is taken; clients retry. If this "
                    f"lasts, look for a client holding many connections (ss -tn sport = :{self.server_address[1]}).")
            return
        super().process_request(request, client_address)

    def _close_longest_idle(self) -> bool:
        """Close the open connection idle longest for a new one (the open lock held): whether
        there was one. One whose next request's first byte is here, not yet read by its thread,
        is in that request, not idle. A byte read by its thread in the instant before it says so
        (connection_in_request) is lost with the connection, the race every server closing kept
        connections has: botocore retries a request whose connection closed unanswered (the
        executors' clients make three attempts)."""
        idle = sorted((since, id(connection), connection) for connection, since in self._open.items()
                      if since is not None)
        for _, _, connection in idle:
            if _bytes_arrived(connection):
                continue
            del self._open[connection]
            try:
                connection.shutdown(socket.SHUT_RDWR)  # its thread's read ends; botocore sees it closed
            except OSError:
                pass
            return True
        return False

    def connection_waiting(self, connection: socket.socket) -> bool:
        """CONNECTION waits for its next request's first byte, and may be closed for the cap
        meanwhile: whether it is still open (False: it was closed for the cap)."""
        with self._open_lock:
            if connection not in self._open:
                return False
            if self._open[connection] is None:
                self._open[connection] = time.monotonic()
            return True

    def connection_in_request(self, connection: socket.socket) -> bool:
        """CONNECTION's next request has begun: it is not closed for the cap until answered.
        Whether it is still open (False: closed for the cap as the request's first byte came)."""
        with self._open_lock:
            if connection not in self._open:
                return False
            self._open[connection] = None
            return True

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def report_error(self, method: str, path: str, exc_info: Any) -> None:
        self._on_error(f"{method} {path}: {exc_info[0].__name__}: {exc_info[1]}")

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed outside the application (reset, timed out): it is closed,
        as it would be anyway; nothing to say."""

    def close_connections(self) -> None:
        """Reset every open connection: its thread's next read ends, and its client sees the
        server gone instead of writing into a connection nothing answers. A reset, not a close:
        a closed connection's end stays bound to the port (FIN-WAIT, TIME_WAIT) while its client
        lives, and a program binding the port without SO_REUSEADDR was refused."""
        self.stopped.set()
        with self._open_lock:
            open_now = list(self._open)
        for connection in open_now:
            try:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
