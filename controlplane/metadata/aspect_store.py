"""Aspects in SQLite, versioned as GMS versions them (its `metadata_aspect_v2` table).

Version 0 always holds the latest value. Writing a different value first copies the current
latest to the next history version (1 is the oldest), then overwrites version 0; writing the
same value again only refreshes its system metadata, as GMS's no-op detection does. History is
kept to the newest RETAINED_VERSIONS per aspect: GMS's default retention policy (version-based,
20), without which a RUNNING execution's progress reports would grow the table without end.
Timeseries aspects (datasetProfile, operation, ...) are not versioned: GMS keeps them in a
search index keyed by timestamp, and so do we, in their own table.

Which run wrote each latest versioned aspect is kept as GMS's system-metadata index keeps it
(ElasticSearchSystemMetadataService: one document per urn and aspect, replaced by every write
of it, so a run whose aspects were all written again by later runs has no row left; a status of
removed=true marks every row of its urn removed). Runs are listed, described and rolled back
from it (gms_api.py).

Every function takes an open transaction: the caller decides what is atomic.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

RETAINED_VERSIONS = 20
NO_RUN_ID = "no-run-id-provided"  # GMS's DEFAULT_RUN_ID: the run of a write that names none
STATUS = "status"  # the aspect whose `removed` marks an entity's rows removed (soft deleted)


@dataclass(frozen=True)
class StoredAspect:
    urn: str
    entity_type: str
    aspect: str
    version: int
    value: dict[str, Any]
    system_metadata: dict[str, Any] | None
    created_on_ms: int
    created_by: str | None


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def now_ms() -> int:
    return int(time.time() * 1000)


def put(tx: sqlite3.Connection, *, urn: str, entity_type: str, aspect: str, value: dict[str, Any],
        system_metadata: dict[str, Any] | None = None, actor: str | None = None) -> int:
    """Write VALUE as the latest version; returns the number of history versions after it
    (0 for a first write). An unchanged value keeps its version.

    The latest value's number goes into its system metadata ("version"), as GMS puts it in every
    aspect it writes and If-Version-Match names it (ingest.py): 1 for a first value, one more for
    each change, the same again for the same value. Every write path stamps it: an aspect written
    both as an MCP and by a rule of ours (the default pool, a source's info) lost its number to
    the unstamped write, and a conditional write holding the number read before that change was
    then judged against "1" and could undo it. History keeps the values a change replaced as
    versions 1, 2, ..., dropping the oldest only, so the latest is the one after the newest."""
    metadata = _dumps(value)
    created = now_ms()
    current = tx.execute("SELECT metadata FROM aspects WHERE urn=? AND aspect=? AND version=0", (urn, aspect)).fetchone()
    changed = current is not None and current[0] != metadata
    newest = tx.execute("SELECT COALESCE(MAX(version), 0) FROM aspects WHERE urn=? AND aspect=?",
                        (urn, aspect)).fetchone()[0]  # the newest history version
    system_metadata = {**(system_metadata or {}), "version": str(newest + (2 if changed else 1))}
    system = _dumps(system_metadata) if system_metadata is not None else None
    if current is not None and not changed:
        tx.execute("UPDATE aspects SET system_metadata=? WHERE urn=? AND aspect=? AND version=0", (system, urn, aspect))
        return _history_count(tx, urn, aspect)
    if changed:
        tx.execute("INSERT INTO aspects (urn, aspect, version, entity_type, metadata, system_metadata, created_on, created_by) "
                   "SELECT urn, aspect, ?, entity_type, metadata, system_metadata, created_on, created_by FROM aspects "
                   "WHERE urn=? AND aspect=? AND version=0", (newest + 1, urn, aspect))
        tx.execute("DELETE FROM aspects WHERE urn=? AND aspect=? AND version BETWEEN 1 AND ?",
                   (urn, aspect, newest + 1 - RETAINED_VERSIONS))
    tx.execute("INSERT INTO aspects (urn, aspect, version, entity_type, metadata, system_metadata, created_on, created_by) "
               "VALUES (?,?,0,?,?,?,?,?) ON CONFLICT(urn, aspect, version) DO UPDATE SET metadata=excluded.metadata, "
               "system_metadata=excluded.system_metadata, created_on=excluded.created_on, created_by=excluded.created_by",
               (urn, aspect, entity_type, metadata, system, created, actor))
    return _history_count(tx, urn, aspect)


def _history_count(tx: sqlite3.Connection, urn: str, aspect: str) -> int:
    return tx.execute("SELECT COUNT(*) FROM aspects WHERE urn=? AND aspect=? AND version>0", (urn, aspect)).fetchone()[0]


def point_key(value: dict[str, Any]) -> str:
    """What, besides its urn, aspect and timestamp, tells a timeseries point from another: the
    rest of GMS's document id (TimeseriesAspectTransformer.getDocId: timestampMillis,
    eventGranularity, urn, messageId, partitionSpec), so two profiles of one moment for two
    partitions are two points, and the same point sent again replaces itself."""
    return _dumps([value.get("eventGranularity"), value.get("messageId"), value.get("partitionSpec")])


def put_timeseries(tx: sqlite3.Connection, *, urn: str, entity_type: str, aspect: str, value: dict[str, Any],
                   system_metadata: dict[str, Any] | None = None) -> None:
    """One point of a timeseries aspect; one with the same document id as GMS's (point_key)
    replaces it."""
    timestamp = int(value.get("timestampMillis", now_ms()))
    tx.execute("INSERT INTO timeseries_aspects (urn, aspect, timestamp_ms, point_key, entity_type, metadata, "
               "system_metadata, created_on) VALUES (?,?,?,?,?,?,?,?) "
               "ON CONFLICT(urn, aspect, timestamp_ms, point_key) DO UPDATE SET metadata=excluded.metadata, "
               "system_metadata=excluded.system_metadata, created_on=excluded.created_on",
               (urn, aspect, timestamp, point_key(value), entity_type, _dumps(value),
                _dumps(system_metadata) if system_metadata is not None else None, now_ms()))


def get(db: sqlite3.Connection, urn: str, aspect: str, version: int = 0) -> StoredAspect | None:
    row = db.execute("SELECT urn, entity_type, aspect, version, metadata, system_metadata, created_on, created_by "
                     "FROM aspects WHERE urn=? AND aspect=? AND version=?", (urn, aspect, version)).fetchone()
    return _stored(row) if row else None


def latest(db: sqlite3.Connection, urn: str, aspects: Iterable[str] | None = None) -> dict[str, StoredAspect]:
    """The latest value of every aspect of URN (or of the named ones)."""
    rows = db.execute("SELECT urn, entity_type, aspect, version, metadata, system_metadata, created_on, created_by "
                      "FROM aspects WHERE urn=? AND version=0", (urn,)).fetchall()
    wanted = set(aspects) if aspects is not None else None
    return {row[2]: _stored(row) for row in rows if wanted is None or row[2] in wanted}


# Timeseries points in time order; of one time, in the order written, then by point_key so that
# points written in the same millisecond come in one order every time.
_POINT_ORDER = {way: f"timestamp_ms {way}, created_on {way}, point_key {way}" for way in ("ASC", "DESC")}


def latest_timeseries(db: sqlite3.Connection, urn: str, aspect: str, until_ms: int | None = None) -> StoredAspect | None:
    """The newest point of a timeseries aspect (at or before UNTIL_MS, when given), as GMS's
    getLatestTimeseriesAspectValues answers it; of several at that time, the last written.
    Points keep no writer: created_by is None."""
    row = db.execute("SELECT urn, entity_type, aspect, 0, metadata, system_metadata, created_on, NULL "
                     "FROM timeseries_aspects WHERE urn=? AND aspect=? AND timestamp_ms<=? "
                     f"ORDER BY {_POINT_ORDER['DESC']} LIMIT 1",
                     (urn, aspect, until_ms if until_ms is not None else (1 << 63) - 1)).fetchone()
    return _stored(row) if row else None


def timeseries_points(db: sqlite3.Connection, urn: str, aspect: str, *, start_ms: int | None = None,
                      end_ms: int | None = None, oldest_first: bool = False) -> Iterator[StoredAspect]:
    """The points of a timeseries aspect with a timestamp from START_MS to END_MS (both included,
    either open), newest first (GMS's getAspectValues order) unless OLDEST_FIRST; points of one
    time in the order they were written (the other way for newest first), which GMS leaves to
    its search index. Read lazily: consume it while DB is held."""
    cursor = db.execute("SELECT urn, entity_type, aspect, 0, metadata, system_metadata, created_on, NULL "
                        "FROM timeseries_aspects WHERE urn=? AND aspect=? AND timestamp_ms BETWEEN ? AND ? "
                        f"ORDER BY {_POINT_ORDER['ASC' if oldest_first else 'DESC']}",
                        (urn, aspect, start_ms if start_ms is not None else -(1 << 63),
                         end_ms if end_ms is not None else (1 << 63) - 1))
    for row in cursor:
        yield _stored(row)


def latest_of_type(db: sqlite3.Connection, entity_type: str, aspect: str) -> list[StoredAspect]:
    """Every entity of ENTITY_TYPE that has ASPECT, with its latest value, by urn."""
    rows = db.execute("SELECT urn, entity_type, aspect, version, metadata, system_metadata, created_on, created_by "
                      "FROM aspects WHERE entity_type=? AND aspect=? AND version=0 ORDER BY urn", (entity_type, aspect))
    return [_stored(row) for row in rows.fetchall()]


def latest_holding(db: sqlite3.Connection, text: str) -> list[StoredAspect]:
    """The latest versioned aspects, of every entity, whose stored JSON holds TEXT as a string
    value (a urn that may be referenced), by urn and aspect: what deleteReferences must look
    at. Found by the text as stored (this module's _dumps), then checked by the caller."""
    rows = db.execute("SELECT urn, entity_type, aspect, version, metadata, system_metadata, created_on, created_by "
                      "FROM aspects WHERE version=0 AND instr(metadata, ?) > 0 ORDER BY urn, aspect", (_dumps(text),))
    return [_stored(row) for row in rows.fetchall()]


@dataclass(frozen=True)
class Deleted:
    """What a hard delete removed, counted as GMS's DeleteEntityResponse counts it: `rows`, the
    versioned aspects' rows (every version; GMS's count leaves out its key aspect's own row,
    which it deletes first), and `timeseries_rows`, the timeseries points."""
    rows: int
    timeseries_rows: int


def delete_entity(tx: sqlite3.Connection, urn: str, key_aspect: str | None = None) -> Deleted:
    """Remove every aspect, version and timeseries point of URN (GMS's hard delete), and its
    rows of the run index. KEY_ASPECT, the entity's key aspect, is deleted uncounted, as GMS
    deletes it before the rows it counts; None only for the control plane's own entities,
    whose key is never stored (ingest.py)."""
    tx.execute("DELETE FROM run_index WHERE urn=?", (urn,))
    if key_aspect is not None:
        tx.execute("DELETE FROM aspects WHERE urn=? AND aspect=?", (urn, key_aspect))
    rows = tx.execute("DELETE FROM aspects WHERE urn=?", (urn,)).rowcount
    return Deleted(rows=rows, timeseries_rows=delete_timeseries(tx, urn))


def delete_timeseries(tx: sqlite3.Connection, urn: str, aspect: str | None = None, *, start_ms: int | None = None,
                      end_ms: int | None = None) -> int:
    """Remove the points of URN's timeseries ASPECT (of all of them when None) with a timestamp
    from START_MS to END_MS, both included and either open, as GMS's delete bounds them
    (timestampMillis >= start, <= end); returns how many."""
    return tx.execute("DELETE FROM timeseries_aspects WHERE urn=? AND (? IS NULL OR aspect=?) "
                      "AND timestamp_ms BETWEEN ? AND ?",
                      (urn, aspect, aspect, start_ms if start_ms is not None else -(1 << 63),
                       end_ms if end_ms is not None else (1 << 63) - 1)).rowcount


def delete_aspect(tx: sqlite3.Connection, urn: str, aspect: str) -> int:
    tx.execute("DELETE FROM run_index WHERE urn=? AND aspect=?", (urn, aspect))
    return tx.execute("DELETE FROM aspects WHERE urn=? AND aspect=?", (urn, aspect)).rowcount


def exists(db: sqlite3.Connection, urn: str) -> bool:
    """Whether any aspect of URN is stored, its key aspect included (metadata/entity_keys.py)."""
    return db.execute("SELECT 1 FROM aspects WHERE urn=? AND version=0 LIMIT 1", (urn,)).fetchone() is not None


def run_of(system_metadata: dict[str, Any] | None) -> str:
    """The run a value was written by, as GMS reads it from its system metadata."""
    return (system_metadata or {}).get("runId") or NO_RUN_ID


def observed_ms(system_metadata: dict[str, Any] | None) -> int:
    """When a value was last seen: its lastObserved, or now, as GMS fills one not given."""
    observed = (system_metadata or {}).get("lastObserved")
    return observed if isinstance(observed, int) and not isinstance(observed, bool) and observed > 0 else now_ms()


@dataclass(frozen=True)
class RunRow:
    """One row of the run index: the run that wrote URN's latest ASPECT, and when."""
    urn: str
    aspect: str
    run_id: str
    last_updated: int
    removed: bool


def index_write(tx: sqlite3.Connection, urn: str, aspect: str, run_id: str, last_updated: int,
                value: dict[str, Any] | None = None) -> None:
    """Book URN's latest ASPECT to RUN_ID (replacing the run that wrote it before), not removed;
    a status (VALUE) marks every row of URN removed or not, as GMS's index does on a status."""
    tx.execute("INSERT INTO run_index (urn, aspect, run_id, last_updated, removed) VALUES (?,?,?,?,0) "
               "ON CONFLICT(urn, aspect) DO UPDATE SET run_id=excluded.run_id, last_updated=excluded.last_updated, "
               "removed=0", (urn, aspect, run_id, last_updated))
    if aspect == STATUS and value is not None:
        tx.execute("UPDATE run_index SET removed=? WHERE urn=?", (int(bool(value.get("removed"))), urn))


def run_row(db: sqlite3.Connection, urn: str, aspect: str) -> RunRow | None:
    row = db.execute("SELECT urn, aspect, run_id, last_updated, removed FROM run_index WHERE urn=? AND aspect=?",
                     (urn, aspect)).fetchone()
    return _run_row(row) if row else None


def runs(db: sqlite3.Connection, *, offset: int, limit: int, include_removed: bool) -> list[dict[str, Any]]:
    """The runs that still have rows, newest first (by their newest row), each with its rows
    counted removed or not; without INCLUDE_REMOVED, those whose every row is removed are left
    out before paging (PostgresSystemMetadataService.listRuns)."""
    having = "" if include_removed else " HAVING SUM(removed = 0) > 0"
    return [{"runId": row[0], "rows": row[1], "timestamp": row[2]} for row in db.execute(
        "SELECT run_id, COUNT(*), MAX(last_updated) AS ts FROM run_index GROUP BY run_id" + having +
        " ORDER BY ts DESC, run_id LIMIT ? OFFSET ?", (limit, offset))]


def rows_of(db: sqlite3.Connection, *, run_id: str | None = None, urn: str | None = None, include_removed: bool,
            start: int = 0, count: int = -1) -> list[RunRow]:
    """The rows of a run (RUN_ID) or of an entity (URN), by urn and aspect; removed ones only
    with INCLUDE_REMOVED."""
    column, value = ("run_id", run_id) if run_id is not None else ("urn", urn)
    rows = db.execute(f"SELECT urn, aspect, run_id, last_updated, removed FROM run_index WHERE {column}=? "
                      f"{'' if include_removed else 'AND removed = 0 '}ORDER BY urn, aspect LIMIT ? OFFSET ?",
                      (value, count, start))
    return [_run_row(row) for row in rows.fetchall()]


def roll_back(tx: sqlite3.Connection, urn: str, aspect: str, run_id: str) -> bool:
    """Undo RUN_ID's latest value of URN's versioned ASPECT, as GMS's rollback does
    (EntityServiceImpl.deleteAspectWithoutMCL): only when the latest value is the run's (its
    run index row); the run's history versions right before it go too, and the newest version
    of another run becomes the latest again (booked to that run), or, when there is none, the
    aspect is deleted. False when nothing was the run's to undo."""
    row = run_row(tx, urn, aspect)
    if row is None or row.run_id != run_id or get(tx, urn, aspect) is None:
        return False
    survivor = None
    for version, system in tx.execute("SELECT version, system_metadata FROM aspects WHERE urn=? AND aspect=? "
                                      "AND version > 0 ORDER BY version DESC", (urn, aspect)).fetchall():
        if run_of(json.loads(system) if system else None) != run_id:
            survivor = version
            break
        tx.execute("DELETE FROM aspects WHERE urn=? AND aspect=? AND version=?", (urn, aspect, version))
    if survivor is None:
        delete_aspect(tx, urn, aspect)
        return True
    tx.execute("UPDATE aspects SET (metadata, system_metadata, created_on, created_by) = (SELECT metadata, "
               "system_metadata, created_on, created_by FROM aspects WHERE urn=? AND aspect=? AND version=?) "
               "WHERE urn=? AND aspect=? AND version=0", (urn, aspect, survivor, urn, aspect))
    tx.execute("DELETE FROM aspects WHERE urn=? AND aspect=? AND version=?", (urn, aspect, survivor))
    restored = get(tx, urn, aspect)
    assert restored is not None
    index_write(tx, urn, aspect, run_of(restored.system_metadata), observed_ms(restored.system_metadata),
                restored.value)
    return True


def roll_back_timeseries(tx: sqlite3.Connection, run_id: str) -> int:
    """Remove the timeseries points RUN_ID wrote (TimeseriesAspectService.rollbackTimeseriesAspects);
    how many."""
    return tx.execute("DELETE FROM timeseries_aspects WHERE system_metadata IS NOT NULL "
                      "AND json_extract(system_metadata, '$.runId') = ?", (run_id,)).rowcount


def _run_row(row: tuple) -> RunRow:
    return RunRow(urn=row[0], aspect=row[1], run_id=row[2], last_updated=row[3], removed=bool(row[4]))


def _stored(row: tuple) -> StoredAspect:
    return StoredAspect(urn=row[0], entity_type=row[1], aspect=row[2], version=row[3], value=json.loads(row[4]),
                        system_metadata=json.loads(row[5]) if row[5] else None, created_on_ms=row[6], created_by=row[7])
