"""The aspects the executor writes into DataHub, built as DataHub's model defines them.

Pure functions, no I/O: tests check each result against DataHub's own schema classes.
- `dataHubRemoteExecutorStatus`, the heartbeat, with what DataHub has no field for in the
  proposal's system metadata properties (docs/protocol.md lists them);
- `dataHubExecutionRequestResult`: RUNNING with the masked log tail in `report` while a task
  runs, then its final status, with `structuredReport` = the ingestion report. Our reason code,
  exit code, signal and peak memory go into the structured report's JSON under "executor".
"""
from __future__ import annotations

import json
import time
from typing import Any

from vocabulary.results import EXECUTOR_KEY, structured_report

# DataHub's executor keeps a result under GMS's payload limit by keeping the last 800,000
# characters of the report; so do we. The structured report is capped too: a run with a very
# long list of warnings keeps its executor section and a note instead.
REPORT_MAX_CHARS = 800_000
STRUCTURED_REPORT_MAX_CHARS = 4_000_000


def now_ms() -> int:
    return int(time.time() * 1000)


def proposal(entity_type: str, urn: str, aspect_name: str, value: dict[str, Any], *,
             properties: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A MetadataChangeProposal in the JSON DataHub's ingest endpoint takes."""
    mcp: dict[str, Any] = {"entityType": entity_type, "entityUrn": urn, "changeType": "UPSERT", "aspectName": aspect_name,
                           "aspect": {"value": json.dumps(value), "contentType": "application/json"},
                           "systemMetadata": {"lastObserved": now_ms(), "runId": "no-run-id-provided",
                                              "properties": {"clientId": "datahub-remote-executor", **(properties or {})}}}
    if headers:
        mcp["headers"] = headers
    return mcp


def executor_status(*, pool_id: str, version: str, address: str, hostname: str, uptime_s: float, stopped: bool,
                    log_delivery: bool) -> dict[str, Any]:
    return {"executorPoolId": pool_id, "executorReleaseVersion": version, "executorAddress": address,
            "executorHostname": hostname, "executorUptime": round(float(uptime_s), 3), "executorExpired": False,
            "executorStopped": stopped, "executorEmbedded": False, "executorInternal": False,
            "logDeliveryEnabled": log_delivery, "reportedAt": now_ms()}


def running_result(*, started_ms: int, report: str | None, peak_memory_bytes: int | None, task: str) -> dict[str, Any]:
    value: dict[str, Any] = {"status": "RUNNING", "startTimeMs": started_ms}
    if report is not None:
        value["report"] = report[-REPORT_MAX_CHARS:]
    if peak_memory_bytes:
        value["structuredReport"] = _structured(task, None, {"peakMemoryBytes": peak_memory_bytes})
    return value


def final_result(*, status: str, task: str, started_ms: int, duration_ms: int, report: str,
                 ingestion_report: Any, reason: str | None, exit_code: int | None = None, signal: int | None = None,
                 peak_memory_bytes: int | None = None, executor_id: str | None = None,
                 log_in_report: bool = False) -> dict[str, Any]:
    """LOG_IN_REPORT: the report is the task's whole log, so no separate upload follows."""
    details = {k: v for k, v in (("reason", reason), ("exitCode", exit_code), ("signal", signal),
                                 ("peakMemoryBytes", peak_memory_bytes), ("executorId", executor_id),
                                 ("logInReport", log_in_report or None)) if v is not None}
    return {"status": status, "startTimeMs": started_ms, "durationMs": max(0, duration_ms),
            "report": report[-REPORT_MAX_CHARS:], "structuredReport": _structured(task, ingestion_report, details)}


def _structured(task: str, ingestion_report: Any, details: dict[str, Any]) -> dict[str, str]:
    """The shared structured report, its ingestion report left to the task log when over the cap."""
    report = structured_report(task, details, ingestion_report)
    text = report["serializedValue"]
    if len(text) > STRUCTURED_REPORT_MAX_CHARS:
        report["serializedValue"] = json.dumps({EXECUTOR_KEY: {**details, "note": f"the ingestion report ({len(text)} "
                                                                                 "characters) was over the size limit "
                                                                                 "and is in the task log"}})
    return report

