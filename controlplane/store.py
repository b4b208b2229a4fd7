"""SQLite storage with numbered schema migrations (PRAGMA user_version).

One connection guarded by a lock: the control plane's write rate (heartbeats, progress) is far
below what one SQLite writer sustains, and a single connection makes every multi-statement
change atomic without cross-connection locking surprises. WAL keeps readers cheap.

Schema 2 is DataHub's model: `aspects` (versioned, as GMS's metadata_aspect_v2) and
`timeseries_aspects` hold every entity, ours included (pools, sources, execution requests,
executors); the other tables hold what DataHub has no field for and only the control plane
uses (queues, execution leases, executor instances, tokens, full logs, what each run wrote).
Schema 6 keeps each run's full log in a table of its own (execution_logs); schema 10 keys
timeseries points as GMS keys its documents; schema 11 keeps which run wrote each latest aspect
as GMS's system-metadata index does (run_index).
A database of schema 1 is converted on first start (controlplane/legacy_migration.py).
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Union

SCHEMA_1 = """
    CREATE TABLE pools (
        id TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', is_default INTEGER NOT NULL DEFAULT 0,
        queue_url TEXT NOT NULL, dlq_url TEXT NOT NULL, visibility_timeout_s INTEGER NOT NULL,
        max_receive_count INTEGER NOT NULL, created_at REAL NOT NULL);
    CREATE TABLE executors (
        pool_id TEXT NOT NULL, executor_id TEXT NOT NULL, hostname TEXT, version TEXT, state TEXT,
        heartbeat_interval_s REAL NOT NULL, started_at TEXT, last_seen REAL NOT NULL, details TEXT NOT NULL,
        PRIMARY KEY (pool_id, executor_id));
    CREATE TABLE sources (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, pool_id TEXT REFERENCES pools(id), recipe TEXT NOT NULL,
        extra_env TEXT NOT NULL, version TEXT, created_at REAL NOT NULL);
    CREATE TABLE executions (
        id TEXT PRIMARY KEY, source_id TEXT NOT NULL REFERENCES sources(id), pool_id TEXT NOT NULL, task TEXT NOT NULL,
        args TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, executor_id TEXT, receive_count INTEGER,
        created_at REAL NOT NULL, started_at REAL, finished_at REAL, last_progress_at REAL,
        exit_code INTEGER, signal INTEGER, duration_ms INTEGER, peak_memory_bytes INTEGER,
        structured_report TEXT, log_tail TEXT, full_log BLOB, cancel_requested INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX executions_by_source ON executions(source_id, created_at);
    CREATE INDEX executions_by_status ON executions(status);
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, pools TEXT, description TEXT NOT NULL,
        created_at REAL NOT NULL);
"""

SCHEMA_2 = """
    ALTER TABLE pools RENAME TO legacy_pools;
    ALTER TABLE sources RENAME TO legacy_sources;
    ALTER TABLE executions RENAME TO legacy_executions;
    DROP INDEX executions_by_source;
    DROP INDEX executions_by_status;
    DROP TABLE executors;
    ALTER TABLE tokens ADD COLUMN execution_id TEXT;
    CREATE TABLE aspects (
        urn TEXT NOT NULL, aspect TEXT NOT NULL, version INTEGER NOT NULL, entity_type TEXT NOT NULL,
        metadata TEXT NOT NULL, system_metadata TEXT, created_on INTEGER NOT NULL, created_by TEXT,
        PRIMARY KEY (urn, aspect, version)) WITHOUT ROWID;
    CREATE INDEX aspects_latest_by_type ON aspects(entity_type, aspect, urn) WHERE version = 0;
    CREATE TABLE timeseries_aspects (
        urn TEXT NOT NULL, aspect TEXT NOT NULL, timestamp_ms INTEGER NOT NULL, entity_type TEXT NOT NULL,
        metadata TEXT NOT NULL, system_metadata TEXT, created_on INTEGER NOT NULL,
        PRIMARY KEY (urn, aspect, timestamp_ms)) WITHOUT ROWID;
    CREATE TABLE run_writes (
        run_id TEXT NOT NULL, urn TEXT NOT NULL, aspect TEXT NOT NULL, entity_type TEXT NOT NULL,
        writes INTEGER NOT NULL, last_written INTEGER NOT NULL,
        PRIMARY KEY (run_id, urn, aspect)) WITHOUT ROWID;
    CREATE TABLE pool_queues (
        pool_id TEXT PRIMARY KEY, ingestion_queue_url TEXT NOT NULL, ingestion_dlq_url TEXT NOT NULL,
        monitors_queue_url TEXT NOT NULL, monitors_dlq_url TEXT NOT NULL,
        visibility_timeout_s INTEGER NOT NULL, max_receive_count INTEGER NOT NULL);
    CREATE TABLE executions (
        id TEXT PRIMARY KEY, pool_id TEXT NOT NULL, task TEXT NOT NULL, source_urn TEXT, status TEXT NOT NULL,
        reason TEXT, lease TEXT, lease_epoch INTEGER NOT NULL DEFAULT 0, executor_id TEXT, executor_instance TEXT,
        message_id TEXT,
        receive_count INTEGER, created_at REAL NOT NULL, enqueued_at REAL, started_at REAL, finished_at REAL,
        last_progress_at REAL, cancel_requested INTEGER NOT NULL DEFAULT 0, peak_memory_bytes INTEGER,
        exit_code INTEGER, signal INTEGER, unlisted_heartbeats INTEGER NOT NULL DEFAULT 0, full_log BLOB);
    CREATE INDEX executions_by_status ON executions(status);
    CREATE INDEX executions_by_source ON executions(source_urn, created_at);
    CREATE TABLE executor_instances (
        executor_id TEXT PRIMARY KEY, pool_id TEXT NOT NULL, instance TEXT NOT NULL, state TEXT NOT NULL,
        heartbeat_interval_s REAL NOT NULL, last_seen REAL NOT NULL, details TEXT NOT NULL);
"""

SCHEMA_3 = """
    CREATE TABLE upstream_requests (
        execution_id TEXT PRIMARY KEY, state TEXT NOT NULL, requested_at INTEGER, seen_at REAL NOT NULL,
        refusal_reason TEXT, refusal TEXT, pushed_digest TEXT, pushed_status TEXT, cancel_passed INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX upstream_requests_open ON upstream_requests(state) WHERE state <> 'DONE';
    CREATE TABLE upstream_cursor (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# Reconciliation counts each heartbeat once, and none the executor sent before a claim
# (executions.reconcile): the last reportedAt reconciled per process, and each claim's time on
# its executor's clock.
SCHEMA_4 = """
    ALTER TABLE executor_instances ADD COLUMN reported_at_ms INTEGER;
    ALTER TABLE executions ADD COLUMN claimed_at_executor_ms INTEGER;
"""

# A release retried after its answer was lost is answered as done (lifecycle.apply).
SCHEMA_5 = """
    ALTER TABLE executions ADD COLUMN released_lease TEXT;
"""

Migration = Union[str, Callable[[sqlite3.Connection], None]]


def _convert_legacy(conn: sqlite3.Connection) -> None:
    from .legacy_migration import convert

    convert(conn)


# A run's full log (up to 8 MiB) in a table of its own: in the executions row, every change of
# the row's state (the result, a progress note) rewrote the whole blob and every read of the row
# read it, which made a large run's result take ~200 ms after its log had been uploaded. A log
# is kept as its executor sent it, gzip-compressed or not (vocabulary/full_log.py).
SCHEMA_6 = """
    CREATE TABLE execution_logs (execution_id TEXT PRIMARY KEY, encoding TEXT NOT NULL, data BLOB NOT NULL);
    INSERT INTO execution_logs SELECT id, 'identity', full_log FROM executions WHERE full_log IS NOT NULL;
    ALTER TABLE executions DROP COLUMN full_log;
"""

# Releases because an executor's runner broke are counted: the third ends the execution
# (lifecycle.FAILED_RELEASES_TO_FAIL).
SCHEMA_7 = """
    ALTER TABLE executions ADD COLUMN failed_releases INTEGER NOT NULL DEFAULT 0;
"""

# When the heartbeat whose reportedAt is kept (reported_at_ms) arrived: a claim's time on its
# executor's clock counts from it (lifecycle._claim_on_executor_clock). last_seen, which copies
# of a heartbeat move too (liveness), made that time early by a copy's delay. A process recorded
# before takes its last_seen, as it was counted until now; its next heartbeat sets its own.
SCHEMA_8 = """
    ALTER TABLE executor_instances ADD COLUMN reported_arrived_at REAL;
    UPDATE executor_instances SET reported_arrived_at=last_seen;
"""

# The messages found in the pools' dead-letter queues, each judged once (lost_messages.py): they
# stay there for operators, and are seen again at every look until SQS drops them.
SCHEMA_9 = """
    CREATE TABLE dead_letters (
        message_id TEXT PRIMARY KEY, queue_url TEXT NOT NULL, execution_id TEXT, outcome TEXT NOT NULL,
        seen_at REAL NOT NULL) WITHOUT ROWID;
"""

# Timeseries points are keyed as GMS keys its documents (aspect_store.point_key): by urn, aspect
# and timestamp only, two profiles of one moment for two partitions were one point, the second
# overwriting the first. SQLite cannot change a primary key: the table is made again, and every
# point kept, with the key its value gives (_key_timeseries_points).
SCHEMA_10 = """
    ALTER TABLE timeseries_aspects RENAME TO timeseries_aspects_9;
    CREATE TABLE timeseries_aspects (
        urn TEXT NOT NULL, aspect TEXT NOT NULL, timestamp_ms INTEGER NOT NULL, point_key TEXT NOT NULL,
        entity_type TEXT NOT NULL, metadata TEXT NOT NULL, system_metadata TEXT, created_on INTEGER NOT NULL,
        PRIMARY KEY (urn, aspect, timestamp_ms, point_key)) WITHOUT ROWID;
"""


def _key_timeseries_points(conn: sqlite3.Connection) -> None:
    from .metadata.aspect_store import point_key

    rows = conn.execute("SELECT urn, aspect, timestamp_ms, entity_type, metadata, system_metadata, created_on "
                        "FROM timeseries_aspects_9")
    conn.executemany("INSERT INTO timeseries_aspects (urn, aspect, timestamp_ms, point_key, entity_type, metadata, "
                     "system_metadata, created_on) VALUES (?,?,?,?,?,?,?,?)",
                     ((urn, aspect, timestamp, point_key(json.loads(metadata)), entity_type, metadata, system, created)
                      for urn, aspect, timestamp, entity_type, metadata, system, created in rows))
    conn.execute("DROP TABLE timeseries_aspects_9")


# Which run wrote each latest versioned aspect, one row per urn and aspect, as GMS's
# system-metadata index keeps it (metadata/aspect_store.py): run_writes keeps every run that ever
# wrote an aspect, so a run whose aspects later runs had all written again still listed, and
# would have been rolled back, with rows no longer its own. Filled from the aspects stored now
# (_index_latest_aspects).
SCHEMA_11 = """
    CREATE TABLE run_index (
        urn TEXT NOT NULL, aspect TEXT NOT NULL, run_id TEXT NOT NULL, last_updated INTEGER NOT NULL,
        removed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (urn, aspect)) WITHOUT ROWID;
    CREATE INDEX run_index_by_run ON run_index(run_id, urn, aspect);
"""


def _index_latest_aspects(conn: sqlite3.Connection) -> None:
    """Each latest versioned aspect booked to the run its system metadata names; one written
    with none to the run that wrote it last by run_writes (an ingest token's run), else to GMS's
    default run. An entity whose status says removed has its rows removed. The control plane's
    own entities are not booked (ingest.Ingest._book)."""
    from .entities import CONTROL_PLANE_ENTITIES
    from .metadata.aspect_store import NO_RUN_ID, STATUS, observed_ms

    latest_run = {(row[0], row[1]): row[2] for row in conn.execute(
        "SELECT urn, aspect, run_id FROM run_writes ORDER BY last_written")}
    removed = {row[0] for row in conn.execute(
        "SELECT urn FROM aspects WHERE aspect=? AND version=0 AND json_extract(metadata, '$.removed') = 1", (STATUS,))}
    rows = []
    for urn, aspect, system, created in conn.execute(
            "SELECT urn, aspect, system_metadata, created_on FROM aspects WHERE version=0 AND entity_type NOT IN "
            f"({','.join('?' * len(CONTROL_PLANE_ENTITIES))})", tuple(CONTROL_PLANE_ENTITIES)):
        metadata = json.loads(system) if system else {}
        run = metadata.get("runId") if metadata.get("runId") not in (None, "", NO_RUN_ID) else None
        observed = metadata.get("lastObserved") if "lastObserved" in metadata else created
        rows.append((urn, aspect, run or latest_run.get((urn, aspect)) or NO_RUN_ID,
                     observed if isinstance(observed, int) else observed_ms(None), int(urn in removed)))
    conn.executemany("INSERT INTO run_index (urn, aspect, run_id, last_updated, removed) VALUES (?,?,?,?,?)", rows)


MIGRATIONS: list[list[Migration]] = [[SCHEMA_1], [SCHEMA_2, _convert_legacy], [SCHEMA_3], [SCHEMA_4], [SCHEMA_5],
                                     [SCHEMA_6], [SCHEMA_7], [SCHEMA_8], [SCHEMA_9],
                                     [SCHEMA_10, _key_timeseries_points], [SCHEMA_11, _index_latest_aspects]]


def make_private(path: str) -> None:
    """The database file at PATH, and the write-ahead log and shared-memory files beside it,
    created or made readable by their owner alone (0600). They hold the runs' logs and results
    and the metadata ingested, which the state directory's other private files (the admin token,
    the secret key) are kept from other users for: created by SQLite with the umask's 0644, any
    user of the host could read them. A file that others could read is made private, said once."""
    if path == ":memory:" or path.startswith("file:"):
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        loose = stat.S_IMODE(os.fstat(fd).st_mode) & 0o077
        if loose:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    if loose:
        from loguru import logger

        logger.warning("{} could be read by other users (mode {:o}): made readable by its owner alone (0600)",
                       path, loose | 0o600)
    for suffix in ("-wal", "-shm"):
        try:
            os.chmod(path + suffix, 0o600)
        except FileNotFoundError:
            pass  # SQLite creates them with the database's mode


class Store:
    def __init__(self, path: str) -> None:
        make_private(path)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for step in steps:
                    if callable(step):
                        step(self._conn)
                        continue
                    for statement in filter(str.strip, step.split(";")):
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version={number}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    @property
    def path(self) -> str | None:
        """The database file's absolute path; None for an in-memory database."""
        with self._lock:
            return self._conn.execute("PRAGMA database_list").fetchone()["file"] or None

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing: an error anywhere leaves nothing half-written."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads that span several statements (no transaction, but the lock)."""
        with self._lock:
            yield self._conn

    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self._conn.execute(sql, params).fetchall()]

    def one(self, sql: str, params: tuple = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)
