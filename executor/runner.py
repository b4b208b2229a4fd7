"""One held execution, from its message to its deleted message, on its own thread.

    claim -> weight (from the claim) -> admission (its ledger, first come first served)
    -> its task user (task_users.py) -> prepare (secrets, virtualenv) -> start confined -> feed stdin, pump the log
    -> every progress interval: the masked tail as a RUNNING result, DataHub's KILL signal read
    -> outcome -> full log (a few tries; none when the result's report holds it whole)
    -> result (retried until recorded) -> the message deleted (acks.py)

Every state change goes through the execution's lease (leases.py). Whatever fails after the
claim ends in a reported result or an explicit release to the control plane; a child is always
killed, and its outcome awaited, before its weight is released. A 409 on anything carrying the
lease means another run holds the execution now: the child is killed at once and nothing of
this run is reported (fencing, docs/protocol.md).
"""
from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

from sandbox import ConfinedProcess, Limits, Outcome, Sandbox, SandboxError, Status, TaskUser, reused_threads
from vocabulary import statuses as S
from vocabulary.results import executor_details
from vocabulary.tasks import UnknownTask, task_class
from vocabulary.weights import InvalidWeight, parse_weight

from . import datahub_aspects
from .acks import Acknowledger
from .consumer import SqsConsumer
from .controlplane_client import (Claimed, ClaimDeferred, ControlPlaneClient, ControlPlaneError, LeaseLost,
                                  retry_through_outages)
from .credentials import REFUSING, Credentials
from .leases import Lease, Leases, QueueRef, State
from .ledger import Ledger, StopFlag
from .log_upload import LogUploader
from .operability import ExecutorMetrics
from .runtime.rejection import TaskRejected
from .runtime.task_log import TaskLog, TaskLogDirectory
from .runtime.tasks import PreparedTask, extra_env_of
from .runtime.venvs import PreparationStopped
from .settings import Settings
from .task_users import Cancelled, TaskUsers
from .text import printable

SILENCE_WARNING_S = 120
LOG_UPLOAD_ATTEMPTS = 3
# How long the log pump may take to drain the task's output after the task ended, before it is
# stopped: output still coming then is from a process that left the task (sandbox mode none).
PUMP_JOIN_S = 10.0
# A message given back because its runner failed before claiming is visible again after this
# long (for another executor, or this one once the fault has passed), not at once.
FAILED_RUNNER_RETURN_S = 10
# Why a run cancelled while claimed but not started is given back (the release's why).
CANCELLED_UNSTARTED = "cancelled before it started"


# How often a weight still held for processes of an ended task that would not die is said again.
LEFT_BEHIND_REMINDER_S = 600.0


def _release_once_ended(pidfds: dict[int, int], ledger: Ledger, key: str, metrics: ExecutorMetrics, log) -> None:
    """Gives KEY's weight back in LEDGER once every process of PIDFDS (pidfd -> pid) has ended;
    until then, says every LEFT_BEHIND_REMINDER_S which still run. Its own thread."""
    waiting = dict(pidfds)
    since = time.monotonic()
    try:
        while waiting:
            ended, _, _ = select.select(list(waiting), [], [], LEFT_BEHIND_REMINDER_S)
            for fd in ended:
                os.close(fd)
                del waiting[fd]
            if waiting and not ended:
                log.warning("processes {} of the task, which would not die, still run after {:.0f} min: its weight "
                            "stays taken in the {} ledger; a restart ends them (its start-up sweep)",
                            " ".join(map(str, waiting.values())), (time.monotonic() - since) / 60, ledger.task_class)
    finally:
        for fd in waiting:
            os.close(fd)
        ledger.release(key)
        metrics.set_ledger(ledger.snapshot())
    log.info("the processes of the task that would not die have ended: its weight is free again in the {} ledger",
             ledger.task_class)


@dataclass(frozen=True)
class _WaitEnds:
    """What ends a claimed task's waits for capacity and for a task user, and keeps it from
    starting after its preparation: the executor stopping, or the run's cancel, which
    services.CancelWatch marks on its lease."""

    stopping: threading.Event
    lease: Lease

    def is_set(self) -> bool:
        return self.stopping.is_set() or self.lease.cancel_asked


@dataclass
class RunnerServices:
    """What a runner needs, handed over once: no callbacks into the master."""

    settings: Settings
    client: ControlPlaneClient
    consumers: dict[str, SqsConsumer]
    acks: Acknowledger  # deletes the messages of recorded results, in batches
    ledgers: dict[str, Ledger]
    leases: Leases
    sandbox: Sandbox
    # The run's task as it will be started; its StopFlag (the stop, the run's cancel) ends a
    # wait for its virtualenv and kills its build.
    prepare: Callable[[Claimed, TaskUser | None, StopFlag], PreparedTask]
    logs: LogUploader
    task_logs: TaskLogDirectory
    metrics: ExecutorMetrics
    instance_id: str  # this process, as the control plane knows it (random per start)
    task_users: TaskUsers  # who each task runs as
    private_tmp: bool
    stopping: threading.Event  # no new work: unstarted work is given back
    kill_now: threading.Event  # running tasks are killed and reported ABORTED (EXECUTOR_SHUTDOWN)
    # Whether the control plane takes our token (credentials.py); by default, until told otherwise.
    credentials: Credentials = field(default_factory=lambda: Credentials(lambda: None, what="check DATAHUB_GMS_TOKEN"))


def feed_stdin(stdin, data: bytes, *, name: str) -> None:
    """A task's input: what fits in the empty pipe at once (a recipe, nearly always) is written
    without blocking and without a thread; the rest, if any, by a thread of its own while the
    task reads. STDIN (the pipe's file object) is closed once everything is written."""
    fd = stdin.fileno()
    os.set_blocking(fd, False)
    try:
        written = os.write(fd, data) if data else 0
    except BlockingIOError:
        written = 0
    except OSError:
        written = len(data)  # the task ended (or closed stdin) already; its outcome says why
    finally:
        os.set_blocking(fd, True)
    if written >= len(data):
        try:
            stdin.close()
        except OSError:
            pass
        return
    rest = memoryview(data)[written:]

    def write() -> None:
        try:
            stdin.write(rest)
            stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the task ended (or closed stdin) before reading it all; its outcome says why
    threading.Thread(target=write, name=name, daemon=True).start()


def report_is_whole_log(report: str, full_log: bytes) -> bool:
    """The report (the log's tail) is the whole log: nothing was cut from its start, no line
    shortened, and it fits in a result."""
    if len(full_log) > datahub_aspects.REPORT_MAX_CHARS:
        return False
    text = full_log.decode("utf-8", "replace")
    return text in (report, report + "\n")


class TaskRunner:
    """The execution's life on a thread of its own: one an earlier task left idle where there is
    one (sandbox/reused_threads.py). start(), is_alive() and join() as a Thread's."""

    def __init__(self, lease: Lease, services: RunnerServices) -> None:
        self.lease = lease
        self.s = services
        self.execution_id = lease.execution_id
        self.log = logger.bind(execution_id=lease.execution_id)
        self._admitted_to: Ledger | None = None
        self._holds_user = False
        self._user: TaskUser | None = None
        self._process: ConfinedProcess | None = None
        self._task_log: TaskLog | None = None
        self._prepared: PreparedTask | None = None  # cleaned up before any release (_release)
        self._end_reason: str | None = None  # "cancel" | "shutdown"
        self._kill_sent = False
        self._recorded = False  # the control plane recorded this run's result: nothing more is reported
        self._lock = threading.Lock()
        self._job: reused_threads.Job | None = None

    def start(self) -> None:
        """RuntimeError where no thread can be had (the master at its own pids limit)."""
        self._job = reused_threads.start(self.run, name=f"task-{self.execution_id}")

    def is_alive(self) -> bool:
        return self._job is not None and self._job.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._job is not None:
            self._job.join(timeout)

    @property
    def consumer(self) -> SqsConsumer:
        return self.s.consumers[self.lease.message.task_class]

    def run(self) -> None:
        try:
            self._run()
        except LeaseLost as exc:
            self._lost(exc)
        except Exception as exc:
            self.log.exception("runner failed unexpectedly")
            self._recover(exc)
        finally:
            self._free()

    # the life of one execution ----------------------------------------------------------------
    def _run(self) -> None:
        if self.s.stopping.is_set():
            self._give_back_unclaimed("the executor is stopping")
            return
        if self.s.credentials.refusal is not None:  # received by a poll in flight when it began
            self._give_back_unclaimed("the control plane refuses this executor's token")
            return
        claimed = self._claim()
        if claimed is None:
            return
        # Recorded at once: from here any failure gives the execution back to the control plane
        # (a release), where an unclaimed give-back would leave it RUNNING there, held by nobody.
        self.s.leases.move(self.lease, State.CLAIMED, claim=claimed)
        started = time.monotonic()
        try:
            ledger = self.s.ledgers[task_class(claimed.task)]
            weight = parse_weight(extra_env_of(claimed.args).get("EXECUTOR_TASK_WEIGHT"), ledger.default_weight)
        except (UnknownTask, InvalidWeight, TaskRejected) as exc:
            reason = S.UNKNOWN_TASK if isinstance(exc, UnknownTask) else getattr(exc, "reason", S.INVALID_WEIGHT)
            self.log.error("task refused ({}): {}", reason, printable(exc))
            self._report_failure(claimed, reason, str(exc), started)
            return
        self._say_if_waiting(claimed, ledger, weight)
        if not ledger.acquire(self.execution_id, weight, cancelled=self._waits_end):
            self._give_back_unstarted("the executor stopped before the task could start")
            return
        self._admitted_to = ledger
        self.s.metrics.set_ledger(ledger.snapshot())
        self.s.leases.move(self.lease, State.ADMITTED, weight=weight, task_class=ledger.task_class)
        if self.s.task_users.all_held(ledger.task_class):
            self.log.warning("no task uid of {} is free for the next {} task: waiting for one to end "
                             "(DATAHUB_EXECUTOR_TASK_USER)", self.s.task_users.describe(), ledger.task_class)
        try:
            self._user = self.s.task_users.acquire(self.execution_id, ledger.task_class, self._waits_end)
            self._holds_user = True
        except Cancelled:
            self._give_back_unstarted("the executor stopped before the task could start")
            return
        if self._waits_end.is_set():
            # Cancelled or stopping while it was admitted at once (the waits look at their flag
            # only while they wait): nothing is prepared for it, which may be a build of minutes.
            self._give_back_unstarted("the executor stopped before the task could start")
            return
        try:
            prepared = self._prepared = self.s.prepare(claimed, self._user, self._waits_end)
        except TaskRejected as exc:
            if self.lease.cancel_asked:
                # Cancelled while it was prepared (a step of it that the cancel does not cut short
                # failed meanwhile): the cancel, not why it could not have started, is how it ends
                # (CANCELLED_BEFORE_START).
                self.log.info("task rejected ({}) after its cancel: giving it back as cancelled", exc.reason)
                self._release(CANCELLED_UNSTARTED)
                return
            self.log.error("task rejected ({}): {}", exc.reason, printable(exc))
            self._report_failure(claimed, exc.reason, f"{exc.reason}: {exc}", started)
            return
        except PreparationStopped:  # its virtualenv build or the wait for it, cut short by the stop or its cancel
            self._give_back_unstarted("the executor stopped while the task was being prepared")
            return
        if self._waits_end.is_set():  # preparing takes seconds (a build, minutes): a stop or cancel may have come
            self._give_back_unstarted("the executor stopped while the task was being prepared")  # cleans it up first
            return
        try:
            self._run_prepared(claimed, prepared, started)
        finally:
            # After an exception (a lost lease, the unexpected) the task may still run: it is
            # killed and awaited before its directory goes and its venv's hold is dropped, or the
            # venv could be evicted under it and the directory, written to meanwhile, be left.
            self._kill_and_wait()
            prepared.cleanup()
            if self._task_log is not None:  # after an exception: the log stays for operators
                self._task_log.keep()

    @property
    def _waits_end(self) -> _WaitEnds:
        return _WaitEnds(self.s.stopping, self.lease)

    def _give_back_unstarted(self, stopping_why: str) -> None:
        """Claimed work that will not start here: cancelled meanwhile (the control plane then
        ends it CANCELLED), or, STOPPING_WHY, the executor is stopping (queued again)."""
        self._release(CANCELLED_UNSTARTED if self.lease.cancel_asked else stopping_why)

    def _say_if_waiting(self, claimed: Claimed, ledger: Ledger, weight) -> None:
        """A claimed task that must wait for capacity says so in its result's report, so the
        RUNNING an operator sees is explained until the task starts. Not one received ahead, for
        the weight of results being reported (ledger.py): it starts within a call."""
        if ledger.fits_soon(weight, self.s.leases.reporting(ledger.task_class)):
            return
        snap = ledger.snapshot()
        note = (f"[executor] waiting for capacity on {self.s.settings.executor_id}: this task weighs {float(weight):.2f}, "
                f"{float(snap.used):.2f} of 1.0 is in use by {snap.running} task(s), {snap.waiting} waiting before it")
        try:
            self.s.client.report(self.execution_id, claimed.lease, datahub_aspects.running_result(
                started_ms=datahub_aspects.now_ms(), report=note, peak_memory_bytes=None, task=claimed.task))
        except LeaseLost:
            raise
        except ControlPlaneError:
            pass  # only a courtesy to the operator

    def _claim(self) -> Claimed | None:
        settings = self.s.settings
        message = self.lease.message
        try:
            claimed = retry_through_outages(
                lambda: self.s.client.claim(self.execution_id, executor_id=settings.executor_id,
                                            instance_id=self.s.instance_id, pool_id=settings.pool_id,
                                            receive_count=message.receive_count, message_id=message.message_id),
                stop=self.s.stopping, what=f"claim of {self.execution_id}")
        except ControlPlaneError as exc:
            if not exc.final:  # stopping during an outage: someone else runs it later
                self._give_back_unclaimed("the executor is stopping")
                return None
            if self.s.credentials.refuses(exc):
                # Our token, not this execution: the message goes back now, for an executor whose
                # token works, instead of being left to spend its receives (credentials.py).
                self._give_back_unclaimed("the control plane refuses this executor's token")
                return None
            # Unknown execution, another pool's, or a token without this pool: no executor of ours
            # can run it. Left undeleted, it returns after the visibility timeout and, past the
            # pool's redrive count, lands in the dead-letter queue where an operator can look at it.
            self.log.error("claim refused ({}): leaving message {} for the dead-letter queue (receive {})",
                           printable(exc), printable(message.message_id), message.receive_count)
            self.s.leases.move(self.lease, State.DROPPED)
            return None
        if isinstance(claimed, ClaimDeferred):
            self.log.info("claim deferred ({}); the message is asked for again in {:.0f} s",
                          claimed.why or "no reason given", claimed.retry_after_s)
            self._give_back_unclaimed("the control plane deferred the claim", after_s=claimed.retry_after_s)
            return None
        if claimed is None:
            self.log.info("execution is final or running elsewhere: duplicate delivery, deleting the message")
            with self.s.leases.visibility:  # as the acknowledger deletes (acks.py): never deleted and still held
                self._delete_message()
                self.s.leases.move(self.lease, State.ACKED)
            return None
        if claimed.pool_id != settings.pool_id or claimed.execution_id != self.execution_id:
            self.log.error("claim answer is for pool {} / execution {}, not ours; refused",
                           printable(claimed.pool_id), printable(claimed.execution_id))
            self.s.leases.move(self.lease, State.DROPPED)
            return None
        return claimed

    def _run_prepared(self, claimed: Claimed, prepared: PreparedTask, started: float) -> None:
        settings = self.s.settings
        # A task of the executor's own uid could open a named log and write the executor's lines
        # into it: its log has no name while it runs (unnamed_file.py).
        task_log = TaskLog(self.s.task_logs.path_for(self.execution_id), prepared.masker, hidden=self._user is None)
        self._task_log = task_log
        limits = Limits(memory_max_bytes=prepared.memory_limit_bytes, pids_max=settings.task_pids_max,
                        timeout_s=settings.task_timeout_s)
        memory_limit = f"{prepared.memory_limit_bytes} bytes" if prepared.memory_limit_bytes else "none"
        task_log.write_line(f"[executor] {claimed.task} on {settings.executor_id}; memory limit: {memory_limit}")
        try:
            process = self.s.sandbox.start(prepared.argv, limits, name=self.execution_id, env=prepared.env,
                                           cwd=prepared.workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, user=self._user,
                                           private_tmp=self.s.private_tmp)
        except SandboxError as exc:
            task_log.close()
            self._report_failure(claimed, S.SANDBOX_ERROR, str(exc), started)
            return
        with self._lock:
            self._process = process
        self.s.leases.move(self.lease, State.RUNNING)
        self.log.info("task process {} started: {} (memory limit: {})", process.pid, claimed.task, memory_limit)
        started_ms = datahub_aspects.now_ms() - int((time.monotonic() - started) * 1000)
        pump = task_log.pump(process.stdout)
        feed_stdin(process.stdin, prepared.stdin_bytes, name=f"stdin-{self.execution_id}")
        outcome = self._watch(claimed, process, task_log, started_ms)
        if (outcome.unkillable_pids or outcome.tree_left) and self._holds_user:
            # Something of the task may still run (it would not die, or its cgroup could not be
            # read or removed): its uid must not become another task's, who could reach it.
            self._holds_user = False
            user = self.s.task_users.retire(self.execution_id)
            if user is not None and self.s.task_users.exclusive:
                what = (f"processes {' '.join(map(str, outcome.unkillable_pids))} of the task would not die"
                        if outcome.unkillable_pids else "the task's cgroup could not be seen empty and removed")
                self.log.warning("{}: its uid {} is not given to another task until the executor restarts (its "
                                 "start-up sweep ends them)", what, user.uid)
        pump.join(timeout=PUMP_JOIN_S)
        if pump.is_alive():
            # Its output outlives the task: a process that left it (mode none) holds the pipe.
            self.log.warning("a process that left the task still holds its output after it ended; its output is no "
                             "longer relayed")
            task_log.stop_pump()
            pump.join(timeout=PUMP_JOIN_S)
        task_log.write_line(f"[executor] outcome: {outcome.status.value} exit_code={outcome.exit_code} "
                            f"signal={outcome.signal} peak_memory_bytes={outcome.peak_memory_bytes}")
        if outcome.oom_kills and outcome.memory_limit_reached is False:
            task_log.write_line(f"[executor] the kernel's OOM killer ended {outcome.oom_kills} process(es) of the task "
                                "for memory outside its own limit (the host's, or an enclosing cgroup's: a "
                                "container's or the executor's); raising the task's limit would not help")
        elif outcome.oom_kills and outcome.status is not Status.MEMORY_LIMIT_EXCEEDED:
            task_log.write_line(f"[executor] the kernel's OOM killer ended {outcome.oom_kills} process(es) of the task "
                                "at its memory limit; the task went on without them, and ended as above")
        if outcome.pids_limit_hits:
            task_log.write_line(f"[executor] the task reached its process limit: {outcome.pids_limit_hits} fork(s) "
                                f"refused at {settings.task_pids_max} processes and threads "
                                "(DATAHUB_EXECUTOR_TASK_PIDS_MAX)")
        task_log.close()
        status, reason = self._status_of(outcome)
        report, full_log = task_log.tail(), task_log.full_log()
        task_log.keep()  # what is shipped is read: the file may have its name
        # A log the report holds whole is not sent twice: to the control plane the result is the
        # log (an S3 bucket still gets its object, where operators look for it).
        log_in_report = not self.s.logs.bucket and report_is_whole_log(report, full_log)
        result = datahub_aspects.final_result(
            status=status, task=claimed.task, started_ms=started_ms, duration_ms=int((time.monotonic() - started) * 1000),
            report=report, ingestion_report=prepared.structured_report(), reason=reason,
            exit_code=outcome.exit_code, signal=outcome.signal, peak_memory_bytes=outcome.peak_memory_bytes,
            executor_id=settings.executor_id, log_in_report=log_in_report)
        prepared.cleanup()  # nothing of the task is left on disk once DataHub shows it ended
        self.s.leases.move(self.lease, State.REPORTING)
        if log_in_report:
            self._report(claimed, result)
            return
        # One quick try before the result (one call, its answer awaited QUICK_TIMEOUT_S at most):
        # on ECS the stop timeout is 30 s, and the result is what must be recorded; the rest come
        # after it. Through the client's own retries a control plane that took the upload and
        # never answered held the result back ~80 s.
        # To S3 only after it: S3 checks no lease, and a holder that had lost the execution (a
        # stale one whose task ended as it resumed) wrote over the log of the run that replaced
        # it under the same key. A recorded result proves the lease was ours, and a final
        # execution is never run again.
        uploaded = not self.s.logs.bucket and self._upload_log(claimed, full_log, attempts=1, quick=True)
        if self._report(claimed, result) and not uploaded:
            # The result is recorded: the weight and the uid go back before the log's tries,
            # which a slow or unanswering log store stretches to tens of seconds, while the
            # task's process has ended and the lease, acknowledged, no longer counts as finishing.
            self._free()
            self._upload_log(claimed, full_log, attempts=LOG_UPLOAD_ATTEMPTS, after_result=True)

    def _watch(self, claimed: Claimed, process: ConfinedProcess, task_log: TaskLog, started_ms: int) -> Outcome:
        settings = self.s.settings
        sent_version = -1
        warned_silence = False
        next_progress = time.monotonic() + settings.progress_interval_s
        while True:
            if self.s.kill_now.is_set():
                self._end("shutdown", process, kill=True)
            try:
                return process.wait(timeout=min(0.5, max(0.0, next_progress - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() < next_progress:
                continue
            next_progress = time.monotonic() + settings.progress_interval_s
            silent_for = time.monotonic() - task_log.last_output
            if not warned_silence and silent_for > SILENCE_WARNING_S:
                task_log.write_line(f"[executor] no output for {SILENCE_WARNING_S} s; the task is still running")
                warned_silence = True
            elif silent_for < SILENCE_WARNING_S:
                warned_silence = False
            tail = None
            if task_log.version != sent_version:
                sent_version = task_log.version
                tail = task_log.tail()
            try:
                if tail is not None:
                    self.s.client.report(self.execution_id, claimed.lease, datahub_aspects.running_result(
                        started_ms=started_ms, report=tail, peak_memory_bytes=process.memory_peak(), task=claimed.task))
                cancelled = self.s.client.cancel_requested(self.execution_id)
            except LeaseLost:
                raise
            except ControlPlaneError:
                sent_version = -1  # send the tail again once the control plane is back
                continue
            if cancelled:
                self._end("cancel", process, kill=False)

    def kill_for_shutdown(self) -> None:
        """From the main thread (kill_now is set): kill the task now, whatever this runner's own
        thread is waiting on; its outcome is reported as ABORTED (EXECUTOR_SHUTDOWN) as usual."""
        with self._lock:
            process = self._process
        if process is not None:
            self._end("shutdown", process, kill=True)

    def _end(self, reason: str, process: ConfinedProcess, *, kill: bool) -> None:
        """The first reason names the outcome (a cancel stays CANCELLED); a kill acts whatever came
        before it: a shutdown during a cancel's grace period must not wait out the grace."""
        with self._lock:
            first = self._end_reason is None
            self._end_reason = self._end_reason or reason
            kill_now = kill and not self._kill_sent
            self._kill_sent = self._kill_sent or kill
        if kill_now:
            self.log.warning("killing the task: the executor is shutting down")
            process.kill()
        elif first and not kill:
            self.log.info("cancel requested: SIGTERM, SIGKILL after {} s", self.s.settings.cancel_grace_s)
            process.terminate(grace_s=self.s.settings.cancel_grace_s)

    def _status_of(self, outcome: Outcome) -> tuple[str, str | None]:
        status, reason = {
            Status.SUCCEEDED: (S.SUCCESS, None),
            Status.FAILED: (S.FAILURE, S.EXIT_CODE if outcome.exit_code is not None else S.SIGNAL),
            Status.MEMORY_LIMIT_EXCEEDED: (S.FAILURE, S.MEMORY_LIMIT_EXCEEDED),
            Status.TIMED_OUT: (S.TIMEOUT, S.TIMEOUT_REASON),
            Status.KILLED: (S.ABORTED, S.EXECUTOR_SHUTDOWN),
        }[outcome.status]
        if outcome.status is Status.KILLED and self._end_reason == "cancel":
            return S.CANCELLED, S.CANCELLED_REASON
        if self._end_reason == "cancel" and outcome.status is Status.FAILED:
            return S.CANCELLED, S.CANCELLED_REASON  # it exited on the SIGTERM of the cancel
        return status, reason

    # reporting --------------------------------------------------------------------------------
    def _upload_log(self, claimed: Claimed, data: bytes, *, attempts: int, quick: bool = False,
                    after_result: bool = False) -> bool:
        """A few tries, not forever: the result must not wait on the log (a container's grace
        period can end first); a log that could not go before the result is tried again after.
        Once the executor is stopping, one try: a stop waits on no log. AFTER_RESULT: a 409 is no
        lost lease (the run's result is recorded, and a final run is never run again), only a log
        not taken; raised, it went to _lost, which said "reporting nothing" of a recorded run and
        moved a lease already acknowledged."""
        for attempt in range(attempts):
            try:
                where = self.s.logs.upload(self.execution_id, claimed.lease, data, accepted=claimed.log_encodings,
                                           quick=quick)
                self.log.debug("full log uploaded to {}", where)
                return True
            except LeaseLost as exc:
                if not after_result:
                    raise
                self.log.warning("full log not uploaded: the control plane does not take it under this run's lease "
                                 "({}); the run's result is recorded", printable(exc))
                return False
            except ControlPlaneError as exc:
                if exc.final:
                    break
            except Exception as exc:  # S3's errors: credentials, network
                self.log.warning("full log not uploaded to {}: {}", self.s.logs.destination(self.execution_id),
                                 type(exc).__name__)
                return False
            if self.s.stopping.wait(min(2 ** attempt, 5)):
                break
        self.log.warning("full log not uploaded yet to {}", self.s.logs.destination(self.execution_id))
        return False

    def _report(self, claimed: Claimed, result: dict) -> bool:
        """The result, retried through outages until recorded; then the message goes to be deleted.
        True once recorded.

        A final answer other than 409 (LeaseLost) never leaves the lease REPORTING: held, its
        message was extended for 12 hours and the heartbeat listed it, so the control plane kept
        the execution RUNNING and never queued it again. Refused for our token (credentials.py),
        the result waits for the token to be accepted again, as through an outage, until a stop;
        refused for itself, or at a stop, the execution is given back (released) and False."""
        while True:
            try:
                retry_through_outages(lambda: self.s.client.report(self.execution_id, claimed.lease, result),
                                      stop=None, what=f"result of {self.execution_id}")
                break
            except LeaseLost:
                raise
            except ControlPlaneError as exc:
                if self.s.credentials.refuses(exc) and not self.s.stopping.is_set():
                    self.log.warning("result not recorded: the control plane refuses this executor's token; it is "
                                     "sent again once the token is accepted")
                    while not self.s.credentials.wait_accepted(1.0) and not self.s.stopping.is_set():
                        pass
                    continue
                self._result_refused(exc)
                return False
        # Recorded: whatever fails from here on, the run is not reported again (_recover), and
        # its message still goes to be deleted.
        self._recorded = True
        try:
            details = executor_details(result)
            reason, peak = details.get("reason"), details.get("peakMemoryBytes")
            self.log.info("finished: {}{}", result["status"], f" {reason}" if reason else "")
            self.s.metrics.task_finished(claimed.task, result["status"], reason, peak)
        finally:
            self.s.acks.ack(self.lease)  # deleted with others, then ACKED (acks.py)
        return True

    def _result_refused(self, error: ControlPlaneError) -> None:
        """The control plane answered the result with a final 4xx other than 409: said once, and
        the execution given back (REPORTING -> RELEASED). For the result itself (400, 404, 413,
        422, or a 403 while our token works) the give-back counts as failed, so a result refused
        every time ends the execution FAILURE (EXECUTOR_ERROR) at the third run instead of
        running it for ever; refused for our token at a stop, it does not."""
        token = error.status in REFUSING and self.s.credentials.refusal is not None
        if token:
            self.log.error("result not recorded: the control plane refuses this executor's token ({}) and the executor "
                           "is stopping; giving the execution back (if the control plane cannot be told, it ends it "
                           "ABORTED, EXECUTOR_LOST, once this executor's heartbeats stop)", printable(error))
            self._release("its result was not recorded: the control plane refused the executor's token")
            return
        self.log.error("the control plane refused this execution's result for good ({}): it is not recorded; giving the "
                       "execution back as failed, so the control plane runs it again and ends it FAILURE "
                       "(EXECUTOR_ERROR) at the third such give-back. The control plane's log says why it refused; "
                       "if it refuses every result, its version and this executor's may not match", printable(error))
        self._release(f"the task ran but the control plane refused its result (HTTP {error.status})", failed=True)

    def _report_failure(self, claimed: Claimed, reason: str, text: str, started: float) -> None:
        """A task that cannot run as given: FAILURE with the reason, without starting anything."""
        if self.lease.state is State.RECEIVED:
            self.s.leases.move(self.lease, State.CLAIMED, claim=claimed)
        self.s.leases.move(self.lease, State.REPORTING)
        self._report(claimed, datahub_aspects.final_result(
            status=S.FAILURE, task=claimed.task, started_ms=datahub_aspects.now_ms(),
            duration_ms=int((time.monotonic() - started) * 1000), report=f"{reason}: {printable(text, 2000)}",
            ingestion_report=None, reason=reason, executor_id=self.s.settings.executor_id))

    # giving work back, and the unexpected -----------------------------------------------------
    def _give_back_unclaimed(self, why: str, after_s: float = 0) -> None:
        """The message goes back to the queue. The lease leaves the registry first: our own intake
        may receive the message the moment it is visible, and a lease still held would make it
        "our own message back" (refreshed, no runner), then vanish: the message in flight under
        a receipt nobody holds, hidden for a whole visibility timeout."""
        self.log.info("not claimed ({}); returning the message", why)
        with self.s.leases.visibility:  # not extended again once returned (leases.py)
            message = self.s.leases.current_message(self.lease)
            self.s.leases.move(self.lease, State.RETURNED)
            try:
                self.consumer.return_now(message, after_s)
            except Exception as exc:  # botocore: the message comes back after its visibility timeout anyway
                self.log.warning("message not returned ({}); it comes back after its visibility timeout",
                                 type(exc).__name__)

    def _release(self, why: str, *, failed: bool = False) -> None:
        """Claimed work this process will not start: the control plane queues it again at once,
        so its message is deleted; if the control plane cannot be told, the message is returned
        and the execution recovered by the control plane's reconciliation.

        The lease leaves the registry *before* the control plane is told: it sends the new
        message within the release call, and our own intake may receive it at once; a lease
        still held would make that message look like a duplicate delivery, and deleting it left
        the execution PENDING with no message anywhere. Unlisted from then on, a release that
        never gets through is still recovered by the heartbeat's reconciliation. Its weight and
        task user go back before that too: both are keyed by execution id, and a runner for the
        execution queued again would find them still held by this one."""
        claimed: Claimed = self.lease.claim
        message = self.s.leases.current_message(self.lease)
        # Its child ended and its work directory gone first: the execution queued again may be
        # run here at once, in the directory of the same name, which a cleanup later removed
        # under that run's task.
        self._kill_and_wait()
        if self._prepared is not None:
            self._prepared.cleanup()
        self._free()  # its weight and user: the execution queued again may be admitted here at once
        self.s.leases.move(self.lease, State.RELEASED)
        try:
            retry_through_outages(lambda: self.s.client.release(self.execution_id, claimed.lease, why, failed=failed),
                                  stop=self.s.kill_now, what=f"release of {self.execution_id}")
            self.log.info("released ({}): {}", why, "the control plane ends it CANCELLED" if why == CANCELLED_UNSTARTED
                          else "queued again by the control plane")
            self._delete_message(message)
        except ControlPlaneError as exc:
            self.log.warning("release not recorded ({}); returning the message", printable(exc))
            with self.s.leases.visibility:  # after an extension read before the release, not before it
                try:
                    self.consumer.return_now(message)
                except Exception:
                    pass

    def _delete_message(self, message: QueueRef | None = None) -> None:
        try:
            self.consumer.delete(message or self.s.leases.current_message(self.lease))
        except Exception as exc:  # a redelivery is recognised as a duplicate by the claim
            self.log.warning("message not deleted ({}); a redelivery will be recognised as a duplicate",
                             type(exc).__name__)

    def _lost(self, exc: LeaseLost) -> None:
        """Another run holds the execution: its task killed, nothing reported. Its weight and
        task user go back before the lease leaves the registry, as in a release: our intake may
        then receive the execution's new message and claim it here, under the same keys."""
        self.log.error("lost the execution: {}; killing its task, reporting nothing", printable(exc))
        self._free()  # kills and awaits the task first
        if self.lease.state not in (State.RECEIVED,):
            self.s.leases.move(self.lease, State.LOST)

    def _recover(self, error: Exception) -> None:
        """After an unexpected error: kill the child, then report what can be reported. Work not
        started is given back as a failure, which the control plane allows only a few times."""
        self._kill_and_wait()
        claimed: Claimed | None = self.lease.claim
        try:
            if self.lease.state in (State.RECEIVED,):
                # Not at once: a failure that repeats would receive, fail and give back in a loop.
                self._give_back_unclaimed("the runner failed before claiming", after_s=FAILED_RUNNER_RETURN_S)
            elif self.lease.state in (State.CLAIMED, State.ADMITTED):
                self._release(f"the runner of executor {self.s.settings.executor_id} failed before the task "
                              f"started ({type(error).__name__})", failed=True)
            elif self.lease.state in (State.RUNNING, State.REPORTING) and claimed is not None and not self._recorded:
                if self.lease.state is State.RUNNING:
                    self.s.leases.move(self.lease, State.REPORTING)
                self._report(claimed, datahub_aspects.final_result(
                    status=S.FAILURE, task=claimed.task, started_ms=datahub_aspects.now_ms(), duration_ms=0,
                    report="the executor failed while running this task; see its log", ingestion_report=None,
                    reason=S.EXECUTOR_ERROR, executor_id=self.s.settings.executor_id))
        except LeaseLost as exc:
            self._lost(exc)
        except Exception:
            self.log.exception("could not report after the failure; the control plane will recover the execution")

    def _free(self) -> None:
        """What this runner holds for its execution goes back, once: its child is killed and
        its end awaited first, then its task user and its weight."""
        self._kill_and_wait()
        if self._holds_user:
            self._holds_user = False
            self.s.task_users.release(self.execution_id)
        if self._admitted_to is not None:
            ledger, self._admitted_to = self._admitted_to, None
            if not self._weight_held_for_what_is_left(ledger):
                ledger.release(self.execution_id)
            self.s.metrics.set_ledger(ledger.snapshot())

    def _weight_held_for_what_is_left(self, ledger: Ledger) -> bool:
        """Processes of the task that would not die (Outcome.unkillable_pids: stuck in the
        kernel, or frozen) still hold the memory its weight stood for: the weight stays taken
        until the last of them has ended, and a thread of its own gives it back then (a pidfd
        of each wakes it; what runs less meanwhile is said). True when the weight was set aside
        so. A task whose cgroup could not be seen empty, with no process named, has nothing to
        wait for: its weight goes back, said. The uid is kept apart in both cases (_run_prepared)."""
        with self._lock:
            process = self._process
        outcome = process.poll() if process is not None else None
        if outcome is None or not (outcome.unkillable_pids or outcome.tree_left):
            return False
        if not outcome.unkillable_pids:
            self.log.warning("the task's cgroup could not be seen empty and removed, with no process of it named as "
                             "alive: its weight goes back (the next start-up's sweep ends anything left in it)")
            return False
        # A pid is taken for its process right after the sandbox saw that process alive and
        # would not let it go: a pid reused in between would keep the weight for a stranger.
        pidfds: dict[int, int] = {}
        for pid in outcome.unkillable_pids:
            try:
                pidfds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                continue  # it died after all
            except OSError as exc:  # no pidfd (before Linux 5.3), or out of descriptors: nothing to wait on
                for fd in pidfds:
                    os.close(fd)
                self.log.warning("processes {} of the task would not die, and cannot be watched ({}): its weight goes "
                                 "back although they may still hold memory; restart the executor to end them (its "
                                 "start-up sweep does)", " ".join(map(str, outcome.unkillable_pids)), exc.strerror)
                return False
        if not pidfds:
            self.log.info("the processes of the task that would not die have ended since; its weight goes back")
            return False
        aside = ledger.set_aside(self.execution_id)
        self.log.warning("processes {} of the task would not die (stuck in the kernel, or frozen): its weight {} stays "
                         "taken in the {} ledger until they end, as they may still hold its memory, so this executor "
                         "runs less meanwhile; a restart ends them (its start-up sweep)",
                         " ".join(map(str, pidfds.values())), f"{float(self.lease.weight or 0):.2f}", ledger.task_class)
        try:
            threading.Thread(target=_release_once_ended, args=(pidfds, ledger, aside, self.s.metrics, self.log),
                             name=f"left-behind-{self.execution_id}", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had (the master at its pids limit)
            for fd in pidfds:
                os.close(fd)
            ledger.release(aside)
            self.log.warning("no thread to watch them ({}): the weight goes back now", exc)
        return True

    def _kill_and_wait(self) -> None:
        with self._lock:
            process = self._process
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()
