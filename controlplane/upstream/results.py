"""The forms of a result written to DataHub, from whole to least, for a DataHub that refuses one.

A result DataHub refuses for good (400: an aspect it finds invalid; 413: a proxy's body limit,
nginx's 1 MiB by default; 422) was tried again every minute as it was, for ever, and DataHub
showed the run open for good. DataHub's own CLI cuts its run summary's report to its last
800,000 characters so that the proposal stays under GMS's payload limit
(DatahubIngestionRunSummaryProvider._MAX_SUMMARY_SIZE); our executors cut theirs the same way
(executor/datahub_aspects.py), which a proxy's smaller limit can still refuse. So a refused
result is written again, at once, in the next form:

    WHOLE      as the run reported it
    SHORTENED  the report's last SHORT_REPORT_CHARS characters and the structured report's
               executor section (the reason, exit code, peak memory), a note saying so first
    MINIMAL    the status and times, and a note that the result could not be written

The status is the run's in every form: DataHub's UI shows how the run ended, and the note says
where the whole result is (this control plane keeps it). Pure: no I/O here.
"""
from __future__ import annotations

import json
from typing import Any

from vocabulary.results import EXECUTOR_KEY

WHOLE, SHORTENED, MINIMAL = 0, 1, 2
FORM_NAMES = {WHOLE: "whole", SHORTENED: "shortened", MINIMAL: "minimal"}
SHORT_REPORT_CHARS = 50_000  # ~300 KiB at worst in the proposal's JSON (every character escaped): under 1 MiB


def result_form(value: dict[str, Any], form: int, execution_id: str, refused: str) -> dict[str, Any]:
    """VALUE (a dataHubExecutionRequestResult) in FORM; REFUSED says how DataHub refused the
    form before it, for the note."""
    if form == WHOLE:
        return value
    kept = {name: value[name] for name in ("status", "startTimeMs", "durationMs") if name in value}
    report = value.get("report") if isinstance(value.get("report"), str) else ""
    if form == MINIMAL:
        kept["report"] = (f"{kept.get('status')}: the result of this run could not be written to DataHub, which "
                          f"refused it even shortened ({refused}). The whole result is execution {execution_id} "
                          f"on the remote executor's control plane.")
        return kept
    tail = report[-SHORT_REPORT_CHARS:]
    note = (f"[DataHub refused this result whole ({refused}): the report is cut to its last {len(tail):,} of "
            f"{len(report):,} characters and the structured report to its executor section. The whole result is "
            f"execution {execution_id} on the remote executor's control plane.]\n")
    kept["report"] = note + tail
    executor_section = _executor_section(value.get("structuredReport"))
    if executor_section is not None:
        kept["structuredReport"] = executor_section
    return kept


def _executor_section(structured: Any) -> dict[str, str] | None:
    """STRUCTURED (a structuredReport) with only its executor section (vocabulary.results), or
    None when it has none to keep."""
    if not isinstance(structured, dict) or not isinstance(structured.get("serializedValue"), str):
        return None
    try:
        body = json.loads(structured["serializedValue"])
    except ValueError:
        return None
    section = body.get(EXECUTOR_KEY) if isinstance(body, dict) else None
    if not isinstance(section, dict):
        return None
    serialized = json.dumps({EXECUTOR_KEY: section}, default=str)
    if len(serialized) > SHORT_REPORT_CHARS:
        return None
    return {"type": str(structured.get("type") or ""), "serializedValue": serialized,
            "contentType": str(structured.get("contentType") or "application/json")}
