"""Executors: one `dataHubRemoteExecutor` entity per executor process, its heartbeat the
`dataHubRemoteExecutorStatus` aspect it writes through DataHub's ingest endpoint.

What DataHub has no field for travels in the aspect's system metadata properties, as strings:
instanceId (random per process start), heartbeatIntervalSeconds, state, startedAt,
runningExecutions (JSON list), capacity, sandbox and health (JSON objects). The control plane
keeps, per executor id, the process that speaks for it (table executor_instances): a second
process heartbeating with the same id while the first is online is refused (409), so two
processes can never share one id's claims. Each heartbeat's list of running executions is
reconciled against the executions this process holds (executions.reconcile), once: the
executor's HTTP layer re-sends a heartbeat whose answer was lost, and a copy (a reportedAt not
later than the last one reconciled for the process) only refreshes its liveness, so one
heartbeat never counts as two misses.
"""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from vocabulary import json_text, statuses as S

from . import entities as E
from .errors import Conflict, Forbidden, Invalid
from .executions import Executions
from .liveness import OFFLINE, OFFLINE_AFTER_MISSED, ONLINE, liveness
from .metadata import aspect_store
from .store import Store
from .tokens import EXECUTOR, Identity

LATEST_REPORTED_AT_MS = 253402300799999  # 9999-12-31T23:59:59.999Z

STATES = ("STARTING", "ACTIVE", "DRAINING", "STOPPED")
DEFAULT_INTERVAL_S = 30.0


def _json_property(properties: dict[str, str], name: str, default: Any) -> Any:
    raw = properties.get(name)
    if raw is None:
        return default
    try:
        return json_text.loads(raw)
    except ValueError:
        raise Invalid(f"systemMetadata.properties.{name} is not JSON") from None


def _not_seen_before(reported_ms: int | None, last_reconciled_ms: int | None, interval_s: float) -> bool:
    """Whether a heartbeat reported at REPORTED_MS (the executor's clock) is one the process has
    not sent before: later than the last one reconciled. One much earlier than that (by more
    than an OFFLINE judgement's worth of intervals) is no late copy: the executor's clock was
    set back, and it is taken as new rather than stopping reconciliation until the clock
    catches up. A heartbeat without reportedAt is always new (as before reportedAt was read)."""
    if reported_ms is None or last_reconciled_ms is None or reported_ms > last_reconciled_ms:
        return True
    return last_reconciled_ms - reported_ms > OFFLINE_AFTER_MISSED * interval_s * 1000


class Executors:
    def __init__(self, store: Store, executions: Executions, started_at: float) -> None:
        self.store = store
        self.executions = executions
        self.started_at = started_at

    def _not_before(self) -> float:
        """Executors are judged from our start, or the wall clock's last step forward, at the earliest."""
        return self.executions.ctx.clock.not_before(self.started_at)

    def on_status(self, tx: sqlite3.Connection, executor_id: str, status: dict[str, Any],
                  system_metadata: dict[str, Any] | None, identity: Identity, now: float | None = None) -> dict[str, Any]:
        """A heartbeat. Returns the status to store (executorExpired reset; None when the heartbeat
        is not newer than the last one of its process, which is then kept) and what was queued again."""
        now = now or time.time()
        if identity.kind != EXECUTOR and not identity.is_admin:
            raise Forbidden("executor status is written by executors")
        pool_id = status["executorPoolId"]
        identity.require_pool(pool_id)
        if tx.execute("SELECT 1 FROM pool_queues WHERE pool_id=?", (pool_id,)).fetchone() is None:
            raise Invalid(f"executorPoolId {pool_id!r} names no pool")
        properties = dict((system_metadata or {}).get("properties") or {})
        instance = properties.get("instanceId") or "-"
        if not isinstance(instance, str) or len(instance) > 64:
            # A claim names it (1-64 characters): one longer could heartbeat but never claim.
            raise Invalid("systemMetadata.properties.instanceId must be at most 64 characters")
        try:
            interval = float(properties.get("heartbeatIntervalSeconds") or DEFAULT_INTERVAL_S)
        except ValueError:
            raise Invalid("systemMetadata.properties.heartbeatIntervalSeconds is not a number") from None
        if not 0 < interval <= 3600:
            raise Invalid("heartbeatIntervalSeconds must be in (0, 3600]")
        state = properties.get("state") or ("STOPPED" if status.get("executorStopped") else "ACTIVE")
        if not isinstance(state, str) or state not in STATES:
            raise Invalid(f"state must be one of {', '.join(STATES)}")
        running = _json_property(properties, "runningExecutions", None)
        if running is not None and (not isinstance(running, list) or not all(isinstance(r, str) for r in running)):
            raise Invalid("runningExecutions must be a JSON list of execution ids")
        current = tx.execute("SELECT pool_id, instance, heartbeat_interval_s, last_seen, state, reported_at_ms "
                             "FROM executor_instances WHERE executor_id=?", (executor_id,)).fetchone()
        if current is not None and current[1] != instance:
            if liveness(current[3], current[2], now, current[4], self._not_before()) == ONLINE:
                raise Conflict(f"executor id {executor_id} is in use by another executor process that is still "
                               "running; give each executor its own DATAHUB_EXECUTOR_ID (the default, the host name "
                               "with a random suffix, is unique)")
        if current is not None and current[0] != pool_id:
            identity.require_pool(current[0])
        reported = status.get("reportedAt")
        reported = reported if isinstance(reported, int) and not isinstance(reported, bool) else None
        if reported is not None and not 0 <= reported <= LATEST_REPORTED_AT_MS:
            # A Long, yet no clock's reading: kept, it overflowed the claim's time on the
            # executor's clock (SQLite's 64 bits) and every claim of that process failed with 500.
            raise Invalid("reportedAt must be a time in milliseconds since 1970, before the year 10000")
        last_reported = current[5] if current is not None and current[1] == instance else None
        new_heartbeat = _not_seen_before(reported, last_reported, interval)
        if not new_heartbeat:
            # A copy (the HTTP layer re-sent it) or one overtaken by a later heartbeat (a DRAINING
            # beat retried past the final STOPPED one): it says nothing the stored state does not
            # say better, and writing it would bring a STOPPED executor back to life. Its arrival
            # still proves the process is there now: its liveness is refreshed, nothing else (not
            # reported_arrived_at, which belongs to the reportedAt kept).
            if last_reported is not None:
                tx.execute("UPDATE executor_instances SET last_seen=MAX(last_seen, ?) WHERE executor_id=? AND instance=?",
                           (now, executor_id, instance))
            return {"status": None, "requeued": []}
        details = {"capacity": _json_property(properties, "capacity", {}), "sandbox": _json_property(properties, "sandbox", {}),
                   "health": _json_property(properties, "health", {}), "running_executions": running or [],
                   "started_at": properties.get("startedAt")}
        # reported_arrived_at goes with reported_at_ms, and only with it: a copy moves last_seen
        # alone, and a claim's time on the executor's clock counted from last_seen came out early
        # by the copy's delay (lifecycle._claim_on_executor_clock).
        tx.execute("INSERT INTO executor_instances (executor_id, pool_id, instance, state, heartbeat_interval_s, last_seen, "
                   "details, reported_at_ms, reported_arrived_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(executor_id) "
                   "DO UPDATE SET pool_id=excluded.pool_id, instance=excluded.instance, state=excluded.state, "
                   "heartbeat_interval_s=excluded.heartbeat_interval_s, last_seen=excluded.last_seen, "
                   "details=excluded.details, reported_at_ms=excluded.reported_at_ms, "
                   "reported_arrived_at=excluded.reported_arrived_at",
                   (executor_id, pool_id, instance, state, interval, now, json.dumps(details), reported, now))
        requeued = []
        if current is not None and current[1] != instance:
            # A new process took over this id (a restart under a fixed id): what the old one held
            # is not running any more (the new process swept its task cgroups), so it runs again.
            requeued += self.executions.requeue_held(tx, executor_id, current[1],
                                                     f"executor {executor_id} restarted (a new process has its id)")
        if running is not None:
            # Taken as new though earlier than the last one: the executor's clock was set back.
            clock_set_back = reported is not None and last_reported is not None and reported < last_reported
            requeued += self.executions.reconcile(tx, executor_id, instance, set(running), reported_at_ms=reported,
                                                  final=state == "STOPPED", clock_set_back=clock_set_back)
        return {"status": {**status, "executorExpired": False}, "requeued": requeued}

    def expire_offline(self, now: float | None = None) -> list[str]:
        """Mark newly OFFLINE executors executorExpired, as DataHub Cloud does. The read here is a
        first cut: each is judged again inside the transaction that marks it, since a heartbeat
        may land in between (it would be overwritten, and DataHub show a live executor expired)."""
        now = now or time.time()
        expired = []
        for row in self.store.query("SELECT executor_id, heartbeat_interval_s, last_seen, state FROM executor_instances"):
            if not self._offline(row, now):
                continue
            with self.store.transaction() as tx:
                cursor = tx.execute("SELECT executor_id, heartbeat_interval_s, last_seen, state FROM executor_instances "
                                    "WHERE executor_id=?", (row["executor_id"],))
                current = cursor.fetchone()
                if current is None or not self._offline(dict(zip([d[0] for d in cursor.description], current)), now):
                    continue
                stored = aspect_store.get(tx, E.executor_urn(row["executor_id"]), E.EXECUTOR_STATUS)
                if stored is None or stored.value.get("executorExpired"):
                    continue
                aspect_store.put(tx, urn=stored.urn, entity_type=E.EXECUTOR, aspect=E.EXECUTOR_STATUS,
                                 value={**stored.value, "executorExpired": True}, system_metadata=stored.system_metadata)
            expired.append(row["executor_id"])
        return expired

    def _offline(self, row: dict[str, Any], now: float) -> bool:
        return liveness(row["last_seen"], row["heartbeat_interval_s"], now, row["state"], self._not_before()) == OFFLINE

    def forget(self, tx: sqlite3.Connection, executor_id: str, now: float | None = None) -> None:
        """Drop an executor's process record (its entity is being deleted). Refused while it is
        ONLINE or holds RUNNING executions: without the record the next sweep would judge its
        holder gone and abort everything it runs."""
        now = now or time.time()
        row = tx.execute("SELECT heartbeat_interval_s, last_seen, state FROM executor_instances WHERE executor_id=?",
                         (executor_id,)).fetchone()
        if row is not None and liveness(row[1], row[0], now, row[2], self._not_before()) == ONLINE:
            raise Conflict(f"executor {executor_id} is ONLINE; stop it before deleting it")
        held = tx.execute("SELECT COUNT(*) FROM executions WHERE executor_id=? AND status=?",
                          (executor_id, S.RUNNING)).fetchone()[0]
        if held:
            raise Conflict(f"executor {executor_id} holds {held} RUNNING executions; delete it once they end "
                           "(the sweep ends them ABORTED once it is OFFLINE)")
        tx.execute("DELETE FROM executor_instances WHERE executor_id=?", (executor_id,))

    def list(self, pool_id: str | None = None, now: float | None = None) -> list[dict[str, Any]]:
        now = now or time.time()
        sql, params = "SELECT * FROM executor_instances", ()
        if pool_id:
            sql, params = sql + " WHERE pool_id=?", (pool_id,)
        views = []
        for row in self.store.query(sql + " ORDER BY executor_id", params):
            with self.store.read() as db:
                stored = aspect_store.get(db, E.executor_urn(row["executor_id"]), E.EXECUTOR_STATUS)
            views.append(self._view(row, stored.value if stored else {}, now))
        return views

    def _view(self, row: dict[str, Any], status: dict[str, Any], now: float) -> dict[str, Any]:
        details = json.loads(row["details"])
        return {"executor_id": row["executor_id"], "urn": E.executor_urn(row["executor_id"]), "pool_id": row["pool_id"],
                "status": liveness(row["last_seen"], row["heartbeat_interval_s"], now, row["state"], self._not_before()),
                "state": row["state"], "hostname": status.get("executorHostname"),
                "address": status.get("executorAddress"), "version": status.get("executorReleaseVersion"),
                "uptime_s": status.get("executorUptime"), "reported_at": status.get("reportedAt"),
                "heartbeat_interval_s": row["heartbeat_interval_s"], "last_seen_s_ago": round(now - row["last_seen"], 1),
                **details}
