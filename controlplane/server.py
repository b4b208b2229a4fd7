"""The control plane as a running service: store, queues, HTTP server, lost-executor sweeper,
queue outbox, and the look at the queues for runs whose messages leave them unclaimed.

Used by `datahub-executor-admin serve`, by the quickstart and by the tests (through
controlplane/testing.py). Every start leaves a live admin token in <state_dir>/admin-token, mode
0600: the one there while it still authenticates, else a new one (the first start, or the token
there was revoked). It is never printed. A token file others may read is refused, as the
secret key is (secret_cipher.py).
"""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from loguru import logger

from .app import create_app
from .errors import Unauthorized
from .http_guard import is_loopback
from .private_file import NotARegularFile, OthersMayRead, read_private, write_private
from .queues import EmbeddedSqs, QueueServerDidNotStart, Queues
from .service import ControlPlane
from .store import Store
from .tokens import ADMIN
from .upstream.sync import UpstreamConfig, UpstreamSync

SWEEP_INTERVAL_S = 2.0
OUTBOX_RETRY_S = 2.0  # how often sends that failed (the queue service down) are tried again
# How often the pools' queues are looked at for runs whose messages leave them unclaimed
# (lost_messages.py): a dead-lettered run ends within this; each look costs each pool four SQS calls.
QUEUE_LOOK_INTERVAL_S = 30.0
KEEP_ALIVE_S = 75  # longer than the 60 s idle timeout of common proxies and load balancers
LISTEN_BACKLOG = 2048  # uvicorn's default
CHOOSE_API_PORT = " (datahub-executor-admin serve --port)"


@dataclass
class ServerConfig:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    queue: str = "embedded"  # or "aws"
    region: str = "us-east-1"
    sqs_port: int = 0
    default_cli_version: str | None = None  # what /config tells DataHub's UI a recipe runs with
    upstream: UpstreamConfig | None = None  # a DataHub behind this control plane (upstream/)


class StartRefused(RuntimeError):
    """The control plane cannot start here, and the message says why and what to do (one line)."""


class ControlPlaneServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._sqs: EmbeddedSqs | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.port = 0
        self.cp: ControlPlane | None = None
        self.upstream: UpstreamSync | None = None
        self._lock_fd: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def gms_url(self) -> str:
        return self.base_url + "/gms"

    @property
    def admin_token_path(self) -> Path:
        return self.state_dir / "admin-token"

    def start(self) -> None:
        """Raises StartRefused, having started nothing, when another control plane uses this state
        dir or the HTTP port (given, or remembered) has a listener."""
        self._stop.clear()
        self._lock_state_dir()
        try:
            self._start()
        except BaseException:
            self._sqs_stop_quietly()
            if self._listener is not None:
                self._listener.close()  # uvicorn closes it once it has served; before, nobody would
            self._unlock_state_dir()
            raise

    def _start(self) -> None:
        self._sqs = None
        # A port asked for with a listener on it is refused before anything starts. The HTTP socket
        # itself is bound and listening only once the rest is ready, and that socket is the one
        # uvicorn serves: a check at the start and uvicorn's own bind at the end lost the port, now
        # and then, to another process (another test worker) in between, and a socket listening
        # from the start accepted connections that then hung until the control plane was ready.
        # The SQS port is left to moto where no port is asked or remembered, for the same reason;
        # moto's server waits for ever on a port it could not bind (EmbeddedSqs.start bounds that).
        # A remembered port that some other program took meanwhile is given up for a free one (the
        # pools' queue URLs are recorded again below); a port asked for is not.
        if self.config.port:
            self._refuse_taken(self.config.host, self.config.port, "the control plane", CHOOSE_API_PORT)
        kept_token = self._read_admin_token()
        if self.config.queue == "embedded":
            self._sqs = EmbeddedSqs(self._sqs_port())
            try:
                endpoint = self._sqs.start()
            except QueueServerDidNotStart as exc:
                raise StartRefused(str(exc)) from None
            (self.state_dir / "sqs-port").write_text(endpoint.rsplit(":", 1)[1])
            queues = Queues(region=self.config.region, endpoint_url=endpoint, local=True,
                            installation_id=self._installation_id())
        else:
            queues = Queues(region=self.config.region, endpoint_url=None, local=False,
                            installation_id=self._installation_id())
        store = Store(str(self.state_dir / "controlplane.sqlite3"))
        self.cp = ControlPlane(store, queues)
        self._ensure_admin_token(kept_token)
        # The embedded server keeps queues and messages in memory: after a restart, recreate the
        # queues and send every PENDING execution again; a RUNNING one is sent again only should
        # its executor fall silent (decision 68). Real SQS keeps both; creating its queues again
        # is a no-op.
        self.cp.pools.ensure_queues()
        if self.config.queue == "embedded":
            self.cp.executions.forget_queued()
        self.cp.executions.send_pending()
        self._listener = self._listen(self.config.host, self.config.port, "api-port")
        self.port = self._listener.getsockname()[1]
        # Keep-alive well above an executor's heartbeat interval: with uvicorn's default of 5 s a
        # client sending on a connection just as the server closes it gets a reset (seen here).
        self._uvicorn = uvicorn.Server(uvicorn.Config(create_app(self.cp, cli_version=self.config.default_cli_version,
                                                                 threads_gone=self.threads_gone,
                                                                 loopback_only=is_loopback(self.config.host)),
                                                      host=self.config.host, port=self.port,
                                                      log_level="warning", access_log=False,
                                                      timeout_keep_alive=KEEP_ALIVE_S))
        serve = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self._listener]},
                                 name="controlplane-http", daemon=True)
        self.cp.serving()  # no heartbeat could arrive before this
        serve.start()
        sweeper = threading.Thread(target=self._sweep_lost, name="controlplane-sweeper", daemon=True)
        sweeper.start()
        outbox = threading.Thread(target=self._send_pending, name="controlplane-outbox", daemon=True)
        outbox.start()
        looker = threading.Thread(target=self._look_at_queues, name="controlplane-queue-look", daemon=True)
        looker.start()
        self._threads = [serve, sweeper, outbox, looker]
        if self.config.upstream is not None:
            self.upstream = UpstreamSync(self.cp, self.config.upstream)
            self.upstream.attach()
            upstream = threading.Thread(target=self.upstream.run, args=(self._stop,), name="controlplane-upstream",
                                        daemon=True)
            upstream.start()
            self._threads.append(upstream)
            logger.info("upstream mode: runs of DataHub at {} whose executorId names a pool here run here",
                        self.config.upstream.url)
        deadline = time.monotonic() + 10
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not serve.is_alive():
                raise RuntimeError("the control plane's HTTP server did not start")
            time.sleep(0.01)

    def threads_gone(self) -> list[str]:
        """The background threads that ended while the service was not told to stop. Each loop
        catches every Exception, but a BaseException (SystemExit raised by a library, say) still
        ends its thread silently: without the sweep, lost executors' runs are never ended;
        without the outbox, no run reaches a queue; without the queue look, a run whose message
        expires or is dead-lettered waits for good; /health answers 503 naming them."""
        if self._stop.is_set():
            return []
        return [thread.name for thread in self._threads if thread.ident is not None and not thread.is_alive()]

    def _installation_id(self) -> str:
        """Names this control plane's queues apart from any other's in the same account."""
        path = self.state_dir / "installation-id"
        if not path.exists():
            path.write_text(secrets.token_hex(4))
        return path.read_text().strip()

    def _remembered(self, name: str) -> int:
        """Ports are kept across a restart of the same state dir, so clients keep their URLs."""
        try:
            return int((self.state_dir / name).read_text())
        except (OSError, ValueError):
            return 0

    def _listen(self, host: str, asked: int, remembered_in: str) -> socket.socket:
        """A socket listening on ASKED if given (StartRefused when that cannot be), else on the port
        remembered in the state dir's REMEMBERED_IN file while it is free, else on a free one; its
        port is written back there."""
        port = asked or self._remembered(remembered_in)
        listener = None
        if port:
            try:
                listener = _listening_socket(host, port)
            except OSError as exc:
                if asked:
                    raise _port_refused(host, port, "the control plane", _why(exc), CHOOSE_API_PORT) from None
        if listener is None:
            try:
                listener = _listening_socket(host, 0)
            except OSError as exc:  # HOST is no address of this machine's, say
                raise StartRefused(f"cannot listen on {host} for the control plane: {_why(exc)}") from None
        (self.state_dir / remembered_in).write_text(str(listener.getsockname()[1]))
        return listener

    @staticmethod
    def _refuse_taken(host: str, port: int, what: str, how_to_choose: str) -> None:
        problem = _cannot_listen(host, port)
        if problem:
            raise _port_refused(host, port, what, problem, how_to_choose)

    def _sqs_port(self) -> int:
        """The port for the embedded SQS server: the one asked for (StartRefused when something
        listens there), else the remembered one while it is free, else 0 for moto to choose."""
        if self.config.sqs_port:
            self._refuse_taken("127.0.0.1", self.config.sqs_port, "its embedded SQS server", "")
            return self.config.sqs_port
        remembered = self._remembered("sqs-port")
        return remembered if remembered and _cannot_listen("127.0.0.1", remembered) is None else 0

    def _lock_state_dir(self) -> None:
        """One control plane per state dir: a second one would share the database and find its
        remembered ports taken. The lock goes with the process, however it ends."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StartRefused(f"another control plane (pid {holder}) is using {self.state_dir}: stop it first, or give "
                               "this one a state dir of its own (--state-dir)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock_state_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor releases the flock
            self._lock_fd = None

    def _sqs_stop_quietly(self) -> None:
        if self._sqs is not None and self._sqs.endpoint_url is not None:
            try:
                self._sqs.stop()
            except Exception:  # stopping what half started: the original error is the one to show
                pass

    def _read_admin_token(self) -> str | None:
        """The token in the state dir's admin-token file, or None when there is none. Read before
        anything starts: a file that others may read is refused (StartRefused), as the secret key
        is, since the admin token in it, or the one the start would write into it, is theirs too."""
        path = self.admin_token_path
        try:
            content = read_private(path)
        except OSError as exc:
            raise StartRefused(f"the admin token file {path} cannot be read ({exc.strerror})") from None
        except NotARegularFile:
            raise StartRefused(f"the admin token file {path} is not a regular file: remove it, and a new admin "
                               "token is written there at the next start") from None
        except OthersMayRead as refused:
            # In the order that works: `tokens revoke` needs the control plane, which starts only
            # once the mode is right.
            raise StartRefused(f"the admin token file {path} may be read by others (mode {refused.mode:04o}): run "
                               f"chmod 600 {path}; if others did read it, revoke its token once the control plane "
                               "is up (tokens revoke) and restart it: the next start writes a new one") from None
        return None if content is None else content.decode("utf-8", "replace").strip()

    def _ensure_admin_token(self, kept: str | None) -> None:
        """The admin-token file keeps KEPT while it authenticates as an admin token; otherwise (no
        file, or its token revoked: another admin token may remain, and the file, said to hold
        the admin token, would hold a dead one) a new admin token is written there."""
        assert self.cp is not None
        if kept and self._is_admin_token(kept):
            return
        _, token = self.cp.tokens.create("admin", None, "bootstrap admin token")
        if kept:
            logger.warning("the admin token in {} no longer authenticates (revoked?); a new admin token is written "
                           "there", self.admin_token_path)
        write_private(self.admin_token_path, token.encode(), replace=True)

    def _is_admin_token(self, token: str) -> bool:
        assert self.cp is not None
        try:
            return self.cp.tokens.authenticate(f"Bearer {token}").kind == ADMIN
        except Unauthorized:
            return False

    def _sweep_lost(self) -> None:
        while not self._stop.wait(SWEEP_INTERVAL_S):
            try:
                assert self.cp is not None
                self.cp.sweep()
            except Exception:  # a sweep must never take the control plane down; the next one retries
                logger.exception("control plane sweep failed; retrying in {} s", SWEEP_INTERVAL_S)

    def _look_at_queues(self) -> None:
        """Runs whose message is about to expire sent again, and runs whose message was
        dead-lettered ended (lost_messages.py), every QUEUE_LOOK_INTERVAL_S. A thread of its own:
        the look waits on the queue service, which the sweep must never do, and the outbox's
        sends must not wait behind its reads."""
        while not self._stop.wait(QUEUE_LOOK_INTERVAL_S):
            try:
                assert self.cp is not None
                self.cp.lost_messages.check()
            except Exception:  # the database busy, say: the next round retries
                logger.exception("looking at the queues for runs whose messages left them unclaimed failed; retrying "
                                 "in {} s", QUEUE_LOOK_INTERVAL_S)

    def _send_pending(self) -> None:
        """The outbox: PENDING executions sent to their queues, from this thread only, as soon
        as a commit asks (Executions.request_send) and every OUTBOX_RETRY_S for sends that
        failed. A send that hangs holds up only this thread: not the API, not the sweeper."""
        assert self.cp is not None
        while not self._stop.is_set():
            try:
                self.cp.executions.wait_for_send(OUTBOX_RETRY_S)
                if self._stop.is_set():
                    return
                self.cp.executions.send_pending()
            except Exception:  # the database busy, say: the next round retries
                logger.exception("sending PENDING executions to their queues failed; retrying in {} s", OUTBOX_RETRY_S)

    @property
    def sqs_endpoint_url(self) -> str | None:
        return self._sqs.endpoint_url if self._sqs else None

    def stop_queue_server(self) -> None:
        """Stop the embedded SQS server alone, the API staying up. Its queues and messages live in
        this process's memory and are there again after start_queue_server(): an SQS outage, for
        the fault suite and for trying an executor's behaviour by hand."""
        if self._sqs is None:
            raise RuntimeError("this control plane uses real SQS; there is no queue server to stop")
        self._sqs.stop()

    def start_queue_server(self) -> None:
        if self._sqs is None or self._sqs.endpoint_url is None:
            raise RuntimeError("this control plane uses real SQS; there is no queue server to start")
        self._sqs = EmbeddedSqs(int(self._sqs.endpoint_url.rsplit(":", 1)[1]))
        self._sqs.start()

    def stop(self) -> None:
        self._stop.set()
        if self.cp is not None:
            self.cp.executions.request_send()  # wakes the outbox thread, which sees the stop
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        if self._sqs is not None:
            self._sqs.stop()
        if self.cp is not None:
            self.cp.store.close()
        self._unlock_state_dir()


def _listening_socket(host: str, port: int) -> socket.socket:
    """HOST:PORT bound and listening, as uvicorn would make it (SO_REUSEADDR: the previous run's
    connections in TIME_WAIT do not count, a listener does). The protocol is named: asyncio sets
    TCP_NODELAY on accepted connections only when their socket says IPPROTO_TCP, and without it
    every response waited ~40 ms on loopback (Nagle against delayed ACKs)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
    except BaseException:
        listener.close()
        raise
    return listener


def _cannot_listen(host: str, port: int) -> str | None:
    """Why HOST:PORT cannot be listened on, or None. Probed as the queue server binds, with SO_REUSEADDR."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return _why(exc)
    return None


def _port_refused(host: str, port: int, what: str, problem: str, how_to_choose: str) -> StartRefused:
    return StartRefused(f"cannot listen on {host}:{port} for {what}: {problem}; stop what listens there, or choose "
                        f"another port{how_to_choose}")


def _why(exc: OSError) -> str:
    return "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
