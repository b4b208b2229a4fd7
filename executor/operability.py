"""What operators and supervisors see of the master: loguru set-up, sd_notify, /health and
/metrics. Small on purpose: one logger configured once, one tiny HTTP server on loopback."""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .healthcheck import LIVE_PATH, READY_PATH

HUMAN_FORMAT = ("<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <7}</level> | "
                "{extra[execution_id]: <24} | {message}")


def configure_logging(*, json: bool = False, level: str = "INFO") -> None:
    """Once, at start. Every line carries execution_id ('-' for lines not about a task).

    diagnose=False: loguru's default prints the values of every variable in a traceback's
    frames, and a runner's frames hold lease tokens, ingest tokens and resolved secrets.

    The sandbox (usable alone, so on the standard library's logging) writes here too: unhandled,
    its warnings reached stderr bare, in no format and as plain text in a JSON log, through
    logging's last-resort handler. Only its logger: botocore's and urllib3's debug lines quote
    requests and answers, Secrets Manager's values among them."""
    logger.remove()
    logger.configure(extra={"execution_id": "-"})
    if json:
        logger.add(sys.stderr, level=level, serialize=True, diagnose=False)
    else:
        logger.add(sys.stderr, level=level, format=HUMAN_FORMAT, colorize=sys.stderr.isatty(), diagnose=False)
    sandbox_log = logging.getLogger("sandbox")
    sandbox_log.handlers = [_ToLoguru()]
    sandbox_log.setLevel(logging.DEBUG)  # loguru's level decides
    sandbox_log.propagate = False


class _ToLoguru(logging.Handler):
    """A standard library record, as a line of the one logger (loguru's README's InterceptHandler)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = logging.currentframe(), 2
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame, depth = frame.f_back, depth + 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


class SystemdNotifier:
    """sd_notify(3) without libsystemd: one datagram per state; a no-op outside systemd."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        self._address = ("\0" + address[1:]) if address and address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_interval_s = int(usec) / 1e6 / 2 if usec and (not pid or int(pid) == os.getpid()) else None

    def _send(self, message: str) -> None:
        """One datagram; a notification that cannot be sent is lost, said at debug level. The
        socket is made inside the try too: at the open-files limit (EMFILE) making it raised on
        the main thread (ready, watchdog, stopping), which ended the master without a drain."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            logger.debug("sd_notify failed: {}", exc)

    def ready(self) -> None:
        self._send("READY=1\nSTATUS=consuming tasks")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def starting(self, text: str, needs_s: float) -> None:
        """Still starting, for NEEDS_S more at least (EXTEND_TIMEOUT_USEC, systemd 236+): the
        start waits for the control plane as long as it takes, and under Type=notify systemd's
        start timeout (90 s by default) killed it and restarted it in a loop while DataHub was
        unreachable, `systemctl start` failing each time. Sent at each wait of the start."""
        self._send(f"STATUS={text}\nEXTEND_TIMEOUT_USEC={int(needs_s * 1_000_000)}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self, needs_s: float | None = None) -> None:
        """Stopping; with NEEDS_S, ask for that long before systemd's stop timeout may end it
        (EXTEND_TIMEOUT_USEC, systemd 236+; it never shortens TimeoutStopSec=): the unit's
        timeout is written in the unit, where a longer drain set in the environment file
        cannot reach it."""
        extend = f"\nEXTEND_TIMEOUT_USEC={int(needs_s * 1_000_000)}" if needs_s else ""
        self._send(f"STOPPING=1\nSTATUS=draining{extend}")


class ExecutorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tasks = Counter("datahub_executor_tasks", "Tasks finished, by outcome", ["task", "status", "reason"],
                             registry=self.registry)
        self.ledger_used = Gauge("datahub_executor_ledger_used_weight", "Weight in use per task class", ["task_class"],
                                 registry=self.registry)
        self.running = Gauge("datahub_executor_running_tasks", "Running tasks per task class", ["task_class"],
                             registry=self.registry)
        self.receive_latency = Histogram("datahub_executor_sqs_receive_seconds", "Duration of SQS receive calls",
                                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 20, 25), registry=self.registry)
        self.peak_memory = Histogram("datahub_executor_task_peak_memory_bytes", "Peak memory of finished tasks",
                                     buckets=tuple(2**n for n in range(24, 36)), registry=self.registry)

    def task_finished(self, task: str, status: str, reason: str | None, peak_memory_bytes: int | None) -> None:
        self.tasks.labels(task, status, reason or "").inc()
        if peak_memory_bytes:
            self.peak_memory.observe(peak_memory_bytes)

    def set_ledger(self, snapshot) -> None:
        """From a Ledger.snapshot()."""
        self.ledger_used.labels(snapshot.task_class).set(float(snapshot.used))
        self.running.labels(snapshot.task_class).set(snapshot.running)


# Connections the health server serves at once, and how long one may sit idle. Tasks share the
# master's network, so a task can connect: each connection held a thread and a descriptor of the
# master with no bound, and a task holding a thousand ran the master out of descriptors (its
# reaper then could not read a task's cgroup; see sandbox/cgroupfs.read_pids). Probes and a
# Prometheus scrape need a few; more are closed unanswered.
HEALTH_CONNECTIONS = 8
HEALTH_IDLE_S = 5.0


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that serves at most HEALTH_CONNECTIONS connections at once."""

    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        self._slots = threading.BoundedSemaphore(HEALTH_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # closed unanswered: the others hold every slot
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _BoundedHTTPServerV6(_BoundedHTTPServer):
    """An IPv6 address to bind (an IPv6-only cluster's pods); `::` takes IPv4 too where the
    system's bindv6only is 0, as on Linux by default."""

    address_family = socket.AF_INET6


class HealthServer:
    """/health: 200 while the executor takes work, 503 with the reason otherwise (readiness);
    /health/live: 200 while its loops turn, whatever it may take (liveness: what a restart
    would mend; a refused token is not, and a liveness probe on /health killed the running tasks
    of an executor whose token was revoked, and then every restart again); /metrics: Prometheus."""

    def __init__(self, host: str, port: int, metrics: ExecutorMetrics, health: Callable[[], tuple[bool, str]],
                 live: Callable[[], tuple[bool, str]] | None = None) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = HEALTH_IDLE_S  # a connection that sends nothing is closed, its slot freed

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path in (READY_PATH, LIVE_PATH):
                    ok, reason = outer.health() if self.path == READY_PATH else outer.live()
                    body = json.dumps({"ok": ok, "reason": reason}).encode()
                    status, kind = (200 if ok else 503), "application/json"
                elif self.path == "/metrics":
                    body, status, kind = generate_latest(outer.metrics.registry), 200, CONTENT_TYPE_LATEST
                else:
                    body, status, kind = b"not found", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.metrics = metrics
        self.health = health
        self.live = live or health
        self._server = (_BoundedHTTPServerV6 if ":" in host else _BoundedHTTPServer)((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="health-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
