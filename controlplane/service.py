"""The control plane's rules: pools, sources, executions, executors, tokens.

Everything here is transport-free; api.py maps it onto HTTP. Errors are typed so the API can
answer 400/404/409 with the reason, and every change happens in one transaction so an error
leaves nothing half-written.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any

from vocabulary.safe_yaml import YamlRefused, load_bounded

from .ids import new_id
from .liveness import liveness
from .queues import Queues
from .store import Store, dumps, loads

FINAL = {"SUCCESS", "FAILURE", "CANCELLED", "TIMEOUT", "ABORTED", "DUPLICATE"}
RESULT_STATUSES = {"SUCCESS", "FAILURE", "CANCELLED", "TIMEOUT", "ABORTED"}
TASKS = {"RUN_INGEST", "TEST_CONNECTION", "RUN_MONITOR"}
POOL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")  # SQS queue names: 80 characters
FULL_LOG_CAP = 8 << 20


class Invalid(ValueError):
    """400: the request is wrong; the message says what."""


class NotFound(LookupError):
    """404."""


class Conflict(Exception):
    """409: the request is fine but the state forbids it."""


class Unauthorized(Exception):
    """401."""


class Forbidden(Exception):
    """403."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ControlPlane:
    def __init__(self, store: Store, queues: Queues) -> None:
        self.store = store
        self.queues = queues
        # Heartbeats cannot arrive while the control plane is down: after a restart an executor is
        # judged only from the restart on, so an outage of ours never makes executors "lost".
        self.started_at = time.time()

    def _seen(self, last_seen: float) -> float:
        return max(last_seen, self.started_at)

    # tokens -------------------------------------------------------------------------------
    def create_token(self, kind: str, pools: list[str] | None, description: str = "") -> tuple[dict, str]:
        """A new token: the record, and the token itself, shown this once and stored hashed."""
        if kind not in ("admin", "executor"):
            raise Invalid("kind must be admin or executor")
        for pool_id in pools or []:
            self.pool(pool_id)
        token = "dhx_" + secrets.token_urlsafe(32)
        record = {"id": new_id("tok_"), "kind": kind, "pools": pools, "description": description, "created_at": time.time()}
        with self.store.transaction() as tx:
            tx.execute("INSERT INTO tokens (id, hash, kind, pools, description, created_at) VALUES (?,?,?,?,?,?)",
                       (record["id"], hash_token(token), kind, dumps(pools) if pools is not None else None, description,
                        record["created_at"]))
        return record, token

    def tokens(self) -> list[dict]:
        rows = self.store.query("SELECT id, kind, pools, description, created_at FROM tokens ORDER BY created_at")
        return [{**r, "pools": loads(r["pools"])} for r in rows]

    def revoke_token(self, token_id: str) -> None:
        with self.store.transaction() as tx:
            if tx.execute("DELETE FROM tokens WHERE id=?", (token_id,)).rowcount == 0:
                raise NotFound(f"token {token_id} not found")

    def authenticate(self, header: str | None) -> dict:
        if not header or not header.startswith("Bearer "):
            raise Unauthorized("missing bearer token")
        row = self.store.one("SELECT id, kind, pools FROM tokens WHERE hash=?", (hash_token(header[7:].strip()),))
        if row is None:
            raise Unauthorized("unknown token")
        return {**row, "pools": loads(row["pools"])}

    @staticmethod
    def require_pool(identity: dict, pool_id: str) -> None:
        if identity["kind"] == "admin" or identity["pools"] is None or pool_id in identity["pools"]:
            return
        raise Forbidden(f"this token is not scoped to pool {pool_id}")

    @staticmethod
    def require_admin(identity: dict) -> None:
        if identity["kind"] != "admin":
            raise Forbidden("an admin token is required")

    # pools --------------------------------------------------------------------------------
    def create_pool(self, pool_id: str, description: str = "", default: bool = False,
                    visibility_timeout_s: int = 60, max_receive_count: int = 5) -> dict:
        if not POOL_ID.match(pool_id or ""):
            raise Invalid("pool id must be 1-48 letters, digits, '_' or '-', starting with a letter or digit")
        if not 1 <= visibility_timeout_s <= 43200:
            raise Invalid("visibility_timeout_s must be between 1 and 43200 (SQS's 12-hour ceiling)")
        if not 1 <= max_receive_count <= 1000:
            raise Invalid("max_receive_count must be between 1 and 1000")
        if self.store.one("SELECT id FROM pools WHERE id=?", (pool_id,)):
            raise Conflict(f"pool {pool_id} already exists")
        queue_url, dlq_url = self.queues.create_pool_queues(pool_id, visibility_timeout_s, max_receive_count)
        with self.store.transaction() as tx:
            if default:
                tx.execute("UPDATE pools SET is_default=0")
            tx.execute("INSERT INTO pools VALUES (?,?,?,?,?,?,?,?)",
                       (pool_id, description, int(default), queue_url, dlq_url, visibility_timeout_s, max_receive_count,
                        time.time()))
        return self.pool(pool_id)

    def restore_embedded_queues(self) -> int:
        """After a restart of the embedded queue server (its messages live in memory): recreate
        every pool's queues and enqueue every PENDING execution again. Returns how many."""
        for pool in self.store.query("SELECT * FROM pools"):
            queue_url, dlq_url = self.queues.create_pool_queues(pool["id"], pool["visibility_timeout_s"], pool["max_receive_count"])
            with self.store.transaction() as tx:
                tx.execute("UPDATE pools SET queue_url=?, dlq_url=? WHERE id=?", (queue_url, dlq_url, pool["id"]))
        pending = self.store.query("SELECT id FROM executions WHERE status='PENDING' ORDER BY created_at")
        for row in pending:
            self._enqueue(self.execution(row["id"]))
        return len(pending)

    def set_default_pool(self, pool_id: str) -> dict:
        self.pool(pool_id)
        with self.store.transaction() as tx:
            tx.execute("UPDATE pools SET is_default=(id=?)", (pool_id,))
        return self.pool(pool_id)

    def pool(self, pool_id: str) -> dict:
        row = self.store.one("SELECT * FROM pools WHERE id=?", (pool_id,))
        if row is None:
            raise NotFound(f"pool {pool_id} not found")
        row["is_default"] = bool(row["is_default"])
        return row

    def pools(self) -> list[dict]:
        now = time.time()
        result = []
        for row in self.store.query("SELECT * FROM pools ORDER BY id"):
            row["is_default"] = bool(row["is_default"])
            row["executors"] = self.executors(row["id"], now)
            row["online_executors"] = sum(1 for e in row["executors"] if e["status"] == "ONLINE")
            row["status"] = "ONLINE" if row["online_executors"] else "NO_ONLINE_EXECUTOR"
            result.append(row)
        return result

    def delete_pool(self, pool_id: str) -> None:
        pool = self.pool(pool_id)
        users = self.store.query("SELECT name FROM sources WHERE pool_id=?", (pool_id,))
        if users:
            raise Conflict(f"pool {pool_id} is used by sources: {', '.join(u['name'] for u in users)}; move them first")
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM pools WHERE id=?", (pool_id,))
            tx.execute("DELETE FROM executors WHERE pool_id=?", (pool_id,))
        self.queues.delete_pool_queues(pool["queue_url"], pool["dlq_url"])

    def pool_queue(self, pool_id: str) -> dict:
        pool = self.pool(pool_id)
        return {"pool_id": pool_id, "queue_url": pool["queue_url"], "dlq_url": pool["dlq_url"],
                "region": self.queues.region, "endpoint_url": self.queues.endpoint_url if self.queues.local else None,
                "visibility_timeout_s": pool["visibility_timeout_s"]}

    # executors ----------------------------------------------------------------------------
    def heartbeat(self, pool_id: str, executor_id: str, body: dict) -> dict:
        self.pool(pool_id)
        now = time.time()
        details = {k: body.get(k) for k in ("sandbox", "capacity", "running_executions", "health")}
        with self.store.transaction() as tx:
            tx.execute(
                "INSERT INTO executors VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(pool_id, executor_id) DO UPDATE SET "
                "hostname=excluded.hostname, version=excluded.version, state=excluded.state, "
                "heartbeat_interval_s=excluded.heartbeat_interval_s, started_at=excluded.started_at, "
                "last_seen=excluded.last_seen, details=excluded.details",
                (pool_id, executor_id, body.get("hostname"), body.get("version"), body["state"],
                 float(body["heartbeat_interval_s"]), body.get("started_at"), now, dumps(details)))
        return {"ok": True, "server_time": now}

    def executors(self, pool_id: str, now: float | None = None) -> list[dict]:
        now = time.time() if now is None else now
        result = []
        for row in self.store.query("SELECT * FROM executors WHERE pool_id=? ORDER BY executor_id", (pool_id,)):
            details = loads(row.pop("details"), {})
            status = liveness(self._seen(row["last_seen"]), row["heartbeat_interval_s"], now, row["state"])
            result.append({**row, **details, "status": status,
                           "last_seen_s_ago": round(now - row["last_seen"], 1)})
        return result

    def _executor_status(self, pool_id: str, executor_id: str | None, now: float) -> str:
        if executor_id is None:
            return "OFFLINE"
        row = self.store.one("SELECT last_seen, heartbeat_interval_s, state FROM executors WHERE pool_id=? AND executor_id=?",
                             (pool_id, executor_id))
        if row is None:
            return "OFFLINE"
        return liveness(self._seen(row["last_seen"]), row["heartbeat_interval_s"], now, row["state"])

    def abort_lost_executions(self) -> list[str]:
        """RUNNING executions whose executor went OFFLINE become ABORTED (EXECUTOR_LOST)."""
        now = time.time()
        lost = []
        for row in self.store.query("SELECT id, pool_id, executor_id FROM executions WHERE status='RUNNING'"):
            if self._executor_status(row["pool_id"], row["executor_id"], now) == "OFFLINE":
                with self.store.transaction() as tx:
                    changed = tx.execute(
                        "UPDATE executions SET status='ABORTED', reason='EXECUTOR_LOST', finished_at=? "
                        "WHERE id=? AND status='RUNNING' AND executor_id IS ?", (now, row["id"], row["executor_id"])).rowcount
                if changed:
                    lost.append(row["id"])
        return lost

    # sources ------------------------------------------------------------------------------
    def create_source(self, name: str, recipe: str, pool_id: str | None = None, extra_env: dict | None = None,
                      version: str | None = None) -> dict:
        if not name or len(name) > 200:
            raise Invalid("name must be 1-200 characters")
        _validate_recipe(recipe)
        extra_env = _validate_extra_env(extra_env or {})
        if self.store.one("SELECT id FROM sources WHERE name=?", (name,)):
            raise Conflict(f"a source named {name} already exists")
        pool_id = pool_id or self._default_pool_id()
        self.pool(pool_id)
        source_id = new_id("src_")
        with self.store.transaction() as tx:
            tx.execute("INSERT INTO sources VALUES (?,?,?,?,?,?,?)",
                       (source_id, name, pool_id, recipe, dumps(extra_env), version, time.time()))
        return self.source(source_id)

    def _default_pool_id(self) -> str:
        row = self.store.one("SELECT id FROM pools WHERE is_default=1")
        if row is None:
            raise Invalid("no pool given and no default pool exists: create one with default=true or name a pool")
        return row["id"]

    def update_source(self, source_id: str, *, pool_id: str | None = None, recipe: str | None = None,
                      extra_env: dict | None = None, version: str | None = None) -> dict:
        self.source(source_id)
        changes: dict[str, Any] = {}
        if pool_id is not None:
            self.pool(pool_id)
            changes["pool_id"] = pool_id
        if recipe is not None:
            _validate_recipe(recipe)
            changes["recipe"] = recipe
        if extra_env is not None:
            changes["extra_env"] = dumps(_validate_extra_env(extra_env))
        if version is not None:
            changes["version"] = version
        if changes:
            with self.store.transaction() as tx:
                tx.execute(f"UPDATE sources SET {', '.join(f'{k}=?' for k in changes)} WHERE id=?", (*changes.values(), source_id))
        return self.source(source_id)

    def source(self, source_id: str) -> dict:
        row = self.store.one("SELECT * FROM sources WHERE id=? OR name=?", (source_id, source_id))
        if row is None:
            raise NotFound(f"source {source_id} not found")
        row["extra_env"] = loads(row["extra_env"], {})
        last = self.store.one("SELECT id, status FROM executions WHERE source_id=? ORDER BY created_at DESC, id DESC LIMIT 1",
                              (row["id"],))
        row["last_execution"] = last
        return row

    def sources(self) -> list[dict]:
        return [self.source(r["id"]) for r in self.store.query("SELECT id FROM sources ORDER BY name")]

    # executions ---------------------------------------------------------------------------
    def run_source(self, source_id: str, task: str = "RUN_INGEST") -> dict:
        if task not in TASKS:
            raise Invalid(f"task must be one of {', '.join(sorted(TASKS))}")
        source = self.source(source_id)
        pool = self.pool(source["pool_id"])
        execution_id = new_id("exe_")
        args = {"recipe": source["recipe"], "version": source["version"] or "", "debug_mode": False,
                "extra_env_vars": source["extra_env"], "extra_pip_requirements": []}
        now = time.time()
        with self.store.transaction() as tx:
            tx.execute("INSERT INTO executions (id, source_id, pool_id, task, args, status, created_at) VALUES (?,?,?,?,?,?,?)",
                       (execution_id, source["id"], pool["id"], task, dumps(args), "PENDING", now))
        execution = self.execution(execution_id)
        try:
            self._enqueue(execution)
        except Exception:
            with self.store.transaction() as tx:
                tx.execute("DELETE FROM executions WHERE id=?", (execution_id,))
            raise
        return execution

    def _enqueue(self, execution: dict) -> None:
        """The SQS message of docs/protocol.md: no recipe, no secret; the executor claims the arguments."""
        pool = self.pool(execution["pool_id"])
        message = {"v": 1, "execution_id": execution["id"], "task": execution["task"], "pool_id": pool["id"],
                   "requested_at": int(execution["created_at"] * 1000)}
        weight = execution["args"].get("extra_env_vars", {}).get("EXECUTOR_TASK_WEIGHT")
        if weight is not None:
            try:
                message["weight"] = float(weight)
            except ValueError:
                pass  # the executor rejects it with a clear reason when it claims the task
        self.queues.send(pool["queue_url"], message)

    def execution(self, execution_id: str, *, with_log: bool = False) -> dict:
        row = self.store.one("SELECT * FROM executions WHERE id=?", (execution_id,))
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        full_log = row.pop("full_log")
        row["args"] = loads(row["args"], {})
        row["structured_report"] = loads(row["structured_report"])
        row["cancel_requested"] = bool(row["cancel_requested"])
        row["has_full_log"] = full_log is not None
        if with_log:
            row["log"] = full_log.decode("utf-8", "replace") if full_log is not None else (row["log_tail"] or "")
        return row

    def executions(self, *, source_id: str | None = None, status: str | None = None, limit: int = 100) -> list[dict]:
        sql, params = "SELECT id FROM executions WHERE 1=1", []
        if source_id:
            sql += " AND source_id=?"
            params.append(self.source(source_id)["id"])
        if status:
            sql += " AND status=?"
            params.append(status)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(max(1, min(limit, 1000)))
        return [self.execution(r["id"]) for r in self.store.query(sql, tuple(params))]

    def cancel(self, execution_id: str) -> dict:
        with self.store.transaction() as tx:
            row = tx.execute("SELECT status FROM executions WHERE id=?", (execution_id,)).fetchone()
            if row is None:
                raise NotFound(f"execution {execution_id} not found")
            if row["status"] == "PENDING":
                tx.execute("UPDATE executions SET status='CANCELLED', reason='CANCELLED_BEFORE_START', finished_at=? "
                           "WHERE id=?", (time.time(), execution_id))
            elif row["status"] == "RUNNING":
                tx.execute("UPDATE executions SET cancel_requested=1 WHERE id=?", (execution_id,))
            # a final status is final: a late cancel changes nothing
        return self.execution(execution_id)

    def claim(self, execution_id: str, executor_id: str, receive_count: int | None, identity: dict) -> dict:
        now = time.time()
        with self.store.transaction() as tx:
            row = tx.execute("SELECT * FROM executions WHERE id=?", (execution_id,)).fetchone()
            if row is None:
                raise NotFound(f"execution {execution_id} not found")
            self.require_pool(identity, row["pool_id"])
            if row["status"] in FINAL:
                raise Conflict(f"execution {execution_id} is already {row['status']}")
            if row["status"] == "RUNNING" and row["executor_id"] != executor_id:
                holder = self._executor_status(row["pool_id"], row["executor_id"], now)
                if holder == "ONLINE":
                    raise Conflict(f"execution {execution_id} is running on live executor {row['executor_id']}")
            other = tx.execute("SELECT id FROM executions WHERE source_id=? AND status='RUNNING' AND id<>?",
                               (row["source_id"], execution_id)).fetchone()
            if other is not None:
                # Committed before the 409 is raised: the DUPLICATE verdict is the answer.
                tx.execute("UPDATE executions SET status='DUPLICATE', reason=?, finished_at=? WHERE id=?",
                           (f"source already running in {other['id']}", now, execution_id))
            else:
                tx.execute("UPDATE executions SET status='RUNNING', executor_id=?, receive_count=?, "
                           "started_at=COALESCE(started_at, ?), last_progress_at=? WHERE id=?",
                           (executor_id, receive_count, now, now, execution_id))
        if other is not None:
            raise Conflict(f"execution {execution_id} is a DUPLICATE: its source is already running in {other['id']}")
        claimed = self.store.one("SELECT task, args FROM executions WHERE id=?", (execution_id,))
        return {"execution_id": execution_id, "task": claimed["task"], "args": loads(claimed["args"], {})}

    def progress(self, execution_id: str, executor_id: str, log_tail: str | None, peak_memory_bytes: int | None,
                 identity: dict) -> dict:
        with self.store.transaction() as tx:
            row = tx.execute("SELECT pool_id, status, executor_id, cancel_requested FROM executions WHERE id=?",
                             (execution_id,)).fetchone()
            if row is None:
                raise NotFound(f"execution {execution_id} not found")
            self.require_pool(identity, row["pool_id"])
            if row["status"] == "RUNNING" and row["executor_id"] == executor_id:
                tx.execute("UPDATE executions SET log_tail=COALESCE(?, log_tail), "
                           "peak_memory_bytes=MAX(COALESCE(peak_memory_bytes, 0), COALESCE(?, 0)), last_progress_at=? "
                           "WHERE id=?", (log_tail, peak_memory_bytes, time.time(), execution_id))
            cancel = bool(row["cancel_requested"]) or row["status"] in ("CANCELLED",)
        return {"cancel_requested": cancel, "status": row["status"]}

    def result(self, execution_id: str, executor_id: str, body: dict, identity: dict) -> dict:
        status = body["status"]
        if status not in RESULT_STATUSES:
            raise Invalid(f"status must be one of {', '.join(sorted(RESULT_STATUSES))}")
        with self.store.transaction() as tx:
            row = tx.execute("SELECT pool_id, status, reason FROM executions WHERE id=?", (execution_id,)).fetchone()
            if row is None:
                raise NotFound(f"execution {execution_id} not found")
            self.require_pool(identity, row["pool_id"])
            if row["status"] in FINAL:
                if row["status"] == status:
                    return {"ok": True, "status": status, "repeated": True}
                raise Conflict(f"execution {execution_id} is already {row['status']}; a final status is final")
            report = body.get("structured_report")
            tx.execute(
                "UPDATE executions SET status=?, reason=?, executor_id=?, exit_code=?, signal=?, duration_ms=?, "
                "peak_memory_bytes=COALESCE(?, peak_memory_bytes), structured_report=?, log_tail=COALESCE(?, log_tail), "
                "finished_at=? WHERE id=?",
                (status, body.get("reason"), executor_id, body.get("exit_code"), body.get("signal"), body.get("duration_ms"),
                 body.get("peak_memory_bytes"), dumps(report) if report is not None else None, body.get("log_tail"),
                 time.time(), execution_id))
        return {"ok": True, "status": status, "repeated": False}

    def store_log(self, execution_id: str, data: bytes, identity: dict) -> dict:
        row = self.store.one("SELECT pool_id FROM executions WHERE id=?", (execution_id,))
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        self.require_pool(identity, row["pool_id"])
        if len(data) > FULL_LOG_CAP:
            half = FULL_LOG_CAP // 2
            data = data[:half] + b"\n[... log truncated by the control plane ...]\n" + data[-half:]
        with self.store.transaction() as tx:
            tx.execute("UPDATE executions SET full_log=? WHERE id=?", (data, execution_id))
        return {"ok": True, "bytes": len(data)}


def _validate_recipe(recipe: str) -> None:
    if not isinstance(recipe, str) or not recipe.strip():
        raise Invalid("recipe must be non-empty YAML or JSON text")
    try:
        parsed = load_bounded(recipe)
    except YamlRefused as exc:
        raise Invalid(f"recipe is refused: {exc}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("source"), dict) or "type" not in parsed["source"]:
        raise Invalid("recipe must be a mapping with a source: {type: ..., config: ...} section")


def _validate_extra_env(extra_env: Any) -> dict[str, str]:
    if not isinstance(extra_env, dict):
        raise Invalid("extra_env must be an object of NAME: value strings")
    clean = {}
    for key, value in extra_env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            raise Invalid(f"extra_env name {key!r} is not a valid environment variable name")
        clean[str(key)] = str(value)
    return clean
