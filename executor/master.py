"""The master's life cycle, top to bottom: start, register, consume, drain, stop.

The main thread runs this and only this: it starts the services, then waits for a stop
(SIGTERM/SIGINT/SIGHUP, or a service asking), drains, and stops. Work happens on other threads: one
intake per queue (ingestion, monitors) receives what its ledger can admit and starts a runner
per message; each runner (runner.py) carries its execution from claim to recorded result; the
acknowledger (acks.py) deletes the messages of recorded results, ten to a call; it, the
heartbeat and the visibility extender read the leases (leases.py), which are the only record
of what this process holds. Children are started by the sandbox's own spawner thread, from any
runner.

Signals only set a flag and wake the main thread (a self-pipe): the first SIGTERM, SIGINT or
SIGHUP starts the drain (no new work, unstarted work given back, running tasks get the drain
timeout); a second one kills running tasks at once, which are still reported (ABORTED,
EXECUTOR_SHUTDOWN) if the control plane takes the reports within SECOND_SIGNAL_REPORT_S; the
process then exits whether it did or not (decision 60). SIGHUP is a stop because there is no
configuration to reload (settings are read once, at start), and its default action killed the
master outright. SIGUSR1 and SIGUSR2, which the image's init forwards as tini does, mean nothing
here and change nothing.
"""
from __future__ import annotations

import errno
import os
import resource
import secrets
import select
import shutil
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from loguru import logger

if TYPE_CHECKING:
    import loguru

from sandbox import Sandbox, SandboxError, TaskUser
from sandbox.driver import TASK_PREFIX
from vocabulary.tasks import INGESTION, MONITORS

from .acks import Acknowledger
from .consumer import Received, SqsConsumer
from .controlplane_client import (Claimed, ControlPlaneClient, ControlPlaneError, pool_lookup_fix,
                                  retry_through_outages)
from .credentials import REFUSING, Credentials
from .isolation import TaskUserError, resolve_task_user
from .leases import Lease, Leases, QueueRef, State
from .ledger import Ledger, StopFlag
from .log_upload import LogUploader
from .operability import ExecutorMetrics, HealthServer, SystemdNotifier
from .runner import RunnerServices, TaskRunner
from .runtime import network_env
from .runtime.builds import ConfinedBuilder
from .runtime.secrets import (AwsSecretsManagerStore, ChainedSecretStore, EnvSecretStore, FileSecretStore,
                              ProvidedSecretStore)
from .runtime.task_log import TaskLogDirectory
from .runtime.rejection import TaskRejected
from .runtime.tasks import prepare_task, work_dir_of
from .runtime.venvs import VenvCache
from .services import CancelWatch, ExecutorIdInUse, Heartbeat, Intake, Loop, OutageLog, VisibilityExtender
from .settings import SETTINGS, Settings
from .text import printable
from .undumpable import make_undumpable

LOOP_STALL_S = 60.0
FINAL_HEARTBEAT_TIMEOUT_S = 5.0
RUNNER_JOIN_S = 60.0
SQS_DOWN_UNREADY_S = 10.0  # readiness fails once SQS has not answered for this long (a blip is not an outage)
ACKS_JOIN_S = 10.0  # a delete in flight at stop: bounded, as the stop must be
ACKS_LOOP = "acks"
POOL_LOOKUP = "pool lookup"  # the start step whose refusal is said with its fix (pool_lookup_fix)
# After a second stop signal: how long the killed tasks' reports may take before the process exits
# without them. Time for a few retries through a brief outage; an operator who pressed Ctrl-C twice
# does not wait out a long one (decision 60).
SECOND_SIGNAL_REPORT_S = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Caught by a handler that does nothing, not ignored (SIG_IGN): an ignored signal stays ignored
# across fork and exec in every task and build the sandbox starts; a caught one is reset there.
UNUSED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
# What a stop needs beyond the drain timeout: kill what still runs, report it, exit (the unit's
# TimeoutStopSec=360 is the default drain and this).
STOP_REPORT_S = 60.0
# What each wait of the start asks of systemd beyond the wait itself: the next attempt's call
# (one try of the start client, a connection and a read timeout) and some slack.
START_EXTEND_S = 60.0


class Master:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = "STARTING"
        self.started_at = datetime.now(timezone.utc).isoformat()
        self.instance_id = secrets.token_hex(8)
        self.client = ControlPlaneClient(settings.gms_url, settings.gms_token)
        # The last heartbeat (STOPPED) gets one try of a few seconds: a control plane that does not
        # answer must not hold a stopping executor past its supervisor's grace period (ECS: 30 s),
        # and the control plane judges a silent executor by its heartbeats anyway.
        self.final_client = ControlPlaneClient(settings.gms_url, settings.gms_token, retries=0,
                                               timeout_s=FINAL_HEARTBEAT_TIMEOUT_S)
        # At start, each call is one try (the client's one-try sibling, also the log's before a
        # result): _until_ok retries with waits a stop signal cuts short, where the HTTP layer's
        # own retries (~8 s) would keep a SIGTERM waiting.
        self.start_client = self.client.quick()
        self.ledgers = {task_class: Ledger(task_class, size) for task_class, size in settings.tasks_at_once().items()}
        self.leases = Leases()
        self.metrics = ExecutorMetrics()
        for ledger in self.ledgers.values():  # /metrics shows each ledger from the start, empty
            self.metrics.set_ledger(ledger.snapshot())
        self.notifier = SystemdNotifier()
        self.work_dir = Path(settings.work_dir)
        self.stopping = threading.Event()
        self.kill_now = threading.Event()
        self.outage = OutageLog()
        # Whether the control plane takes our token: while it refuses it, nothing is received
        # (credentials.py). The probe reads our own pool, which any working token for it may.
        self.credentials = Credentials(lambda: self.client.pool(settings.pool_id), what=(
            f"set DATAHUB_GMS_TOKEN to a Remote Executor token the control plane knows, scoped to pool "
            f"{settings.pool_id}, and restart the executor"))
        self._signals = 0  # stop signals received; written only by the handler (the main thread)
        self._stop_requested = False  # a stop asked for by another thread (request_stop)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._threads: list[threading.Thread] = []
        self._runners: list[TaskRunner] = []  # started runners; both intake threads add to it
        self._runners_lock = threading.Lock()
        # Messages an intake is giving back, no runner taking them (_offer): the drain waits for them too.
        self._giving_back = 0
        self._last_loop = time.monotonic()
        self._start_step = "opening the sandbox"  # what the start is doing: /health names it
        self._next_beat = 0.0  # when the heartbeat thread beats next (time.monotonic())
        self._heartbeat_refusal: str | None = None  # the refusal last logged, until a beat is taken again
        self.sandbox: Sandbox | None = None
        self.health_server: HealthServer | None = None
        self.heartbeat: Heartbeat | None = None
        self.acks: Acknowledger | None = None
        self.services: RunnerServices | None = None

    # life cycle -------------------------------------------------------------------------------
    def run(self) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        for signum in UNUSED_SIGNALS:
            signal.signal(signum, _unused_signal)
        try:
            self._start()
        except ExecutorIdInUse as exc:
            logger.error("refused by the control plane: {}", exc)
            self._close()
            return 2
        except BaseException:  # stopped, or refused, before it could start: leave no cgroup root behind
            self._close()
            raise
        logger.info("Starting datahub executor worker")
        self.notifier.ready()
        abandoned = self._wait_and_drain()
        self._stop(abandoned)
        return 1 if abandoned else 0

    def _on_signal(self, signum: int, frame: object) -> None:
        """Async-signal-safe: count, and wake the main thread. No logging, no locks."""
        self._signals += 1
        try:
            os.write(self._wake_w, b"s")
        except OSError:
            pass

    def request_stop(self) -> None:
        """From any thread: stop as a first SIGTERM would."""
        self._stop_requested = True  # its own flag: a read-modify-write of _signals could lose a SIGTERM
        try:
            os.write(self._wake_w, b"r")
        except OSError:
            pass

    def _start(self) -> None:
        s = self.settings
        raise_open_files_limit()
        try:
            (self.work_dir / "executions").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._refuse_start(f"DATAHUB_EXECUTOR_WORK_DIR {s.work_dir} cannot be created or written "
                               f"({exc.strerror}: {exc.filename}): make it writable by the executor's user, or set "
                               "DATAHUB_EXECUTOR_WORK_DIR to a directory that is (under systemd, in ReadWritePaths=)")
        try:
            self.sandbox = Sandbox.open(s.cgroup_root, mode=s.sandbox_mode)
        except SandboxError as exc:
            self._refuse_start(
                f"DATAHUB_EXECUTOR_SANDBOX_MODE={s.sandbox_mode} is not available on this host: {exc}; or set "
                "DATAHUB_EXECUTOR_SANDBOX_MODE=auto to use what it offers (docs/operations.md, \"Containers and "
                "cgroups\")" if s.sandbox_mode != "auto" else
                f"the sandbox cannot be opened below DATAHUB_EXECUTOR_CGROUP_ROOT {s.cgroup_root} ({exc})")
        if self.sandbox.mode == "none":
            logger.warning("sandbox mode none: no writable cgroup filesystem here, so task memory is watched (RSS, "
                           "polled) instead of enforced by the kernel, and pids and cpu are not capped; "
                           "docs/operations.md says how to get cgroups")
        else:
            logger.info("sandbox mode {}: tasks run in cgroups below {}", self.sandbox.mode, s.cgroup_root)
        self._start_step = "killing the tasks a previous run left"
        swept = self.sandbox.sweep()
        if swept:
            logger.warning("killed {} task(s) left by a previous run of this executor: {}", len(swept), ", ".join(swept))
            self._remove_work_dirs_of(swept)
        self.dumpable = not make_undumpable()
        try:
            self.task_identity = resolve_task_user(s.task_user, self.sandbox, s.tasks_at_once())
        except TaskUserError as exc:
            self._refuse_start(str(exc))
        support = self.sandbox.isolation_support()
        self.private_tmp = s.task_private_tmp and support["private_tmp"].startswith("available")
        logger.info("isolation: {}; private /tmp per task: {}; this process's memory and environment: {}",
                    self.task_identity.description,
                    "yes" if self.private_tmp else ("off" if not s.task_private_tmp else support["private_tmp"]),
                    "readable by root only (not dumpable)" if not self.dumpable else "dumpable (prctl refused)")
        try:
            self.health_server = HealthServer(*s.health_address, self.metrics, self.health, self.alive)
        except OSError as exc:
            host, port = s.health_address
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            self._refuse_start(
                f"DATAHUB_EXECUTOR_HEALTH_ADDRESS {address} is in use (a second executor on this host?): give this "
                "executor an address of its own, or stop what listens there" if exc.errno == errno.EADDRINUSE else
                f"DATAHUB_EXECUTOR_HEALTH_ADDRESS {address} cannot be bound ({exc.strerror or exc}): set it to an "
                "address of this host")
        self.health_server.start()
        secret_store = self._secret_store()  # before the first call: what it refuses is judged here, at once
        pool = self._until_ok(POOL_LOOKUP, lambda: self.start_client.pool(s.pool_id))
        endpoint = s.sqs_endpoint_url or pool.endpoint_url
        visibility = pool.visibility_timeout_s or s.visibility_timeout_s
        consumers = {task_class: SqsConsumer(url, task_class, region=pool.region, endpoint_url=endpoint,
                                             visibility_timeout_s=visibility, local_credentials=bool(pool.endpoint_url))
                     for task_class, url in ((INGESTION, pool.ingestion_queue_url), (MONITORS, pool.monitors_queue_url))}
        self.acks = Acknowledger(consumers, self.leases)
        logs = LogUploader(self.client, bucket=s.log_s3_bucket, pool_id=s.pool_id)
        venvs = VenvCache(s.venv_cache_dir, index_url=s.pip_index_url, python=s.task_python or sys.executable,
                          builder=ConfinedBuilder(self.sandbox, self.stopping), network=network_env.for_builds(os.environ),
                          stopping=self.stopping)
        task_network = network_env.for_tasks(os.environ)

        def prepare(claimed: Claimed, user: TaskUser | None, stop: StopFlag):
            stores = secret_store
            if claimed.secrets:
                stores = ChainedSecretStore([*secret_store.stores, ProvidedSecretStore(claimed.secrets)])
            return prepare_task(claimed.task, claimed.args, execution_id=claimed.execution_id, secrets=stores,
                                venvs=venvs, work_root=str(self.work_dir), default_version=s.default_cli_version,
                                gms_url=claimed.sink_server or s.gms_url,
                                ingest_token=claimed.sink_token or claimed.ingest_token, user=user,
                                network=task_network, stop=stop)

        self.services = RunnerServices(
            settings=s, client=self.client, consumers=consumers, acks=self.acks, ledgers=self.ledgers, leases=self.leases,
            sandbox=self.sandbox, prepare=prepare, logs=logs,
            task_logs=TaskLogDirectory(str(self.work_dir / "logs"), held=self.leases.claimed_ids),
            metrics=self.metrics, instance_id=self.instance_id, task_users=self.task_identity.users, private_tmp=self.private_tmp,
            stopping=self.stopping, kill_now=self.kill_now, credentials=self.credentials)
        self.heartbeat = Heartbeat(client=self.client, executor_id=s.executor_id, instance_id=self.instance_id,
                                   pool_id=s.pool_id, interval_s=s.heartbeat_interval_s, leases=self.leases,
                                   ledgers=self.ledgers, state=lambda: self.state, sandbox=self._sandbox_report,
                                   health=self._dependency_health, log_delivery=bool(s.log_s3_bucket),
                                   started_at=self.started_at, gms_url=s.gms_url)
        self._register()
        self._last_loop = time.monotonic()  # the main loop's first turn is next: a slow start is no stall
        self.state = "ACTIVE"
        self._beat_safely()
        stop_loops = threading.Event()
        self._stop_loops = stop_loops
        self._threads = [Loop(f"intake-{task_class}", Intake(consumer, self.ledgers[task_class], self.leases,
                                                             self._offer, self.stopping, self.outage,
                                                             metrics=self.metrics, credentials=self.credentials).step,
                              self.stopping)
                         for task_class, consumer in consumers.items()]
        self._threads.append(Loop(ACKS_LOOP, self.acks.step, stop_loops))
        self._threads.append(Loop("heartbeat", self._heartbeat_step, stop_loops))
        self._threads.append(Loop("visibility", VisibilityExtender(consumers, self.leases, self.outage).step, stop_loops))
        # One quick try a turn: a control plane that does not answer must not hold the loop.
        self._threads.append(Loop("cancels", CancelWatch(self.client.quick(), self.leases, self._wake_ledgers,
                                                         self.settings.progress_interval_s).step, stop_loops))
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _refuse_start(why: str) -> NoReturn:
        """One line and exit 2, as a settings error: an operator reads the cause, not a traceback
        from the line that hit it. (run() closes what was opened.)"""
        logger.error("cannot start: {}", why)
        raise SystemExit(2)

    def _register(self) -> None:
        """The first heartbeat. A 409 means another live process heartbeats with this executor id:
        after a crash and a quick restart under a fixed DATAHUB_EXECUTOR_ID that is our own previous
        process, which goes silent within three heartbeat intervals, so we wait a while for it;
        a second process that really runs refuses us for longer, and we exit saying so."""
        deadline = time.monotonic() + max(30.0, 10 * self.settings.heartbeat_interval_s)
        said = False
        while True:
            try:
                self._until_ok("registration", lambda: self.heartbeat.beat(self.start_client))
                return
            except ExecutorIdInUse as exc:
                if time.monotonic() > deadline or self._signals:
                    raise
                if not said:
                    logger.warning("{}; waiting for that process to go silent (a restart under a fixed id)", exc)
                    said = True
                _SignalWait(self).wait(min(2.0, self.settings.heartbeat_interval_s))

    def _until_ok(self, what: str, call):
        """CALL (to the control plane, at start) until it answers; a stop signal ends the wait at
        once, not after the next attempt: each attempt is one try (the start client), made on a
        thread of its own while this one waits on the signal pipe, and the waits between
        attempts wake on that pipe too."""
        self._start_step = f"waiting for the control plane ({what})"
        stop = _SignalWait(self)
        try:
            return retry_through_outages(lambda: stop.run(call), stop=stop, what=what)
        except _Stopped:
            raise SystemExit(0) from None  # stopped while the control plane had not answered
        except ControlPlaneError as exc:
            if exc.final:
                if exc.status == 409:
                    raise ExecutorIdInUse(printable(exc)) from None
                fix = pool_lookup_fix(exc, self.settings.pool_id) if what == POOL_LOOKUP else None
                self._refuse_start(f"{what} refused by the control plane: {printable(exc)}"
                                   + (f"; {fix} (`datahub-executor check` tells more)" if fix else ""))
            raise SystemExit(0) from None  # stopped before the control plane came back

    def _secret_store(self) -> ChainedSecretStore:
        from .runtime.secrets import AwsSecretArnStore, SecretsManagerClients

        s = self.settings
        # The executor's settings and its package index's (whose URLs carry the index's
        # credentials); the AWS credential variables: EnvSecretStore refuses them itself.
        reserved = {setting.env for setting in SETTINGS} | set(network_env.PACKAGE_INDEX)
        stores = [FileSecretStore(s.file_secret_basedir, s.file_secret_maxlen), EnvSecretStore(os.environ, reserved)]
        clients = SecretsManagerClients()  # one per region, made once, shared by both stores
        if s.aws_secrets:
            stores.append(AwsSecretArnStore(s.aws_secrets, clients))
        if s.aws_secrets_manager:
            from botocore.exceptions import NoRegionError

            try:
                stores.append(AwsSecretsManagerStore(clients(None)))
            except NoRegionError:
                self._refuse_start("DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER is true, and no AWS region is configured for "
                                   "its lookups by name: set AWS_REGION (or AWS_DEFAULT_REGION) to the secrets' region, "
                                   "or give the AWS profile one")
        return ChainedSecretStore(stores)

    def _remove_work_dirs_of(self, swept: list[str]) -> None:
        """The work directories of tasks a previous run of this executor left (a crash, a
        SIGKILL): their runners, which remove them, are gone with it. Only those the sweep found,
        each named by its task cgroup: another executor may share this work directory."""
        for name in swept:
            try:
                workdir = work_dir_of(str(self.work_dir), name.removeprefix(TASK_PREFIX))
            except TaskRejected:
                continue
            shutil.rmtree(workdir, ignore_errors=True)

    def _offer(self, message: Received) -> None:
        """From an intake thread: a message becomes a lease and a runner, unless it is not ours."""
        body = message.body
        log = logger.bind(execution_id=body.execution_id)
        if body.pool_id != self.settings.pool_id:
            log.error("message {} names pool {}, not this executor's pool {}: refused, left for the dead-letter queue",
                      printable(message.ref.message_id), printable(body.pool_id), self.settings.pool_id)
            return
        lease, what = self.leases.receive(body.execution_id, message.ref)
        if what == "replaced":
            log.warning("SQS no longer holds this execution's message (its extensions were refused); message {}, "
                        "received for it now, takes its place: extended while the task runs, deleted when it ends",
                        printable(message.ref.message_id))
            return
        if what == "duplicate":
            log.info("second message for an execution this executor holds: duplicate delivery, deleting the message")
            try:
                self.services.consumers[message.ref.task_class].delete(message.ref)
            except Exception as exc:
                log.warning("duplicate message not deleted ({})", type(exc).__name__)
            return
        if lease is None:
            return  # our own message back (its visibility lapsed): the lease keeps its latest handle
        # Under the lock the drain reads: a message offered once the stop has begun is given
        # back, and one offered before it has its runner started and listed before the drain
        # can look, so the drain never ends with a runner it did not see. The give-back itself
        # is outside the lock: it waits for the visibility extender (leases.py), and the main
        # thread must not wait with it; the drain looks at whether it is done (_giving_back_now).
        refused = None
        with self._runners_lock:
            if self.stopping.is_set():
                refused = "the executor is stopping"
            else:
                try:
                    runner = TaskRunner(lease, self.services)
                    runner.start()
                except RuntimeError as exc:  # "can't start new thread": the master is at its own pids limit
                    refused = f"no thread for the task: {exc}"
                except Exception as exc:  # a bug; a lease no runner has would be extended and listed for ever
                    log.opt(exception=exc).error("no runner for the task")
                    refused = f"no runner for the task ({type(exc).__name__})"
                else:
                    self._runners = [r for r in self._runners if r.is_alive()] + [runner]
            if refused is not None:
                self._giving_back += 1  # the drain waits for it (_giving_back_now)
        if refused is not None:
            try:
                self._give_back(lease, message.ref, log, refused)
            finally:
                with self._runners_lock:
                    self._giving_back -= 1

    def _give_back(self, lease: Lease, ref: QueueRef, log: "loguru.Logger", why: str) -> None:
        """A lease no runner will take: its message is visible on the queue again at once. The
        lease goes first, as in TaskRunner._give_back_unclaimed: our intake may receive the
        message the moment it is visible, and must see it as new."""
        log.warning("{}: its message is returned to the queue", why)
        with self.leases.visibility:  # not extended again once returned (leases.py)
            ref = self.leases.current_message(lease)
            self.leases.move(lease, State.RETURNED)
            try:
                self.services.consumers[ref.task_class].return_now(ref)
            except Exception as exc:  # it comes back after its visibility timeout anyway
                log.warning("message not returned ({})", type(exc).__name__)

    def _live_runners(self) -> list[TaskRunner]:
        with self._runners_lock:
            return [r for r in self._runners if r.is_alive()]

    def _giving_back_now(self) -> bool:
        """Whether an intake is giving a message back (_offer). Such a give-back waits for the
        visibility extender's call in flight (leases.py): a drain that did not wait for it ended
        the process first, and the message stayed hidden for its whole visibility timeout."""
        with self._runners_lock:
            return self._giving_back > 0

    def _wait_and_drain(self) -> list[TaskRunner]:
        """Until the stop is done: returns the runners given up on (their reports unrecorded
        SECOND_SIGNAL_REPORT_S after a second signal), none after an orderly drain."""
        drain_deadline: float | None = None
        give_up_at: float | None = None
        give_backs_until: float | None = None
        while True:
            self._last_loop = time.monotonic()
            # The systemd watchdog is fed here, on every turn of the loop /health watches, and not
            # by the heartbeat thread: a heartbeat held by a slow control plane starved it, and
            # systemd killed a healthy executor for its control plane's latency.
            watchdog = self.notifier.watchdog_interval_s
            if watchdog and self.alive()[0]:
                self.notifier.watchdog()
            ready, _, _ = select.select([self._wake_r], [], [], min(watchdog or 1.0, 1.0))
            if ready:
                os.read(self._wake_r, 1024)
            if (self._signals or self._stop_requested) and not self.stopping.is_set():
                logger.info("stop requested: no new tasks; draining (a second signal kills running tasks)")
                self._begin_drain()
                drain_deadline = time.monotonic() + self.settings.drain_timeout_s
            if self.stopping.is_set() and self._signals >= 2 and give_up_at is None:
                # Also after the drain timeout's kill: its reports may be what the operator waits on.
                logger.warning("second stop signal: killing running tasks, reporting them ABORTED; exiting in "
                               "at most {:.0f} s", SECOND_SIGNAL_REPORT_S)
                give_up_at = time.monotonic() + SECOND_SIGNAL_REPORT_S
                self._kill_running()
            elif self.stopping.is_set() and not self.kill_now.is_set() and drain_deadline is not None \
                    and time.monotonic() > drain_deadline:
                logger.warning("drain timeout ({} s): killing running tasks, reporting them ABORTED",
                               self.settings.drain_timeout_s)
                self._kill_running()
            if self.stopping.is_set() and not self._live_runners():
                # Give-backs within ACKS_JOIN_S, as the last deletes: an SQS that does not answer
                # must not hold the exit, and a message not returned comes back all the same.
                give_backs_until = give_backs_until or time.monotonic() + ACKS_JOIN_S
                if not self._giving_back_now() or time.monotonic() >= give_backs_until:
                    return []
            if give_up_at is not None and time.monotonic() >= give_up_at:
                left = self._live_runners()
                if left:  # else only a give-back was left: its message comes back after its visibility timeout
                    logger.error("exiting after the second stop signal without the results of {} recorded: the "
                                 "control plane did not take them within {:.0f} s; it ends them ABORTED "
                                 "(EXECUTOR_LOST) once this executor's heartbeats stop",
                                 ", ".join(r.execution_id for r in left), SECOND_SIGNAL_REPORT_S)
                return left

    def _wake_ledgers(self) -> None:
        """Runners waiting for admission look at what ends their wait now: the stop, a cancel."""
        for ledger in self.ledgers.values():
            ledger.wake()

    def _begin_drain(self) -> None:
        self.state = "DRAINING"
        self.notifier.stopping(needs_s=self.settings.drain_timeout_s + STOP_REPORT_S)
        self.stopping.set()
        self._wake_ledgers()  # runners waiting for admission see `stopping` now and give their work back
        self._next_beat = 0.0  # the heartbeat thread says DRAINING now; this thread stays free for a second signal

    def _kill_running(self) -> None:
        """Every running task is killed from here, now: a runner looks for the flag only between
        its calls to the control plane, and one that does not answer holds a call for minutes.
        A task started after this look sees the flag itself."""
        self.kill_now.set()
        for runner in self._live_runners():
            runner.kill_for_shutdown()

    def _stop(self, abandoned: list[TaskRunner]) -> None:
        for runner in self._live_runners():
            if runner not in abandoned:
                runner.join(timeout=RUNNER_JOIN_S)
        self._stop_loops.set()
        self.acks.wake()
        # The acknowledger's loop is waited for: it may be deleting a batch, which flush() does
        # not see, and the final heartbeat must not list what it is deleting (nor the process
        # exit with the delete unsent). A heartbeat in flight is waited for by the final beat.
        # Both within ACKS_JOIN_S: an SQS that does not answer must not hold the exit (a second
        # signal promises one within seconds), and a message left undeleted only comes back, to
        # be recognised as a duplicate by its claim.
        deadline = time.monotonic() + ACKS_JOIN_S
        for thread in self._threads:
            if thread.name == ACKS_LOOP:
                thread.join(timeout=ACKS_JOIN_S)
        flushing = threading.Thread(target=self.acks.flush, name="acks-flush", daemon=True)
        flushing.start()
        flushing.join(timeout=max(0.0, deadline - time.monotonic()))
        if flushing.is_alive():
            logger.warning("SQS did not answer the last deletes within {:.0f} s; their messages come back, and each "
                           "is recognised as a duplicate by its claim", ACKS_JOIN_S)
        self.state = "STOPPED"
        if not self._beat_safely(via=self.final_client, wait_s=FINAL_HEARTBEAT_TIMEOUT_S):
            logger.warning("the last heartbeat (STOPPED) is not sent: an earlier one is still unanswered, and the "
                           "control plane keeps whichever arrives last; it judges this executor by its silence")
        self._close()
        logger.info("executor stopped")

    def _close(self) -> None:
        if self.health_server:
            self.health_server.stop()
        if self.sandbox:
            self.sandbox.close()

    # heartbeat and health ---------------------------------------------------------------------
    def _heartbeat_step(self) -> float:
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self.settings.heartbeat_interval_s
            try:
                if self.heartbeat.beat():
                    self.credentials.accepted()  # the periodic check of the token (credentials.py)
            except ExecutorIdInUse as exc:
                logger.error("another process now heartbeats as executor {}: {}; stopping", self.settings.executor_id, exc)
                self.request_stop()
            except ControlPlaneError as exc:
                if exc.status in REFUSING:  # our own pool's status: only the token can be refused here
                    self.credentials.refused(exc)
                elif exc.final:
                    # Refused for good (a 400: a heartbeat this control plane does not take). The
                    # client logs outages only, and without this line the executor went OFFLINE
                    # there, and its running tasks were ended as lost, without a word here.
                    said = f"{exc.status}: {exc}"
                    if said != self._heartbeat_refusal:
                        self._heartbeat_refusal = said
                        logger.error("the control plane refuses this executor's heartbeat ({}); it will be judged "
                                     "gone and its running tasks lost while this lasts", printable(str(exc)))
                # else an outage: the client logs it once; the next beat retries
            else:
                if self._heartbeat_refusal is not None:
                    self._heartbeat_refusal = None
                    logger.info("the control plane takes this executor's heartbeats again")
            self.notifier.status(f"{self.state}: " + ", ".join(
                f"{n} {float(l.snapshot().used):.2f} used" for n, l in self.ledgers.items()))
        return 1.0

    def _beat_safely(self, via: ControlPlaneClient | None = None, wait_s: float | None = None) -> bool:
        """False only when an earlier beat still in flight kept this one from being sent."""
        try:
            return self.heartbeat.beat(via, wait_s=wait_s)
        except (ControlPlaneError, ExecutorIdInUse):
            return True

    def _sandbox_report(self) -> dict:
        identity = getattr(self, "task_identity", None)
        return {"mode": self.sandbox.mode if self.sandbox else None,
                "master_oom_protected": bool(self.sandbox and self.sandbox.master_oom_protected),
                "task_user": identity.users.describe() if identity else "none", "private_tmp": getattr(self, "private_tmp", False),
                "master_dumpable": getattr(self, "dumpable", True)}

    def _dependency_health(self) -> dict:
        return {"control_plane": "ok" if self.client.reachable else "unreachable",
                "sqs": "unreachable" if self.outage.is_down else "ok",
                "threads": "ok" if self.alive()[0] else "failing"}

    def health(self) -> tuple[bool, str]:
        """/health's answer (readiness: taking work): the loops', whether the control plane takes
        our token, and whether SQS has answered within SQS_DOWN_UNREADY_S. Ready while nothing
        could be received let a rollout stop the old executor for a new one that takes no work (a
        wrong endpoint, blocked egress, a role without sqs:ReceiveMessage). Liveness is not
        touched: a restart does not mend SQS, and would kill the running tasks. Not ready while it
        drains or has stopped: it takes no new work then (liveness holds while it drains)."""
        ok, reason = self.alive()
        if ok and self.state in ("DRAINING", "STOPPED"):
            return False, "draining: taking no new work" if self.state == "DRAINING" else "stopped"
        if ok and self.state in ("ACTIVE", "DRAINING") and self.credentials.refusal is not None:
            return False, self.credentials.describe()
        down_s = self.outage.down_for()
        if ok and self.state == "ACTIVE" and down_s > SQS_DOWN_UNREADY_S:
            return False, f"SQS unreachable for {down_s:.0f}s: no work can be received"
        return ok, reason

    def alive(self) -> tuple[bool, str]:
        """Whether this process's loops turn (/health/live's answer): what the systemd watchdog
        and liveness probes are fed on. A refused token is not among them: a restart would not
        fix it, it would kill the running tasks, and the executor resumes by itself once the
        token is accepted again."""
        stalled = time.monotonic() - self._last_loop
        if self.state == "STARTING" and not self.stopping.is_set():
            # Unhealthy until the loop turns: "healthy" lets a rollout stop the old executor
            # (Kubernetes readiness, ECS), so it must mean taking work, and a start that never
            # ends rolls a deployment back. The probes' start allowances (the chart's startup
            # probe, HEALTHCHECK's start period) give a start its time. Named for what it waits
            # on: the loop has not begun, so it cannot have stalled.
            return False, f"still starting after {stalled:.0f}s: {self._start_step}"
        if self.state == "ACTIVE" and stalled > LOOP_STALL_S and not self.stopping.is_set():
            return False, f"main loop stalled for {stalled:.0f}s"
        if self.state in ("ACTIVE", "DRAINING"):
            # While draining too: the extender and the acknowledger still serve the running tasks.
            # The intakes end at the drain on purpose; only a loop that ended untold is gone.
            dead = [t.name for t in self._threads if isinstance(t, Loop) and t.died]
            if dead:
                return False, f"thread(s) gone: {', '.join(dead)}"
        return True, self.state


def _unused_signal(signum: int, frame: object) -> None:
    """SIGUSR1/SIGUSR2: their default action would kill the master with no drain (see UNUSED_SIGNALS)."""


def raise_open_files_limit() -> None:
    """The soft RLIMIT_NOFILE up to the hard one (systemd's default soft limit is 1024, its hard
    limit 512K): every task holds a few of the master's descriptors (pipes, pidfd, log), and a
    master out of them cannot read a task's cgroup, start one, or answer a probe."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # an infinite hard limit the kernel caps lower (nr_open): the soft one stays


class _Stopped(Exception):
    """A stop signal came while a call of the start was unanswered."""


class _SignalWait:
    """The stop of a wait in the start: set by a stop signal (or request_stop), and a wait that
    the signal pipe wakes, since the handler may do no more than write to it."""

    def __init__(self, master: Master) -> None:
        self._master = master

    def is_set(self) -> bool:
        return bool(self._master._signals or self._master._stop_requested)

    def wait(self, timeout: float) -> bool:
        """TIMEOUT seconds, or until a stop; systemd is told the start goes on meanwhile."""
        if not self.is_set():
            self._master.notifier.starting(self._master._start_step, needs_s=timeout + START_EXTEND_S)
            select.select([self._master._wake_r], [], [], timeout)
        return self.is_set()

    def run(self, call):
        """CALL's answer, or _Stopped as soon as a stop is set. The call runs on a daemon thread:
        on the main thread, a control plane that took the connection and never answered held
        the stop for the call's whole timeout (10 s); a shorter timeout would instead cut short
        every answer of a control plane that is slow, not gone. A call given up on ends with
        the process."""
        if self.is_set():
            raise _Stopped
        outcome: list[tuple[bool, object]] = []
        done_r, done_w = os.pipe()

        def attempt() -> None:
            try:
                outcome.append((True, call()))
            except BaseException as exc:
                outcome.append((False, exc))
            finally:
                os.close(done_w)  # done_r reads end-of-file: the select below wakes

        try:
            thread = threading.Thread(target=attempt, name="start-call", daemon=True)
            try:
                thread.start()
            except BaseException:
                os.close(done_w)
                raise
            # Only a stop writes to the signal pipe, and it sets its flag first: a readable pipe
            # means is_set(), so this never spins.
            while not outcome:
                if self.is_set():
                    raise _Stopped
                select.select([self._master._wake_r, done_r], [], [])
        finally:
            os.close(done_r)
        answered, value = outcome[0]
        if not answered:
            raise value
        return value
