"""The master's life cycle, top to bottom: start, register, consume, drain, stop.

The main thread runs this loop and is the only thread that starts children (the sandbox's
parent-death signal is thread-scoped). Other threads: the heartbeat, the visibility extender,
one supervisor per task, and the health server.
"""
from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from loguru import logger

from sandbox import Sandbox, SandboxError

from . import __version__
from .consumer import SqsConsumer, TaskMessage
from .controlplane_client import ControlPlaneClient, ControlPlaneError, retry_through_outages
from vocabulary.weights import InvalidWeight, parse_weight

from .ledger import Ledger
from .log_upload import LogUploader
from .operability import ExecutorMetrics, HealthServer, SystemdNotifier
from .runtime.rejection import TaskRejected
from .runtime.secrets import AwsSecretsManagerStore, ChainedSecretStore, EnvSecretStore, FileSecretStore
from .runtime.tasks import prepare_task, task_class
from .runtime.venvs import VenvCache
from .settings import SETTINGS, Settings
from .task_supervisor import LaunchRequest, TaskSupervisor

LOOP_STALL_S = 60.0
KEEP_TASK_LOGS = 200


class Master:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = "STARTING"
        self.started_at = datetime.now(timezone.utc).isoformat()
        self.client = ControlPlaneClient(settings.gms_url, settings.gms_token)
        self.ledgers = {"ingestion": Ledger("ingestion", settings.ingestion_max_workers),
                        "monitors": Ledger("monitors", settings.monitors_max_workers)}
        self.metrics = ExecutorMetrics()
        self.notifier = SystemdNotifier()
        self.venvs = VenvCache(settings.venv_cache_dir, index_url=settings.pip_index_url)
        self.logs = LogUploader(self.client, bucket=settings.log_s3_bucket, pool_id=settings.pool_id)
        self.work_dir = Path(settings.work_dir)
        self._stopping = threading.Event()
        self._launches: queue.Queue[LaunchRequest | None] = queue.Queue()  # None: wake-up
        self._lock = threading.Lock()
        self._log_prune_lock = threading.Lock()
        self._supervisors: dict[str, TaskSupervisor] = {}
        self._messages: dict[str, TaskMessage] = {}  # every message we hold: waiting or running
        self._last_loop = time.monotonic()
        self.sandbox: Sandbox | None = None
        self.consumer: SqsConsumer | None = None
        self.health_server: HealthServer | None = None

    # life cycle -------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        self._start()
        logger.info("Starting datahub executor worker")
        self.notifier.ready()
        while not self._stopping.is_set():
            self._loop_once()
        self._drain()
        return 0

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            logger.info("stop requested: no new tasks; draining")
            self._stopping.set()

    def _start(self) -> None:
        s = self.settings
        for sub in ("executions", "logs"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        self.sandbox = Sandbox.open(s.cgroup_root, mode=s.sandbox_mode)
        if self.sandbox.mode == "none":
            logger.warning("sandbox mode none: no writable cgroup filesystem here, so task memory is watched (RSS, "
                           "polled) instead of enforced by the kernel, and pids and cpu are not capped; "
                           "docs/operations.md says how to get cgroups")
        else:
            logger.info("sandbox mode {}: tasks run in cgroups below {}", self.sandbox.mode, s.cgroup_root)
        swept = self.sandbox.sweep()
        if swept:
            logger.warning("killed {} task(s) left by a previous run of this executor: {}", len(swept), ", ".join(swept))
        self.health_server = HealthServer(*s.health_address, self.metrics, self.health)
        self.health_server.start()
        self.pool = self._until_ok("pool lookup", lambda: self.client.pool_queue(s.pool_id))
        endpoint = s.sqs_endpoint_url or self.pool.get("endpoint_url")
        self.consumer = SqsConsumer(self.pool["queue_url"], region=self.pool.get("region") or "us-east-1",
                                    endpoint_url=endpoint, visibility_timeout_s=int(self.pool["visibility_timeout_s"]),
                                    local_credentials=bool(self.pool.get("endpoint_url")))
        self._until_ok("registration", self._heartbeat_once)
        self.state = "ACTIVE"
        self._heartbeat_safely()  # a failure here is the heartbeat loop's to retry, not a crash
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._visibility_loop, "visibility")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def _until_ok(self, what: str, call):
        try:
            return retry_through_outages(call, stop=self._stopping, what=what)
        except ControlPlaneError as exc:
            if exc.final:
                raise SystemExit(f"{what} refused by the control plane: {exc}") from None
            raise SystemExit(0) from None  # stopped before the control plane came back

    def _loop_once(self) -> None:
        self._last_loop = time.monotonic()
        self._serve_launches(wait_s=0)
        self._admit()
        capacity = min(ledger.receive_capacity() for ledger in self.ledgers.values())
        if capacity <= 0 or self._launches.qsize() or self._preparing():
            self._serve_launches(wait_s=1.0)
            return
        # Long poll while idle; short polls while a task is being prepared, so its launch waits little.
        started = time.monotonic()
        try:
            messages = self.consumer.receive(capacity, wait_s=20 if not self._supervisors else 2)
        except Exception as exc:  # botocore: endpoint down, throttled, credentials
            self._queue_outage(exc)
            self._stopping.wait(2.0)
            return
        self._queue_outage(None)
        self.metrics.receive_latency.observe(time.monotonic() - started)
        for message in messages:
            self._offer(message)

    _queue_down = False

    def _queue_outage(self, exc: Exception | None) -> None:
        if exc is not None and not self._queue_down:
            logger.warning("SQS unreachable ({}); retrying", type(exc).__name__)
        elif exc is None and self._queue_down:
            logger.info("SQS reachable again")
        self._queue_down = exc is not None

    def _preparing(self) -> bool:
        """A supervisor is still claiming or preparing and will ask for a launch soon. One whose
        request is already queued is not: waiting for it blocked receives for a second."""
        return any(s.process is None and not s.launch_requested for s in self._supervisors.values())

    def _offer(self, message: TaskMessage) -> None:
        log = logger.bind(execution_id=message.execution_id)
        with self._lock:
            held = self._messages.get(message.execution_id)
            if held is not None and held.message_id == message.message_id:
                # Our own message came back (its visibility lapsed): only the latest receipt
                # handle is sure to delete it, so carry on with that one.
                held.receipt_handle = message.receipt_handle
                held.receive_count = message.receive_count
        if held is not None:
            if held.message_id != message.message_id:
                log.info("second message for an execution this executor holds: duplicate delivery, deleting the message")
                self._delete_message_now(message)
            return
        try:
            ledger = self.ledgers[task_class(message.task)]
            weight = parse_weight(None if message.weight is None else str(message.weight), ledger.default_weight)
        except (TaskRejected, InvalidWeight) as exc:
            log.error("message {} refused: {}", message.message_id, exc)
            self._fail_unstartable(message, getattr(exc, "reason", "INVALID_WEIGHT"), str(exc))
            return
        with self._lock:
            self._messages[message.execution_id] = message
        ledger.offer(message.execution_id, weight, message)
        log.debug("received {} (weight {}, receive count {})", message.task, weight, message.receive_count)

    def _fail_unstartable(self, message: TaskMessage, reason: str, text: str) -> None:
        """A task that can never start (unknown type, bad weight): report it, then delete."""
        try:
            if self.client.claim(message.execution_id, self.settings.executor_id, message.receive_count) is not None:
                self.client.result(message.execution_id, {"executor_id": self.settings.executor_id, "status": "FAILURE",
                                                          "reason": reason, "log_tail": text})
            self.consumer.delete(message)
        except ControlPlaneError as exc:
            logger.warning("could not report refused message {} ({}); it will be redelivered", message.message_id, exc)

    def _admit(self) -> None:
        for ledger in self.ledgers.values():
            for admitted in ledger.admit():
                supervisor = TaskSupervisor(
                    message=admitted.item, settings=self.settings, client=self.client, prepare=self._prepare_for(admitted.key),
                    launch=self._launches.put, finished=self._on_finished, task_log_path=self._task_log_path,
                    delete_message=self._delete_message, return_message=self._return_message,
                    record_outcome=self.metrics.task_finished, logs=self.logs)
                with self._lock:
                    self._supervisors[admitted.key] = supervisor
                supervisor.start()
            self.metrics.set_ledger(ledger.task_class, float(ledger.used), ledger.running)

    def _prepare_for(self, execution_id: str):
        def prepare(task: str, args: dict):
            return prepare_task(task, args, execution_id=execution_id, secrets=self._secret_store(), venvs=self.venvs,
                                work_root=str(self.work_dir), default_version=self.settings.default_cli_version)
        return prepare

    def _secret_store(self) -> ChainedSecretStore:
        s = self.settings
        reserved = {setting.env for setting in SETTINGS} | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
        stores = [FileSecretStore(s.file_secret_basedir, s.file_secret_maxlen), EnvSecretStore(os.environ, reserved)]
        if s.aws_secrets_manager:
            import boto3

            stores.append(AwsSecretsManagerStore(boto3.client("secretsmanager")))
        return ChainedSecretStore(stores)

    def _serve_launches(self, wait_s: float) -> None:
        """Start every task whose supervisor asked; only this (main) thread forks children.
        Waits up to WAIT_S for a first request, then serves what is queued and returns at once:
        lingering for the rest of the wait after a launch held the next receive back ~1 s
        (found by bench/peers.py: enqueue -> child start went from ~450 ms to ~40 ms)."""
        deadline = time.monotonic() + wait_s
        served = False
        while True:
            try:
                if wait_s and not served:
                    request = self._launches.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    request = self._launches.get_nowait()
            except queue.Empty:
                return
            served = True
            if request is None:  # a task finished: capacity to receive again, stop waiting
                continue
            if self._stopping.is_set():
                request.future.set_exception(RuntimeError("executor is stopping"))
                continue
            try:
                process = self.sandbox.start(request.argv, request.limits, name=request.execution_id, env=request.env,
                                             cwd=request.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT)
            except SandboxError as exc:
                request.future.set_exception(exc)
            else:
                request.future.set_result(process)

    def _on_finished(self, supervisor: TaskSupervisor) -> None:
        with self._lock:
            self._supervisors.pop(supervisor.execution_id, None)
            self._messages.pop(supervisor.execution_id, None)
        ledger = self.ledgers[task_class(supervisor.message.task)]
        ledger.release(supervisor.execution_id)
        # Wake the main loop if it waits on launches because every slot was taken: without this it
        # noticed the freed slot only at the end of its 1 s wait (4.7 trivial tasks/s with 4 workers).
        self._launches.put(None)
        self.metrics.set_ledger(ledger.task_class, float(ledger.used), ledger.running)

    def _delete_message(self, message: TaskMessage) -> None:
        with self._lock:
            current = self._messages.get(message.execution_id, message)
        try:
            self.consumer.delete(current)
        except Exception as exc:
            logger.bind(execution_id=message.execution_id).warning("message not deleted ({}); a redelivery will be "
                                                                   "recognised as a duplicate by claim", type(exc).__name__)

    def _delete_message_now(self, message: TaskMessage) -> None:
        try:
            self.consumer.delete(message)
        except Exception as exc:
            logger.bind(execution_id=message.execution_id).warning("duplicate message not deleted ({})", type(exc).__name__)

    def _return_message(self, message: TaskMessage) -> None:
        try:
            self.consumer.return_now(message)
        except Exception as exc:
            logger.bind(execution_id=message.execution_id).warning("message not returned ({})", type(exc).__name__)

    def _task_log_path(self, execution_id: str) -> str:
        """The task's log file, after pruning all but the newest KEEP_TASK_LOGS. Supervisors call
        this concurrently: pruning is serialised, a file another pass removed is skipped, and the
        logs of tasks this executor holds are never removed. (Without that, a fast stream of tasks
        made one supervisor stat a file another had just deleted: FileNotFoundError after the
        claim, and the task waited a visibility timeout for its redelivery. bench/peers.py hit it.)"""
        with self._log_prune_lock:
            with self._lock:
                held = set(self._messages)
            dated = []
            for path in (self.work_dir / "logs").glob("*.log"):
                try:
                    dated.append((path.stat().st_mtime, path))
                except FileNotFoundError:
                    continue
            dated.sort()
            for _, old in dated[:-KEEP_TASK_LOGS]:
                if old.stem not in held:
                    old.unlink(missing_ok=True)
        return str(self.work_dir / "logs" / f"{execution_id}.log")

    def _drain(self) -> None:
        self.state = "DRAINING"
        self.notifier.stopping()
        self._heartbeat_safely()
        for ledger in self.ledgers.values():
            for key, message in ledger.waiting_items():
                ledger.withdraw(key)
                self._return_message(message)
                with self._lock:
                    self._messages.pop(key, None)
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while self._supervisors and time.monotonic() < deadline:
            self._serve_launches(wait_s=0.2)
        for supervisor in list(self._supervisors.values()):
            supervisor.log.warning("drain timeout: killing the task, reporting ABORTED")
            supervisor.stopping.set()
            supervisor.abort()
        for supervisor in list(self._supervisors.values()):
            supervisor.join(timeout=60)
        self.state = "STOPPED"
        self._heartbeat_safely()
        if self.health_server:
            self.health_server.stop()
        self.sandbox.close()
        logger.info("executor stopped")

    # heartbeat, visibility, health ----------------------------------------------------------------
    def heartbeat_body(self) -> dict:
        capacity = {name: {"max_workers": l.max_workers, "used_weight": float(l.used), "running": l.running,
                           "waiting": l.waiting} for name, l in self.ledgers.items()}
        return {"hostname": socket.gethostname(), "version": __version__, "started_at": self.started_at,
                "state": self.state, "heartbeat_interval_s": self.settings.heartbeat_interval_s,
                "sandbox": {"mode": self.sandbox.mode if self.sandbox else None,
                            "master_oom_protected": bool(self.sandbox and self.sandbox.master_oom_protected)},
                "capacity": capacity, "running_executions": sorted(self._supervisors),
                "health": {"control_plane": "ok" if self.client.reachable else "unreachable",
                           "sqs": "unreachable" if self._queue_down else "ok",
                           "poll_loop": "ok" if self.health()[0] else "stalled"}}

    def _heartbeat_once(self) -> dict:
        return self.client.heartbeat(self.settings.pool_id, self.settings.executor_id, self.heartbeat_body())

    def _heartbeat_safely(self) -> None:
        try:
            self._heartbeat_once()
        except ControlPlaneError:
            pass

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval_s
        watchdog = self.notifier.watchdog_interval_s
        next_beat = time.monotonic() + interval
        while self.state not in ("STOPPED",):
            if watchdog and self.health()[0]:
                self.notifier.watchdog()
            if time.monotonic() >= next_beat:
                self._heartbeat_safely()
                next_beat = time.monotonic() + interval
                self.notifier.status(f"{self.state}: " + ", ".join(
                    f"{n} {float(l.used):.2f} used" for n, l in self.ledgers.items()))
            time.sleep(min(watchdog or interval, interval, 1.0))

    def _visibility_loop(self) -> None:
        """Extend every held message well before it lapses: a third of the timeout, at most."""
        period = max(1.0, self.consumer.visibility_timeout_s / 3)
        while self.state != "STOPPED":
            time.sleep(period)
            with self._lock:
                held = list(self._messages.values())
            if not held:
                continue
            try:
                failed = self.consumer.extend(held, int(time.time() * 1000))
            except Exception as exc:
                self._queue_outage(exc)
                continue
            for execution_id in failed:
                logger.bind(execution_id=execution_id).warning("visibility not extended: SQS refused the receipt")

    def health(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self._last_loop
        if self.state in ("STARTING", "ACTIVE") and stalled > LOOP_STALL_S and not self._stopping.is_set():
            return False, f"poll loop stalled for {stalled:.0f}s"
        return True, self.state
