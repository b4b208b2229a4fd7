"""What became of each upstream execution request we took (table upstream_requests).

    (new) --adopt-->  DISPATCHED   our execution of the same id runs it; each change of its
                                   result is written upstream
    (new) --refuse--> REFUSED      it cannot run; a FAILURE saying why is written upstream (a
                                   CANCELLED where DataHub's KILL was there already, as for a
                                   request that could have run)
    DISPATCHED | REFUSED --final result written upstream--> DONE
    DISPATCHED | REFUSED --gone upstream (DataHub deleted it)--> DONE, nothing written

A request is adopted or refused once, whatever how often it is seen: its row is the proof, kept
in the same database as the execution it made, and both survive a restart. What was last
written upstream is kept as a digest, so a result is written again only when it changed, and
an outage of DataHub only delays the latest one (earlier progress is skipped, never reordered).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from vocabulary import statuses as S
from vocabulary.results import structured_report

from .. import entities as E
from .. import lifecycle
from ..metadata import aspect_store
from ..store import Store

DISPATCHED = "DISPATCHED"
REFUSED = "REFUSED"
DONE = "DONE"
TRANSITIONS = {"adopt": {None: DISPATCHED}, "refuse": {None: REFUSED},
               "finish": {DISPATCHED: DONE, REFUSED: DONE}, "gone": {DISPATCHED: DONE, REFUSED: DONE}}

NEWEST_SEEN = "newest_requested_at"


@dataclass(frozen=True)
class OpenRequest:
    """A request whose final result is not written upstream yet, with what it should show now."""

    execution_id: str
    state: str
    result: dict[str, Any] | None  # what DataHub should show now (None: nothing yet)
    local_status: str | None  # our execution's status (DISPATCHED only)
    cancel_passed: bool
    pushed_digest: str | None

    @property
    def urn(self) -> str:
        return E.execution_urn(self.execution_id)


def digest(value: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class Mirror:
    def __init__(self, store: Store) -> None:
        self.store = store

    def known(self, execution_ids: list[str]) -> set[str]:
        if not execution_ids:
            return set()
        marks = ",".join("?" * len(execution_ids))
        return {r["execution_id"] for r in self.store.query(
            f"SELECT execution_id FROM upstream_requests WHERE execution_id IN ({marks})", tuple(execution_ids))}

    def is_mirrored(self, execution_id: str) -> bool:
        """Whether the local run EXECUTION_ID is DataHub's request of that id (lifecycle.is_mirrored)."""
        with self.store.read() as db:
            return lifecycle.is_mirrored(db, execution_id)

    def adopt(self, tx: sqlite3.Connection, execution_id: str, requested_at: int, *, cancel_passed: bool = False) -> None:
        """CANCEL_PASSED: DataHub's KILL was there already, and is written with the input."""
        self._insert(tx, "adopt", execution_id, requested_at, None, None)
        if cancel_passed:
            tx.execute("UPDATE upstream_requests SET cancel_passed=1 WHERE execution_id=?", (execution_id,))

    def refuse(self, execution_id: str, requested_at: int, reason: str, message: str, *, cancelled: bool = False) -> None:
        """CANCELLED: DataHub's KILL was there already. The cancel wins, as it does for a request
        that could run: DataHub's user asked for it, and a FAILURE would say the run failed."""
        if cancelled:
            reason, message = S.CANCELLED_BEFORE_START, f"cancelled in DataHub before it was taken (it could not " \
                                                        f"have run: {reason}: {message})"
        with self.store.transaction() as tx:
            self._insert(tx, "refuse", execution_id, requested_at, reason, message)
            if cancelled:
                tx.execute("UPDATE upstream_requests SET cancel_passed=1 WHERE execution_id=?", (execution_id,))

    def _insert(self, tx: sqlite3.Connection, event: str, execution_id: str, requested_at: int, reason: str | None,
                message: str | None) -> None:
        state = TRANSITIONS[event][None]
        tx.execute("INSERT INTO upstream_requests (execution_id, state, requested_at, seen_at, refusal_reason, refusal) "
                   "VALUES (?,?,?,?,?,?)", (execution_id, state, requested_at, time.time(), reason, message))

    def open_requests(self) -> list[OpenRequest]:
        rows = self.store.query("SELECT u.*, e.status AS local_status FROM upstream_requests u LEFT JOIN executions e "
                                "ON e.id = u.execution_id WHERE u.state <> ? ORDER BY u.seen_at", (DONE,))
        found = []
        with self.store.read() as db:
            for row in rows:
                if row["state"] == REFUSED:
                    result = refusal_result(row["refusal_reason"], row["refusal"], row["seen_at"])
                else:
                    stored = aspect_store.get(db, E.execution_urn(row["execution_id"]), E.EXECUTION_RESULT)
                    result = stored.value if stored is not None else None
                found.append(OpenRequest(row["execution_id"], row["state"], result, row["local_status"],
                                         bool(row["cancel_passed"]), row["pushed_digest"]))
        return found

    def written(self, execution_id: str, value: dict[str, Any]) -> None:
        """VALUE is what DataHub shows now; a final one ends the request's life here."""
        with self.store.transaction() as tx:
            state = tx.execute("SELECT state FROM upstream_requests WHERE execution_id=?", (execution_id,)).fetchone()[0]
            after = TRANSITIONS["finish"][state] if value.get("status") in S.FINAL else state
            tx.execute("UPDATE upstream_requests SET pushed_digest=?, pushed_status=?, state=? WHERE execution_id=?",
                       (digest(value), value.get("status"), after, execution_id))

    def gone(self, execution_id: str) -> None:
        """DataHub deleted the request: nothing more is written there (a result would bring it back)."""
        with self.store.transaction() as tx:
            state = tx.execute("SELECT state FROM upstream_requests WHERE execution_id=?", (execution_id,)).fetchone()[0]
            tx.execute("UPDATE upstream_requests SET state=? WHERE execution_id=?",
                       (TRANSITIONS["gone"][state], execution_id))

    def cancel_passed_on(self, execution_id: str) -> None:
        with self.store.transaction() as tx:
            tx.execute("UPDATE upstream_requests SET cancel_passed=1 WHERE execution_id=?", (execution_id,))

    # the discovery cursor ----------------------------------------------------------------------
    def newest_seen(self) -> int | None:
        row = self.store.one("SELECT value FROM upstream_cursor WHERE name=?", (NEWEST_SEEN,))
        return row["value"] if row else None

    def saw(self, requested_at_ms: int) -> None:
        with self.store.transaction() as tx:
            tx.execute("INSERT INTO upstream_cursor VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                       "value=MAX(value, excluded.value)", (NEWEST_SEEN, requested_at_ms))


def refusal_result(reason: str, message: str, seen_at: float) -> dict[str, Any]:
    """The FAILURE DataHub shows for a request we refused (CANCELLED for one DataHub's user had
    cancelled already), shaped as our executors' results are (the reason in the structured
    report's executor section)."""
    status = S.CANCELLED if reason == S.CANCELLED_BEFORE_START else S.FAILURE
    return {"status": status, "startTimeMs": int(seen_at * 1000), "durationMs": 0,
            "report": f"{status} ({reason}): not run: {message}",
            "structuredReport": structured_report("RUN_INGEST", {"reason": reason})}
