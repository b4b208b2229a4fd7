"""One running task, from claim to deleted message, on its own thread.

claim -> prepare (secrets, venv) -> ask the main thread to launch it confined -> feed stdin,
pump the log -> every progress interval: ship the masked tail if it changed, read
cancel_requested -> outcome -> result (retried until recorded) -> full log -> delete the
message -> release the ledger. The message is deleted only after the result is recorded.
"""
from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from loguru import logger

from sandbox import ConfinedProcess, Limits, Outcome, SandboxError, Status

from .consumer import TaskMessage
from .controlplane_client import ControlPlaneClient, ControlPlaneError, retry_through_outages
from .log_upload import LogUploader
from .runtime.rejection import TaskRejected
from .runtime.task_log import TaskLog
from .runtime.tasks import PreparedTask
from .settings import Settings

SILENCE_WARNING_S = 120
FULL_LOG_UPLOAD_CAP = 8 << 20


@dataclass
class LaunchRequest:
    """Handed to the main thread, the only one that starts children (the parent-death signal
    is thread-scoped); the supervisor waits on `future`."""

    execution_id: str
    argv: list[str]
    limits: Limits
    env: dict[str, str]
    cwd: str
    future: Future


class TaskSupervisor(threading.Thread):
    def __init__(self, *, message: TaskMessage, settings: Settings, client: ControlPlaneClient,
                 prepare: Callable[[str, dict], PreparedTask], launch: Callable[[LaunchRequest], None],
                 finished: Callable[["TaskSupervisor"], None], task_log_path: Callable[[str], str],
                 delete_message: Callable[[TaskMessage], None], return_message: Callable[[TaskMessage], None],
                 record_outcome: Callable[[str, str, str | None, int | None], None], logs: LogUploader) -> None:
        super().__init__(name=f"task-{message.execution_id}", daemon=True)
        self.message = message
        self.settings = settings
        self.client = client
        self._prepare = prepare
        self._launch = launch
        self._finished = finished
        self._task_log_path = task_log_path
        self._delete_message = delete_message
        self._return_message = return_message
        self._record_outcome = record_outcome
        self._logs = logs
        self.execution_id = message.execution_id
        self.log = logger.bind(execution_id=message.execution_id)
        self.process: ConfinedProcess | None = None
        self.launch_requested = False  # set once the main thread has the request: no longer "preparing"
        self._end_reason: str | None = None  # "cancel" | "shutdown"
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    # called from the main thread on shutdown
    def abort(self) -> None:
        with self._lock:
            self._end_reason = self._end_reason or "shutdown"
            if self.process is not None:
                self.process.kill()

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            self.log.exception("task supervisor failed; the message will be redelivered")
        finally:
            self._finished(self)

    def _run(self) -> None:
        try:
            claimed = self._retrying("claim", lambda: self.client.claim(self.execution_id, self.settings.executor_id,
                                                                        self.message.receive_count))
        except ControlPlaneError as exc:
            if not exc.final:
                raise
            # Unknown execution, or a pool this token may not serve: no executor can run it. Left
            # undeleted, it returns after the visibility timeout and, past the pool's redrive
            # count, lands in the dead-letter queue where an operator can look at it.
            self.log.error("claim refused ({}): leaving message {} for the dead-letter queue (receive {})",
                           exc, self.message.message_id, self.message.receive_count)
            return
        if claimed is None:
            self.log.info("execution is final or running elsewhere: duplicate delivery, deleting the message")
            self._delete_message(self.message)
            return
        task = claimed["task"]
        started = time.monotonic()
        try:
            prepared = self._prepare(task, claimed.get("args") or {})
        except TaskRejected as exc:
            self.log.error("task rejected ({}): {}", exc.reason, exc)
            self._report({"status": "FAILURE", "reason": exc.reason, "log_tail": f"{exc.reason}: {exc}",
                          "duration_ms": int((time.monotonic() - started) * 1000)}, task)
            self._delete_message(self.message)
            return
        try:
            self._run_prepared(task, prepared, started)
        finally:
            prepared.cleanup()

    def _run_prepared(self, task: str, prepared: PreparedTask, started: float) -> None:
        task_log = TaskLog(self._task_log_path(self.execution_id), prepared.masker)
        limits = Limits(memory_max_bytes=prepared.memory_limit_bytes, pids_max=self.settings.task_pids_max,
                        timeout_s=self.settings.task_timeout_s)
        task_log.write_line(f"[executor] {task} on {self.settings.executor_id}; memory limit: "
                            f"{prepared.memory_limit_bytes if prepared.memory_limit_bytes else 'none'} bytes")
        self.log.info("starting {} (memory limit {} bytes)", task, prepared.memory_limit_bytes or "none")
        request = LaunchRequest(self.execution_id, prepared.argv, limits, prepared.env, prepared.workdir, Future())
        self.launch_requested = True
        self._launch(request)
        try:
            process: ConfinedProcess = request.future.result()
        except (SandboxError, RuntimeError) as exc:
            task_log.close()
            if isinstance(exc, RuntimeError):  # shutting down before start: someone else runs it
                self.log.info("not started ({}); returning the message", exc)
                self._return_message(self.message)
                return
            self._report({"status": "FAILURE", "reason": "SANDBOX_ERROR", "log_tail": str(exc)}, task)
            self._delete_message(self.message)
            return
        self.log.info("task process {} started", process.pid)
        with self._lock:
            self.process = process
            if self._end_reason is not None:
                process.kill()
        pump = task_log.pump(process.stdout)
        self._feed_stdin(process, prepared.stdin_bytes)
        outcome = self._watch(process, task_log)
        pump.join(timeout=10)
        task_log.write_line(f"[executor] outcome: {outcome.status.value} exit_code={outcome.exit_code} "
                            f"signal={outcome.signal} peak_memory_bytes={outcome.peak_memory_bytes}")
        if outcome.pids_limit_hits:
            task_log.write_line(f"[executor] the task reached its process limit: {outcome.pids_limit_hits} fork(s) "
                                f"refused at {self.settings.task_pids_max} processes and threads "
                                "(DATAHUB_EXECUTOR_TASK_PIDS_MAX)")
        task_log.close()
        body = self._result_body(outcome, prepared, task_log, started)
        self._upload_log(task_log)
        self._report(body, task)

    def _feed_stdin(self, process: ConfinedProcess, data: bytes) -> None:
        def write() -> None:
            try:
                process.stdin.write(data)
                process.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the task ended (or closed stdin) before reading it all; its outcome says why
        threading.Thread(target=write, name=f"stdin-{self.execution_id}", daemon=True).start()

    def _watch(self, process: ConfinedProcess, task_log: TaskLog) -> Outcome:
        sent_version = -1
        warned_silence = False
        while True:
            try:
                return process.wait(timeout=self.settings.progress_interval_s)
            except subprocess.TimeoutExpired:
                pass
            if not warned_silence and time.monotonic() - task_log.last_output > SILENCE_WARNING_S:
                task_log.write_line(f"[executor] no output for {SILENCE_WARNING_S} s; the task is still running")
                warned_silence = True
            elif time.monotonic() - task_log.last_output < SILENCE_WARNING_S:
                warned_silence = False
            tail = None
            if task_log.version != sent_version:
                sent_version = task_log.version
                tail = task_log.tail()
            try:
                answer = self.client.progress(self.execution_id, self.settings.executor_id, log_tail=tail,
                                              peak_memory_bytes=process.memory_peak())
            except ControlPlaneError:
                sent_version = -1  # resend the tail once the control plane is back
                continue
            if answer.get("cancel_requested"):
                with self._lock:
                    first = self._end_reason is None
                    self._end_reason = self._end_reason or "cancel"
                if first:
                    self.log.info("cancel requested: SIGTERM, SIGKILL after {} s", self.settings.cancel_grace_s)
                    process.terminate(grace_s=self.settings.cancel_grace_s)

    def _result_body(self, outcome: Outcome, prepared: PreparedTask, task_log: TaskLog, started: float) -> dict:
        status, reason = {
            Status.SUCCEEDED: ("SUCCESS", None),
            Status.FAILED: ("FAILURE", "EXIT_CODE" if outcome.exit_code is not None else "SIGNAL"),
            Status.MEMORY_LIMIT_EXCEEDED: ("FAILURE", "MEMORY_LIMIT_EXCEEDED"),
            Status.TIMED_OUT: ("TIMEOUT", "TIMEOUT"),
            Status.KILLED: ("ABORTED", "EXECUTOR_SHUTDOWN"),
        }[outcome.status]
        if outcome.status is Status.KILLED and self._end_reason == "cancel":
            status, reason = "CANCELLED", "CANCELLED"
        return {"status": status, "reason": reason, "exit_code": outcome.exit_code, "signal": outcome.signal,
                "duration_ms": int((time.monotonic() - started) * 1000), "peak_memory_bytes": outcome.peak_memory_bytes,
                "structured_report": prepared.structured_report(), "log_tail": task_log.tail()}

    def _upload_log(self, task_log: TaskLog) -> None:
        """Before the result, and like it retried through control-plane outages: a log shipped
        late is worth more than a result whose log is gone."""
        data = task_log.full_log(FULL_LOG_UPLOAD_CAP)
        try:
            where = self._retrying("log upload", lambda: self._logs.upload(self.execution_id, data), forever=True)
            self.log.debug("full log uploaded to {}", where)
        except Exception as exc:  # a 4xx from the control plane, or S3's error: the tail in the result remains
            self.log.warning("full log not uploaded to {}: {}", self._logs.destination(self.execution_id), exc)

    def _report(self, body: dict, task: str) -> None:
        body = {"executor_id": self.settings.executor_id, **body}
        answer = self._retrying("result", lambda: self.client.result(self.execution_id, body), forever=True)
        if not answer.get("recorded"):
            self.log.warning("result {} not recorded: {}", body["status"], answer.get("error"))
        self.log.info("finished: {} {}", body["status"], body.get("reason") or "")
        self._record_outcome(task, body["status"], body.get("reason"), body.get("peak_memory_bytes"))
        self._delete_message(self.message)

    def _retrying(self, what: str, call: Callable, *, forever: bool = False):
        """A claim gives up when the executor stops; a result is retried until it is recorded."""
        return retry_through_outages(call, stop=None if forever else self.stopping, what=f"{what} of {self.execution_id}")
