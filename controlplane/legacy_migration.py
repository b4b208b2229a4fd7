"""Schema 1 -> 2: the first control plane kept pools, sources and executions in tables of its
own; schema 2 keeps them as DataHub entities. Run once, inside the migration's transaction, by
store.py: every legacy row becomes the aspects DataHub would hold for it, and the legacy tables
are dropped. Queue URLs of the monitors queues do not exist yet: the server creates every pool's
queues when it starts (Pools.ensure_queues) and records them.
"""
from __future__ import annotations

import json
import sqlite3

from vocabulary import statuses as S
from vocabulary.results import structured_report
from vocabulary.safe_yaml import YamlRefused, load_bounded

from . import entities as E
from .metadata import aspect_store


def convert(conn: sqlite3.Connection) -> None:
    default_pool = None
    for pool in conn.execute("SELECT * FROM legacy_pools").fetchall():
        pool = dict(pool)
        conn.execute("INSERT INTO pool_queues VALUES (?,?,?,?,?,?,?)",
                     (pool["id"], pool["queue_url"], pool["dlq_url"], "", "", pool["visibility_timeout_s"],
                      pool["max_receive_count"]))
        info = {"createdAt": int(pool["created_at"] * 1000), "queueUrl": pool["queue_url"], "state": {"status": "READY"},
                "channel": "SQS", "isEmbedded": False}
        if pool["description"]:
            info["description"] = pool["description"]
        aspect_store.put(conn, urn=E.pool_urn(pool["id"]), entity_type=E.POOL, aspect=E.POOL_INFO, value=info)
        if pool["is_default"]:
            default_pool = pool["id"]
    if default_pool:
        aspect_store.put(conn, urn=E.GLOBAL_CONFIG_URN, entity_type=E.GLOBAL_CONFIG, aspect=E.GLOBAL_CONFIG_ASPECT,
                         value={"defaultExecutorPoolId": default_pool})
    for source in conn.execute("SELECT * FROM legacy_sources").fetchall():
        source = dict(source)
        try:
            recipe = json.dumps(load_bounded(source["recipe"]))
        except YamlRefused:
            recipe = source["recipe"]
        config: dict = {"recipe": recipe, "executorId": source["pool_id"] or E.DEFAULT_EXECUTOR_ID}
        if source["version"]:
            config["version"] = source["version"]
        extra_env = json.loads(source["extra_env"] or "{}")
        if extra_env:
            config["extraArgs"] = {"extra_env_vars": json.dumps(extra_env)}
        recipe_type = _source_type(recipe)
        aspect_store.put(conn, urn=E.source_urn(source["id"]), entity_type=E.SOURCE, aspect=E.SOURCE_INFO,
                         value={"name": source["name"], "type": recipe_type, "config": config})
    for row in conn.execute("SELECT * FROM legacy_executions").fetchall():
        row = dict(row)
        args = json.loads(row["args"] or "{}")
        arguments = {k: v if isinstance(v, str) else json.dumps(v) for k, v in args.items()}
        conn.execute("INSERT INTO executions (id, pool_id, task, source_urn, status, reason, executor_id, receive_count, "
                     "created_at, started_at, finished_at, last_progress_at, peak_memory_bytes, exit_code, signal, "
                     "full_log, cancel_requested) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (row["id"], row["pool_id"], row["task"], E.source_urn(row["source_id"]), row["status"], row["reason"],
                      row["executor_id"], row["receive_count"], row["created_at"], row["started_at"], row["finished_at"],
                      row["last_progress_at"], row["peak_memory_bytes"], row["exit_code"], row["signal"],
                      row["full_log"], row["cancel_requested"]))
        urn = E.execution_urn(row["id"])
        aspect_store.put(conn, urn=urn, entity_type=E.EXECUTION, aspect=E.EXECUTION_INPUT, value={
            "task": row["task"], "args": arguments, "executorId": row["pool_id"], "requestedAt": int(row["created_at"] * 1000),
            "source": {"type": "MANUAL_INGESTION_SOURCE", "ingestionSource": E.source_urn(row["source_id"])}})
        if row["status"] != S.PENDING:
            aspect_store.put(conn, urn=urn, entity_type=E.EXECUTION, aspect=E.EXECUTION_RESULT, value=_result(row))
    for table in ("legacy_executions", "legacy_sources", "legacy_pools"):
        conn.execute(f"DROP TABLE {table}")


def _result(row: dict) -> dict:
    """The dataHubExecutionRequestResult of a legacy execution that left PENDING. Its reason,
    executor, exit code, signal and peak memory had columns of their own; now they live where
    everything reads them, in the structured report's executor section, beside the ingestion
    report the legacy row kept as JSON."""
    result: dict = {"status": row["status"], "report": row["log_tail"] or "",
                    "structuredReport": structured_report(row["task"], {
                        "reason": row["reason"], "exitCode": row["exit_code"], "signal": row["signal"],
                        "peakMemoryBytes": row["peak_memory_bytes"], "executorId": row["executor_id"]},
                        _legacy_report(row["structured_report"]))}
    if row["started_at"]:
        result["startTimeMs"] = int(row["started_at"] * 1000)
    if row["duration_ms"] is not None:
        result["durationMs"] = row["duration_ms"]
    return result


def _legacy_report(text: str | None) -> object:
    """The ingestion report a legacy row kept (JSON text), or None when it kept none readable."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _source_type(recipe_json: str) -> str:
    try:
        return str(json.loads(recipe_json)["source"]["type"])
    except (ValueError, KeyError, TypeError):
        return "unknown"
