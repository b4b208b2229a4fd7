"""Execution statuses and reasons: the values of `dataHubExecutionRequestResult.status`, and the
reason codes we add where DataHub has none (carried in the structured report)."""
from __future__ import annotations

PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
CANCELLED = "CANCELLED"
TIMEOUT = "TIMEOUT"
ABORTED = "ABORTED"
DUPLICATE = "DUPLICATE"

FINAL = frozenset({SUCCESS, FAILURE, CANCELLED, TIMEOUT, ABORTED, DUPLICATE})
# What an executor may report at the end of a run it holds.
EXECUTOR_RESULTS = frozenset({SUCCESS, FAILURE, CANCELLED, TIMEOUT, ABORTED})
# DataHub's CLI ends a run UNKNOWN when its pipeline stopped on what it cannot name (a
# BaseException that is neither an Exception nor an interrupt, such as asyncio's CancelledError:
# its PipelineStatus.UNKNOWN), and its default reporter writes that as the run's result; GMS
# stores it as any status. No executor of ours reports it: a run reaches it only by a result
# written from elsewhere, and it is an end like FINAL's.
UNKNOWN = "UNKNOWN"
ENDED = FINAL | {UNKNOWN}  # every status a run has ended in
ALL = frozenset({PENDING, RUNNING}) | ENDED

# Reasons the executor reports.
EXIT_CODE = "EXIT_CODE"
SIGNAL = "SIGNAL"
MEMORY_LIMIT_EXCEEDED = "MEMORY_LIMIT_EXCEEDED"
TIMEOUT_REASON = "TIMEOUT"
CANCELLED_REASON = "CANCELLED"
EXECUTOR_SHUTDOWN = "EXECUTOR_SHUTDOWN"
SECRET_NOT_FOUND = "SECRET_NOT_FOUND"
SECRET_REFUSED = "SECRET_REFUSED"
SECRET_ERROR = "SECRET_ERROR"
INVALID_RECIPE = "INVALID_RECIPE"
INVALID_WEIGHT = "INVALID_WEIGHT"
INVALID_MEMORY_LIMIT = "INVALID_MEMORY_LIMIT"
INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
UNKNOWN_TASK = "UNKNOWN_TASK"
UNKNOWN_VERSION = "UNKNOWN_VERSION"
VENV_INSTALL_FAILED = "VENV_INSTALL_FAILED"
SANDBOX_ERROR = "SANDBOX_ERROR"
EXECUTOR_ERROR = "EXECUTOR_ERROR"
# Reasons the control plane decides.
EXECUTOR_LOST = "EXECUTOR_LOST"
CANCELLED_BEFORE_START = "CANCELLED_BEFORE_START"
SOURCE_ALREADY_RUNNING = "SOURCE_ALREADY_RUNNING"
# A PENDING run's message reached its pool's dead-letter queue: received as often as the pool's
# redrive allows, and claimed by no executor (FAILURE).
MESSAGE_DEAD_LETTERED = "MESSAGE_DEAD_LETTERED"

EXECUTOR_REASONS = frozenset({
    EXIT_CODE, SIGNAL, MEMORY_LIMIT_EXCEEDED, TIMEOUT_REASON, CANCELLED_REASON, EXECUTOR_SHUTDOWN, SECRET_NOT_FOUND,
    SECRET_REFUSED, SECRET_ERROR, INVALID_RECIPE, INVALID_WEIGHT, INVALID_MEMORY_LIMIT, INVALID_ARGUMENTS, UNKNOWN_TASK,
    UNKNOWN_VERSION, VENV_INSTALL_FAILED, SANDBOX_ERROR, EXECUTOR_ERROR,
})
CONTROL_PLANE_REASONS = frozenset({EXECUTOR_LOST, CANCELLED_BEFORE_START, SOURCE_ALREADY_RUNNING, MESSAGE_DEAD_LETTERED})
REASONS = EXECUTOR_REASONS | CONTROL_PLANE_REASONS
