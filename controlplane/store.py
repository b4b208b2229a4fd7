"""SQLite storage with numbered schema migrations (PRAGMA user_version).

One connection guarded by a lock: the control plane's write rate (heartbeats, progress) is far
below what one SQLite writer sustains, and a single connection makes every multi-statement
change atomic without cross-connection locking surprises. WAL keeps readers cheap.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MIGRATIONS: list[str] = [
    """
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
    """,
]


class Store:
    def __init__(self, path: str) -> None:
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
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, script.split(";")):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version={number}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

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
