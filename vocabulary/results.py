"""How an execution's result carries what DataHub has no field for, read and written by both
sides: the lease header of an executor's writes, the structured report's type per task, and the
"executor" section of the structured report's JSON (reason code, exit code, signal, peak memory)."""
from __future__ import annotations

import json
from typing import Any

from . import json_text

# The MCP header (MetadataChangeProposal.headers) and HTTP header that carry a claim's lease.
LEASE_HEADER = "X-DataHub-Execution-Lease"
# structuredReport.type, as DataHub's managed ingestion names its reports.
REPORT_TYPES = {"RUN_INGEST": "CLI_INGEST", "TEST_CONNECTION": "TEST_CONNECTION", "RUN_MONITOR": "RUN_MONITOR"}
EXECUTOR_KEY = "executor"


def executor_details(result: dict[str, Any] | None) -> dict[str, Any]:
    """The "executor" section of a dataHubExecutionRequestResult's structured report, or {}."""
    report = (result or {}).get("structuredReport") or {}
    try:
        body = json_text.loads(report.get("serializedValue") or "{}")
    except (ValueError, TypeError):
        return {}
    details = body.get(EXECUTOR_KEY) if isinstance(body, dict) else None
    return details if isinstance(details, dict) else {}


def structured_report(task: str, details: dict[str, Any], ingestion_report: Any = None) -> dict[str, str]:
    """result.structuredReport as both sides write it: the task's ingestion report, if any, with
    what DataHub has no field for (reason, executor id, exit code, signal, peak memory) under
    "executor", where the admin CLI, GraphQL clients and the web page read it. Details that are
    None are left out."""
    body = dict(ingestion_report) if isinstance(ingestion_report, dict) else {}
    body[EXECUTOR_KEY] = {name: value for name, value in details.items() if value is not None}
    return {"type": REPORT_TYPES.get(task, task), "serializedValue": json.dumps(body, default=str),
            "contentType": "application/json"}
