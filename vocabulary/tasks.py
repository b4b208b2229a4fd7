"""Task names (DataHub's `dataHubExecutionRequestInput.task`) and the ledger each one uses."""
from __future__ import annotations

RUN_INGEST = "RUN_INGEST"
TEST_CONNECTION = "TEST_CONNECTION"
RUN_MONITOR = "RUN_MONITOR"

INGESTION_TASKS = frozenset({RUN_INGEST, TEST_CONNECTION})
MONITOR_TASKS = frozenset({RUN_MONITOR})
TASKS = INGESTION_TASKS | MONITOR_TASKS

INGESTION = "ingestion"
MONITORS = "monitors"
TASK_CLASSES = (INGESTION, MONITORS)


class UnknownTask(ValueError):
    """A task name no executor runs."""


def task_class(task: str) -> str:
    """The ledger (and queue) a task belongs to."""
    if task in INGESTION_TASKS:
        return INGESTION
    if task in MONITOR_TASKS:
        return MONITORS
    raise UnknownTask(f"task type {task!r} is not one of {', '.join(sorted(TASKS))}")
