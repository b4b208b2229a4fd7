"""An execution's life, in one table, applied by one function inside the caller's transaction.

    PENDING --claim--> RUNNING --finish--> SUCCESS | FAILURE | CANCELLED | TIMEOUT | ABORTED
    PENDING --claim--> DUPLICATE          (its source already runs elsewhere)
    PENDING | RUNNING --claim--> refused  (409, nothing changes: the claiming process is STOPPED or no
                                           longer its executor id's registered one)
    PENDING --cancel-> CANCELLED          (reason CANCELLED_BEFORE_START)
    RUNNING --claim--> RUNNING            (a new lease: the holder is no longer online, though
                                           while it is only STALE not from another message than
                                           its own (409); or the holder's own claim again, timed
                                           anew)
    RUNNING --progress / cancel--> RUNNING (a cancel sets cancel_requested; the executor reads
                                           DataHub's KILL signal aspect; the table names RUNNING
                                           with cancel_requested RUNNING_CANCELLING)
    RUNNING_CANCELLING --release / requeue--> CANCELLED (reason CANCELLED_BEFORE_START: given
                                           back unstarted, it is not queued to run again)
    RUNNING_CANCELLING --claim--> CANCELLED (reason CANCELLED: its holder is no longer online and
                                           another executor asks for it; not run again, 409)
    RUNNING --release / requeue--> PENDING (given back by its executor, or not listed by it in
                                           two heartbeats in a row, each counted once and none
                                           sent before the claim: sent to the queue again)
    RUNNING --release_failed--> PENDING, and at the third FAILURE (reason EXECUTOR_ERROR: given
                                           back because the executor's runner broke before the
                                           task started; each release makes a new message, so
                                           SQS's redrive count never reaches the DLQ)
    RUNNING --lost--> ABORTED             (reason EXECUTOR_LOST: its holder went OFFLINE, or is no
                                           longer its executor id's registered process; judged
                                           again inside the transaction that ends it)
    PENDING --dead_lettered--> FAILURE    (reason MESSAGE_DEAD_LETTERED: its latest message reached
                                           the pool's dead-letter queue, received as often as the
                                           redrive allows and claimed by no executor)
    PENDING | RUNNING --reported--> RUNNING | final | UNKNOWN
                                          (an execution for an executor elsewhere, whose
                                           executorId names no pool of ours: its result, written
                                           by that executor with an admin token, is the truth;
                                           DataHub's CLI may end a run UNKNOWN:
                                           vocabulary/statuses.py)
    any --rebooked--> PENDING             (a run of DataHub's CLI, executorId __datahub_cli_, only:
                                           `datahub ingest` run again under a run id it ran under
                                           before books the new run on the same request, with a
                                           new input, as GMS takes it; no executor of ours holds
                                           such a run, so there is no lease to fence)

Every claim issues a lease (a random token and an epoch). Whatever the executor sends later for
that execution (progress, result, log, release) must carry the lease; a stale one is refused
with 409 and nothing changes, so an executor that was paused past its visibility timeout can
never overwrite the run that replaced it. Each transition also writes DataHub's
`dataHubExecutionRequestResult` aspect, so DataHub's API always shows the state this table holds;
reaching a final state revokes the run's ingest token.
"""
from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from vocabulary import statuses as S
from vocabulary.results import structured_report

from . import entities as E
from .errors import Conflict, Forbidden, Invalid, NotFound
from .liveness import OFFLINE, ONLINE, STALE, STALE_AFTER_MISSED, WallClockSteps, liveness
from .metadata import aspect_store
from .pools import DATAHUB_CLI_EXECUTOR_ID
from .tokens import INGEST, Tokens

FINAL_REPORTED = "<the final status the executor reports>"
UNLISTED_HEARTBEATS_TO_REQUEUE = 2
# Releases because the executor failed (not because it stopped) an execution may have before it
# ends FAILURE (EXECUTOR_ERROR): a fault that breaks every runner that takes it must not keep it
# going round the pool for good.
FAILED_RELEASES_TO_FAIL = 3
# A claim refused because of its claimer (stopped, replaced), not the execution: the message is
# returned visible after this long rather than deleted.
REFUSED_CLAIM_RETRY_S = 1.0

# RUNNING with cancel_requested set: stored as RUNNING (DataHub's status), a state of its own here.
RUNNING_CANCELLING = "RUNNING_CANCELLING"

# event -> {state it may leave: state it reaches}
TRANSITIONS: dict[str, dict[str, str]] = {
    "claim": {S.PENDING: S.RUNNING, S.RUNNING: S.RUNNING, RUNNING_CANCELLING: S.CANCELLED},
    "duplicate": {S.PENDING: S.DUPLICATE},
    "progress": {S.RUNNING: S.RUNNING, RUNNING_CANCELLING: RUNNING_CANCELLING},
    "finish": {S.RUNNING: FINAL_REPORTED, RUNNING_CANCELLING: FINAL_REPORTED},
    "release": {S.RUNNING: S.PENDING, RUNNING_CANCELLING: S.CANCELLED},
    "release_failed": {S.RUNNING: S.PENDING, RUNNING_CANCELLING: S.CANCELLED},
    "requeue": {S.RUNNING: S.PENDING, RUNNING_CANCELLING: S.CANCELLED},
    "lost": {S.RUNNING: S.ABORTED, RUNNING_CANCELLING: S.ABORTED},
    "cancel": {S.PENDING: S.CANCELLED, S.RUNNING: RUNNING_CANCELLING, RUNNING_CANCELLING: RUNNING_CANCELLING},
    "reported": {S.PENDING: FINAL_REPORTED, S.RUNNING: FINAL_REPORTED, RUNNING_CANCELLING: FINAL_REPORTED},
    "dead_lettered": {S.PENDING: S.FAILURE},
    "rebooked": {S.PENDING: S.PENDING, S.RUNNING: S.PENDING, RUNNING_CANCELLING: S.PENDING, S.SUCCESS: S.PENDING,
                 S.FAILURE: S.PENDING, S.CANCELLED: S.PENDING, S.TIMEOUT: S.PENDING, S.ABORTED: S.PENDING,
                 S.DUPLICATE: S.PENDING, S.UNKNOWN: S.PENDING},
}


@dataclass(frozen=True)
class Claim:
    executor_id: str
    instance: str
    pool_id: str
    receive_count: int | None
    message_id: str | None = None  # the SQS message the claim comes from
    name = "claim"


@dataclass(frozen=True)
class Progress:
    lease: str
    result: dict[str, Any]  # the RUNNING dataHubExecutionRequestResult the executor sent
    peak_memory_bytes: int | None = None
    name = "progress"


@dataclass(frozen=True)
class Finish:
    lease: str
    result: dict[str, Any]  # the final dataHubExecutionRequestResult the executor sent
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    peak_memory_bytes: int | None = None
    name = "finish"


@dataclass(frozen=True)
class Release:
    lease: str
    why: str
    failed: bool = False  # the executor's runner broke, rather than the executor stopping

    @property
    def name(self) -> str:
        return "release_failed" if self.failed else "release"


@dataclass(frozen=True)
class Requeue:
    why: str
    name = "requeue"


@dataclass(frozen=True)
class Lost:
    """The holder a sweep judged gone. Applied only if that holder (the same lease epoch) still
    holds the execution and is still gone when judged again in the transaction: the sweep looks
    before it writes, and a live executor's claim may land in between."""

    executor_id: str | None
    instance: str | None
    lease_epoch: int
    name = "lost"


@dataclass(frozen=True)
class Cancel:
    name = "cancel"


@dataclass(frozen=True)
class Reported:
    """A result written by an executor outside this control plane (see Executions.on_result)."""

    result: dict[str, Any]
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    peak_memory_bytes: int | None = None
    name = "reported"


@dataclass(frozen=True)
class DeadLettered:
    """The execution's message, found in its pool's dead-letter queue (lost_messages.py): SQS
    moved it there after RECEIVES receives, none of which an executor's claim followed. Applied
    only while that message is the execution's latest: one sent after it (a release's, or one
    sent again before the queue's retention ran out) is the one that counts."""

    message_id: str
    dead_letter_queue: str
    receives: int
    name = "dead_lettered"


@dataclass(frozen=True)
class Rebooked:
    """A new input written for a run of DataHub's CLI (DATAHUB_CLI_EXECUTOR_ID): DataHub's
    default reporter starts each run so, and a recipe's own `run_id` names every run of it the
    same. The new run replaces the one before, whatever that one reached (a CLI killed before
    its end never wrote one), and waits, PENDING, for the results the CLI writes."""

    task: str
    source_urn: str | None
    name = "rebooked"


Event = Claim | Progress | Finish | Release | Requeue | Lost | Cancel | Reported | DeadLettered | Rebooked


@dataclass(frozen=True)
class Context:
    """What transitions need besides the database: token minting, when this control plane
    started (executors are judged from then, or from a later step of the wall clock, at the
    earliest: not_before, liveness.py), and the runs whose replacement message is being sent
    right now (executions.py, decision 68)."""

    tokens: Tokens
    started_at: float = 0.0
    # Shared by the copies dataclasses.replace makes (service.serving): one wall clock, one watch.
    clock: WallClockSteps = field(default_factory=WallClockSteps, compare=False)
    # Added and removed by the outbox's thread around a replacement's send and mark; read by
    # claims (a set's add, discard and `in` are each atomic in CPython).
    replacements_sending: set[str] = field(default_factory=set, compare=False)

    def not_before(self) -> float:
        """The earliest time executors are judged from: our start, or the wall clock's last step forward."""
        return self.clock.not_before(self.started_at)


@dataclass
class Applied:
    """What a transition did. `requeue`: send the execution to its queue once committed."""

    execution: dict[str, Any]
    outcome: str  # the status reached, or "repeated" / "unchanged" / "duplicate"
    requeue: bool = False
    lease: str | None = None
    ingest_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def create(tx: sqlite3.Connection, *, execution_id: str, pool_id: str, task: str, source_urn: str | None,
           now: float | None = None) -> None:
    """A new PENDING execution, not yet sent to its queue (the caller sends it once committed)."""
    tx.execute("INSERT INTO executions (id, pool_id, task, source_urn, status, created_at) VALUES (?,?,?,?,?,?)",
               (execution_id, pool_id, task, source_urn, S.PENDING, now or time.time()))


def apply(tx: sqlite3.Connection, execution_id: str, event: Event, ctx: Context, *, now: float | None = None) -> Applied:
    """Apply EVENT to the execution, or refuse it (Conflict: a stale lease or a state that does
    not allow it; NotFound; Forbidden: another pool's executor). Writes nothing on refusal."""
    now = now or time.time()
    row = _row(tx, execution_id)
    status = row["status"]
    lease = getattr(event, "lease", None)
    if isinstance(event, Release) and row["released_lease"] is not None and lease == row["released_lease"]:
        return Applied(row, "repeated")  # the executor's retry of a release whose answer it lost
    if lease is not None and lease != row["lease"]:
        raise Conflict(f"stale lease for execution {execution_id}: it is held by executor {row['executor_id']} "
                       f"(lease epoch {row['lease_epoch']}); this executor lost it and must stop its task")
    if isinstance(event, Finish) and status in S.ENDED:
        if event.result.get("status") == status:
            return Applied(row, "repeated")
        raise Conflict(f"execution {execution_id} is already {status}; a final status is final")
    if isinstance(event, Cancel) and status in S.ENDED:
        return Applied(row, "unchanged")
    if isinstance(event, Reported) and status in S.ENDED:
        if event.result.get("status") == status:
            return Applied(row, "repeated")
        raise Conflict(f"execution {execution_id} is already {status}; a final status is final")
    if isinstance(event, Claim):
        return _claim(tx, row, event, ctx, now)
    allowed = TRANSITIONS[event.name]
    state = _state(row)
    if state not in allowed:
        raise Conflict(f"execution {execution_id} is {status}: {event.name} is not allowed")
    target = allowed[state]
    if isinstance(event, Progress):
        tx.execute("UPDATE executions SET last_progress_at=?, peak_memory_bytes=MAX(COALESCE(peak_memory_bytes, 0), ?) "
                   "WHERE id=?", (now, event.peak_memory_bytes or 0, execution_id))
        _write_result(tx, execution_id, {**event.result, "status": S.RUNNING}, row["executor_id"])
        return Applied(_row(tx, execution_id), S.RUNNING)
    if isinstance(event, Finish):
        final = event.result.get("status")
        if final not in S.EXECUTOR_RESULTS:
            raise Invalid(f"{final!r} is not a status an executor may report "
                           f"({', '.join(sorted(S.EXECUTOR_RESULTS))})")
        _finalize(tx, execution_id, final, event.reason, now, exit_code=event.exit_code, signal=event.signal,
                  peak=event.peak_memory_bytes)
        _write_result(tx, execution_id, event.result, row["executor_id"])
        return Applied(_row(tx, execution_id), final)
    if isinstance(event, Cancel):
        if target == S.CANCELLED:
            _finalize(tx, execution_id, S.CANCELLED, S.CANCELLED_BEFORE_START, now)
            _write_result(tx, execution_id, _control_plane_result(row, S.CANCELLED, S.CANCELLED_BEFORE_START,
                                                                 "cancelled before it started", now), None)
            return Applied(_row(tx, execution_id), S.CANCELLED)
        tx.execute("UPDATE executions SET cancel_requested=1 WHERE id=?", (execution_id,))
        return Applied(_row(tx, execution_id), S.RUNNING)
    if isinstance(event, Reported):
        reported = event.result.get("status")
        if reported == S.RUNNING:
            started = event.result.get("startTimeMs")
            tx.execute("UPDATE executions SET status=?, started_at=COALESCE(started_at, ?), last_progress_at=?, "
                       "peak_memory_bytes=MAX(COALESCE(peak_memory_bytes, 0), ?) WHERE id=?",
                       (S.RUNNING, started / 1000 if isinstance(started, int) else now, now, event.peak_memory_bytes or 0,
                        execution_id))
        elif reported in S.ENDED:
            _finalize(tx, execution_id, reported, event.reason, now, exit_code=event.exit_code, signal=event.signal,
                      peak=event.peak_memory_bytes)
        else:
            raise Invalid(f"{reported!r} is not a status an executor may report")
        _write_result(tx, execution_id, event.result, None)
        return Applied(_row(tx, execution_id), reported)
    if isinstance(event, Lost):
        _require_holder_gone(tx, row, event, now, ctx.not_before())
        _finalize(tx, execution_id, S.ABORTED, S.EXECUTOR_LOST, now)
        _write_result(tx, execution_id, _control_plane_result(
            row, S.ABORTED, S.EXECUTOR_LOST, f"executor {row['executor_id']} stopped reporting while running it", now), None)
        return Applied(_row(tx, execution_id), S.ABORTED)
    if isinstance(event, DeadLettered):
        if row["enqueued_at"] is None or row["message_id"] not in (None, event.message_id):
            raise Conflict(f"execution {execution_id}'s message {event.message_id} is not its latest: another was "
                           "sent after it, or is about to be")
        queue = event.dead_letter_queue.rsplit("/", 1)[-1]
        _finalize(tx, execution_id, S.FAILURE, S.MESSAGE_DEAD_LETTERED, now)
        _write_result(tx, execution_id, _control_plane_result(
            row, S.FAILURE, S.MESSAGE_DEAD_LETTERED, f"its message was received {event.receives} times (the redrive "
            f"limit of pool {row['pool_id']}) and no executor claimed it, so SQS moved it to the dead-letter queue "
            f"{queue}, where it is kept (message {event.message_id}); it is not sent again. The pool's executors' "
            "logs say why they did not claim it (deferred or refused claims, a token refused); run it again once "
            "they can", now), None)
        return Applied(_row(tx, execution_id), S.FAILURE)
    if isinstance(event, Rebooked):
        if row["pool_id"] != DATAHUB_CLI_EXECUTOR_ID:
            raise Conflict(f"execution request {execution_id} exists; its input cannot change")
        tx.execute("UPDATE executions SET status=?, task=?, source_urn=?, created_at=?, reason=NULL, started_at=NULL, "
                   "finished_at=NULL, last_progress_at=NULL, cancel_requested=0, peak_memory_bytes=NULL, exit_code=NULL, "
                   "signal=NULL WHERE id=?", (target, event.task, event.source_urn, now, execution_id))
        _write_result(tx, execution_id, {"status": target, "report": "booked again by `datahub ingest`: a new run "
                                         "under the same run id"}, None)
        return Applied(_row(tx, execution_id), target)
    why = event.why
    if isinstance(event, Release):
        tx.execute("UPDATE executions SET released_lease=?, failed_releases=failed_releases+? WHERE id=?",
                   (event.lease, int(event.failed), execution_id))
        failed = row["failed_releases"] + int(event.failed)
        if event.failed and failed >= FAILED_RELEASES_TO_FAIL and target == S.PENDING:
            _finalize(tx, execution_id, S.FAILURE, S.EXECUTOR_ERROR, now)
            _write_result(tx, execution_id, _control_plane_result(
                row, S.FAILURE, S.EXECUTOR_ERROR, f"executors gave it back, failed, {failed} times; "
                f"the last: {why}", now), None)
            return Applied(_row(tx, execution_id), S.FAILURE)
    if target == S.CANCELLED:
        _finalize(tx, execution_id, S.CANCELLED, S.CANCELLED_BEFORE_START, now)
        _write_result(tx, execution_id, _control_plane_result(
            row, S.CANCELLED, S.CANCELLED_BEFORE_START, f"cancelled, then given back before it started ({why})", now), None)
        return Applied(_row(tx, execution_id), S.CANCELLED)
    # Its message is no longer the claimed one (a release deletes that): the outbox sends a new
    # one and records it (message_id), the one a dead-lettered message is judged against. It
    # never started here, or its start is undone: the next claim starts its clock anew, or the
    # time it waited in the queue again would count as run (startTimeMs, durationMs).
    tx.execute("UPDATE executions SET status=?, lease=NULL, executor_id=NULL, executor_instance=NULL, enqueued_at=NULL, "
               "message_id=NULL, unlisted_heartbeats=0, started_at=NULL WHERE id=?", (S.PENDING, execution_id))
    tx.execute("DELETE FROM execution_logs WHERE execution_id=?", (execution_id,))  # the last run's; a new one will come
    Tokens.revoke_for_execution(tx, execution_id)
    _write_result(tx, execution_id, {"status": S.PENDING, "report": f"queued again: {why}"}, None)
    return Applied(_row(tx, execution_id), S.PENDING, requeue=True)


def _state(row: dict[str, Any]) -> str:
    """The row's state in TRANSITIONS: its status, RUNNING split by whether a cancel was requested."""
    if row["status"] == S.RUNNING and row["cancel_requested"]:
        return RUNNING_CANCELLING
    return row["status"]


# Whether execution {id} is an upstream DataHub's request, adopted here (upstream/mirror.py): a
# run of that DataHub's source, never of a source of ours, whatever urn the two share.
MIRRORED = "EXISTS (SELECT 1 FROM upstream_requests WHERE execution_id={id} AND refusal_reason IS NULL)"


def is_mirrored(db: sqlite3.Connection, execution_id: str) -> bool:
    """Whether the run EXECUTION_ID is an upstream DataHub's request, adopted here (MIRRORED). Not
    for a refused request: it made no run here, and a run of ours under its id (DataHub's ids are
    its users' to choose) is no run of DataHub's source, nor given its sink and secrets."""
    return bool(db.execute(f"SELECT {MIRRORED.format(id='?')}", (execution_id,)).fetchone()[0])


def _claim(tx: sqlite3.Connection, row: dict, event: Claim, ctx: Context, now: float) -> Applied:
    execution_id, status = row["id"], row["status"]
    require_claimers_pool(execution_id, row["pool_id"], event.pool_id)
    if status in S.ENDED:
        raise Conflict(f"execution {execution_id} is already {status}")
    not_before = ctx.not_before()
    _require_claimer_registered(tx, event, now, not_before)
    if status == S.RUNNING:
        same_holder = (row["executor_id"], row["executor_instance"]) == (event.executor_id, event.instance)
        if same_holder:
            # Its own claim again: a retry, or the message received anew after the holder gave
            # up a claim whose answer was lost (and left it out of a heartbeat). Timed as a new
            # claim: a heartbeat built before it, delivered after, is no miss (reconcile).
            tx.execute("UPDATE executions SET unlisted_heartbeats=0, claimed_at_executor_ms=? WHERE id=?",
                       (_claim_on_executor_clock(tx, event, now), execution_id))
            token = _mint_ingest_token(tx, ctx.tokens, execution_id)
            return Applied(row, "repeated", lease=row["lease"], ingest_token=token)
        holder = holder_liveness(tx, row["executor_id"], row["executor_instance"], now, not_before)
        if holder == ONLINE:
            # While the outbox sends a lost message's replacement (decision 68), a claim may come
            # before the send's answer lets it mark the replacement as the run's message_id: it
            # is judged as the holder's own, as it will be once marked. Only then: a true second
            # copy of a run marked unsent is refused as ever, not deferred until it is dead-lettered.
            if event.message_id and (event.message_id == row["message_id"] or (
                    row["enqueued_at"] is None and execution_id in ctx.replacements_sending)):
                # The holder's own message, back because the holder stopped extending it (paused,
                # cut off): keep it for a claim once the holder is judged gone, not deleted.
                raise Conflict(f"execution {execution_id} is held by executor {row['executor_id']}, which stopped "
                               "extending its message; ask again once it is judged gone",
                               retry_after_s=holder_stale_in(tx, row["executor_id"], now, not_before))
            raise Conflict(f"execution {execution_id} is running on live executor {row['executor_id']}")
        if row["cancel_requested"]:
            # A cancelled run is not started again elsewhere (as a release or requeue of it
            # ends it, decision 47): it ends CANCELLED here, and the old holder, if it comes
            # back, is refused its next write (409) and kills its task.
            _finalize(tx, execution_id, S.CANCELLED, S.CANCELLED_REASON, now)
            _write_result(tx, execution_id, _control_plane_result(
                row, S.CANCELLED, S.CANCELLED_REASON, f"cancelled while its executor {row['executor_id']} was "
                "unreachable; not run again", now), None)
            return Applied(_row(tx, execution_id), "cancelled")
        if holder == STALE and _another_message(row, event):
            # A STALE holder may be only paused: its own message, which it extends, comes back
            # for a takeover once it stops (decision 6). Another message of the run (sent again
            # before the retention ran out, or twice by a send a crash cut short) is in the queue
            # all along: taken over with it, the run ran twice.
            raise Conflict(f"execution {execution_id} is held by executor {row['executor_id']} (STALE), which has "
                           f"not given up its message {row['message_id']}; message {event.message_id} is a second "
                           "copy")
    if status == S.PENDING and row["source_urn"]:
        # A source is one DataHub's: an upstream DataHub's request names its source by that
        # DataHub's urn, which a source of ours may share (`datahub ingest deploy --name x` makes
        # the same urn on either server). Runs are duplicates only of runs of the same DataHub's source.
        other = tx.execute(f"SELECT id FROM executions e WHERE source_urn=? AND status=? AND id<>? "
                           f"AND {MIRRORED.format(id='e.id')} = {MIRRORED.format(id='?')}",
                           (row["source_urn"], S.RUNNING, execution_id, execution_id)).fetchone()
        if other is not None:
            _finalize(tx, execution_id, S.DUPLICATE, S.SOURCE_ALREADY_RUNNING, now)
            _write_result(tx, execution_id, _control_plane_result(
                row, S.DUPLICATE, S.SOURCE_ALREADY_RUNNING, f"its source is already running in {other[0]}", now), None)
            return Applied(_row(tx, execution_id), "duplicate", extra={"running": other[0]})
    lease = secrets.token_urlsafe(18)
    tx.execute("UPDATE executions SET status=?, lease=?, lease_epoch=lease_epoch+1, executor_id=?, executor_instance=?, "
               "receive_count=?, message_id=?, started_at=COALESCE(started_at, ?), last_progress_at=?, "
               "unlisted_heartbeats=0, claimed_at_executor_ms=?, released_lease=NULL WHERE id=?",
               (S.RUNNING, lease, event.executor_id, event.instance, event.receive_count, event.message_id, now, now,
                _claim_on_executor_clock(tx, event, now), execution_id))
    started = _row(tx, execution_id)
    _write_result(tx, execution_id, {"status": S.RUNNING, "startTimeMs": int(started["started_at"] * 1000),
                                     "report": f"claimed by executor {event.executor_id}"}, event.executor_id)
    token = _mint_ingest_token(tx, ctx.tokens, execution_id)
    return Applied(started, S.RUNNING, lease=lease, ingest_token=token)


def _another_message(row: dict, event: Claim) -> bool:
    """Whether the claim comes from another message than the run's, which is known to be in its
    queue (sent and marked). Not when either is unknown: a claim that names no message, a run
    claimed so, or one whose message was lost with its queue (enqueued_at NULL, decision 68)."""
    return bool(event.message_id and row["message_id"] and row["enqueued_at"] is not None
                and event.message_id != row["message_id"])


def _require_claimer_registered(tx: sqlite3.Connection, event: Claim, now: float, not_before: float) -> None:
    """A claim from a process its executor id no longer names (a restart replaced it) or that
    said STOPPED (its last list is final) is refused: no heartbeat of it will ever list or
    reconcile what it would hold. So is one from a process judged OFFLINE (cut off from us for
    six of its intervals, its intake still receiving): granted, the next sweep would end the
    run EXECUTOR_LOST before its next heartbeat could list it. RETRY_AFTER_S makes the executor
    return the message instead of deleting it, so another executor runs the execution (for an
    OFFLINE process, after one of its intervals: by then its heartbeat, if it has one, is in).
    So is a claim from an executor id with no process recorded: the executor heartbeats before
    it takes work, so this is one whose entity an admin deleted while it was cut off, back now.
    Granted, the holder had no record and the next sweep ended the run ABORTED (EXECUTOR_LOST)
    while it ran; deferred, its next heartbeat records it and its claims are granted again."""
    row = tx.execute("SELECT instance, state, heartbeat_interval_s, last_seen FROM executor_instances WHERE executor_id=?",
                     (event.executor_id,)).fetchone()
    if row is None:
        raise Conflict(f"executor {event.executor_id} has no heartbeat on record (never sent, or its entity was "
                       "deleted); it takes work once a heartbeat of it arrives, and its message goes back meanwhile",
                       retry_after_s=REFUSED_CLAIM_RETRY_S)
    if row[0] != event.instance:
        raise Conflict(f"executor process {event.instance} is no longer executor {event.executor_id} (process "
                       f"{row[0]} heartbeats for it now); its message goes back for another executor",
                       retry_after_s=REFUSED_CLAIM_RETRY_S)
    if row[1] == "STOPPED":
        raise Conflict(f"executor {event.executor_id} said it STOPPED; its message goes back for another executor",
                       retry_after_s=REFUSED_CLAIM_RETRY_S)
    if liveness(row[3], row[2], now, row[1], not_before) == OFFLINE:
        raise Conflict(f"executor {event.executor_id} has not heartbeaten for six of its intervals (OFFLINE); it takes "
                       "no work until a heartbeat of it arrives, and its message goes back for another executor",
                       retry_after_s=max(REFUSED_CLAIM_RETRY_S, round(row[2], 1)))


def require_claimers_pool(execution_id: str, runs_pool: str, claimers_pool: str) -> None:
    """Forbidden unless the run is of the claiming executor's pool."""
    if claimers_pool != runs_pool:
        raise Forbidden(f"execution {execution_id} belongs to pool {runs_pool}, not to pool {claimers_pool} of the "
                        "claiming executor")


def _claim_on_executor_clock(tx: sqlite3.Connection, event: Claim, now: float) -> int | None:
    """When the claim happened, in ms of the claiming executor's own clock, at the earliest: its
    last reconciled heartbeat's reportedAt plus the time our clock says passed since that
    heartbeat arrived (it was reported a network trip before, so the real time is later). Only
    durations cross clocks, never instants: skew between the two clocks does not matter. None
    when the process has no reconciled heartbeat.

    That heartbeat's own arrival (reported_arrived_at), not last_seen: a copy of it arriving
    later moves last_seen, and counted from there the claim came out early by the copy's delay,
    so a heartbeat built before the claim and delivered after it was counted as a miss."""
    row = tx.execute("SELECT instance, reported_arrived_at, reported_at_ms FROM executor_instances WHERE executor_id=?",
                     (event.executor_id,)).fetchone()
    if row is None or row[0] != event.instance or row[1] is None or row[2] is None:
        return None
    return row[2] + int(max(0.0, now - row[1]) * 1000)


def holder_online(tx: sqlite3.Connection, executor_id: str | None, instance: str | None, now: float,
                  not_before: float = 0.0) -> bool:
    """Whether the executor process holding a lease still heartbeats (ONLINE, not STALE or OFFLINE)."""
    return holder_liveness(tx, executor_id, instance, now, not_before) == ONLINE


def holder_liveness(tx: sqlite3.Connection, executor_id: str | None, instance: str | None, now: float,
                    not_before: float = 0.0) -> str:
    """The holding process's liveness (liveness.py). A process that is not, or no longer, its
    executor id's registered one (a restart under the same id replaced it, or its entity was
    deleted) is OFFLINE: no heartbeat will ever speak for what it holds."""
    if executor_id is None:
        return OFFLINE
    row = tx.execute("SELECT instance, heartbeat_interval_s, last_seen, state FROM executor_instances WHERE executor_id=?",
                     (executor_id,)).fetchone()
    if row is None or row[0] != instance:
        return OFFLINE
    return liveness(row[2], row[1], now, row[3], not_before)


def _require_holder_gone(tx: sqlite3.Connection, row: dict, event: Lost, now: float, not_before: float) -> None:
    judged = (event.executor_id, event.instance, event.lease_epoch)
    if (row["executor_id"], row["executor_instance"], row["lease_epoch"]) != judged:
        raise Conflict(f"execution {row['id']} was claimed again (lease epoch {row['lease_epoch']}) after its "
                       f"holder {event.executor_id} was judged lost")
    if holder_liveness(tx, event.executor_id, event.instance, now, not_before) != OFFLINE:
        raise Conflict(f"execution {row['id']}'s holder {event.executor_id} heartbeats again")


def holder_stale_in(tx: sqlite3.Connection, executor_id: str, now: float, not_before: float = 0.0) -> float:
    """Seconds until the executor's heartbeats are old enough to judge it STALE (at least 1)."""
    row = tx.execute("SELECT heartbeat_interval_s, last_seen FROM executor_instances WHERE executor_id=?",
                     (executor_id,)).fetchone()
    if row is None:
        return 1.0
    return round(max(1.0, max(row[1], not_before) + STALE_AFTER_MISSED * row[0] - now + 1.0), 1)


def _mint_ingest_token(tx: sqlite3.Connection, tokens: Tokens, execution_id: str) -> str:
    """One live ingest token per execution: a new claim revokes the previous holder's."""
    Tokens.revoke_for_execution(tx, execution_id)
    _, token = tokens.create(INGEST, None, f"ingest for execution {execution_id}", execution_id=execution_id, tx=tx)
    return token


def _finalize(tx: sqlite3.Connection, execution_id: str, status: str, reason: str | None, now: float, *,
              exit_code: int | None = None, signal: int | None = None, peak: int | None = None) -> None:
    tx.execute("UPDATE executions SET status=?, reason=?, finished_at=?, exit_code=?, signal=?, "
               "peak_memory_bytes=MAX(COALESCE(peak_memory_bytes, 0), COALESCE(?, 0)) WHERE id=?",
               (status, reason, now, exit_code, signal, peak, execution_id))
    Tokens.revoke_for_execution(tx, execution_id)


def _control_plane_result(row: dict, status: str, reason: str, why: str, now: float) -> dict[str, Any]:
    """The result the control plane writes when it, not an executor, ends an execution."""
    value: dict[str, Any] = {"status": status, "report": f"{status} ({reason}): {why}",
                             "structuredReport": structured_report(row["task"], {"reason": reason})}
    if row["started_at"]:
        value["startTimeMs"] = int(row["started_at"] * 1000)
        value["durationMs"] = int((now - row["started_at"]) * 1000)
    return value


def _write_result(tx: sqlite3.Connection, execution_id: str, value: dict[str, Any], executor_id: str | None) -> None:
    aspect_store.put(tx, urn=E.execution_urn(execution_id), entity_type=E.EXECUTION, aspect=E.EXECUTION_RESULT,
                     value=value, actor=E.executor_urn(executor_id) if executor_id else None)


def _row(tx: sqlite3.Connection, execution_id: str) -> dict[str, Any]:
    cursor = tx.execute("SELECT * FROM executions WHERE id=?", (execution_id,))
    found = cursor.fetchone()
    if found is None:
        raise NotFound(f"execution {execution_id} not found")
    names = [d[0] for d in cursor.description]
    return dict(zip(names, found))
