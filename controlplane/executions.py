"""Execution requests: created from a source (or a recipe, for a connection test), sent to their
pool's queue, claimed, reported on and ended by executors, through lifecycle.py.

Sending is an outbox: an execution is committed PENDING with no `enqueued_at`, then sent by the
control plane's outbox thread (server.py), which a commit wakes; a send that fails (the queue
service down) is retried by it every few seconds, so an execution is never lost between the
database and the queue. No request sends: a queue service that hangs (connections taken, no
answer, for botocore's minutes of timeouts and retries) held up the API's event loop, heartbeats
could not land, and the sweep ended healthy executors' runs ABORTED (EXECUTOR_LOST).
"""
from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from loguru import logger

from vocabulary import full_log, ids, message, statuses as S
from vocabulary.results import executor_details
from vocabulary.tasks import TASKS, RUN_INGEST, TEST_CONNECTION

from . import entities as E
from . import lifecycle
from .errors import Conflict, Forbidden, Invalid, NotFound
from .liveness import OFFLINE, liveness
from .metadata import aspect_store
from .pools import DATAHUB_CLI_EXECUTOR_ID, Pools
from .queues import Queues
from .sources import extra_args, parse_recipe, with_pipeline_name
from .store import Store
from .tokens import EXECUTOR, Identity

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1  # SQLite's INTEGER
REQUEST_SOURCE_MANUAL = "MANUAL_INGESTION_SOURCE"
# DataHub's CreateTestConnectionRequestResolver names a recipe's connection test so (TEST_CONNECTION_SOURCE_NAME).
REQUEST_SOURCE_TEST = "MANUAL_TEST_CONNECTION"
OUTBOX_WARNING_EVERY_S = 60.0  # while sends fail, how often the outbox says so again
# DataHub's CLI names a run `<source type>-<time>-<random>` where its recipe names no run_id
# (acryl-datahub's PipelineConfig), and a custom source's type is its class's import path:
# `datahub ingest` of a `pkg.module.Source` books its run under an id with dots. Allowed to the
# CLI's runs alone: ours, and those of executors elsewhere, reach executors' paths and file
# names, where the vocabulary's rule (no '.') holds; no executor ever sees a CLI's run. A recipe
# may also set its own run_id, which GMS takes whatever its characters, and people stamp theirs
# with a time or a path ("nightly 2026-11-28T02:00:00Z", "team/hive:orders"): refused, the
# reporter's write failed, and every write of its batch with it. Only what cannot be shown or
# typed is refused: control characters, and spaces at either end.
CLI_RUN_ID = re.compile(r"^[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]{0,126}[^\x00-\x20\x7f])?$")
CLI_RUN_ID_RULE = ("a run id of `datahub ingest` is 1-128 characters, no control characters, and no space at either "
                   "end")


class Executions:
    def __init__(self, store: Store, pools: Pools, queues: Queues, ctx: lifecycle.Context) -> None:
        self.store = store
        self.pools = pools
        self.queues = queues
        self.ctx = ctx
        # What a claim answer adds for some executions (upstream/claims.py: an upstream DataHub's
        # sink and secrets); asked before the claim is applied, so a failure changes nothing.
        self.claim_context: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
        self._to_send = threading.Event()
        self._sending = threading.Lock()
        self._failing_since: float | None = None  # monotonic: when sends began to fail, if they do
        self._warned_at = 0.0
        self._not_remade: set[str] = set()  # pools whose missing queue could not be made again (said once)

    # creation ----------------------------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def input_for_source(self, source: dict[str, Any], task: str, actor: str | None) -> dict[str, Any]:
        value = input_for_source(source, task, actor)
        value["executorId"] = self.pools.resolve(value["executorId"])
        return value

    def input_for_recipe(self, recipe: str, version: str | None, pool_id: str | None, actor: str | None) -> dict[str, Any]:
        """A connection test of a recipe that belongs to no source (createTestConnectionRequest)."""
        parse_recipe(recipe)
        value: dict[str, Any] = {"task": TEST_CONNECTION, "args": {"recipe": recipe, "version": version or ""},
                                 "executorId": self.pools.resolve(pool_id), "source": {"type": REQUEST_SOURCE_TEST},
                                 "requestedAt": aspect_store.now_ms()}
        if actor:
            value["actorUrn"] = actor
        return value

    def on_input(self, tx: sqlite3.Connection, execution_id: str, value: dict[str, Any]) -> dict[str, Any] | None:
        """An execution request's input was written: a new execution, whose input is returned
        with `executorId` naming the pool it routes to (`default` resolved); or None for the
        same input again. Its input never changes once written, but for a run of DataHub's CLI,
        where a new input starts a new run under the same id (lifecycle.Rebooked)."""
        pool_id = self.pools.resolve(value.get("executorId"))
        check_id(execution_id, pool_id)
        routed = {**value, "executorId": pool_id}
        source = value.get("source", {}).get("ingestionSource")
        existing = aspect_store.get(tx, E.execution_urn(execution_id), E.EXECUTION_INPUT)
        if existing is not None:
            if existing.value in (value, routed):
                return None
            if pool_id == DATAHUB_CLI_EXECUTOR_ID and existing.value.get("executorId") == DATAHUB_CLI_EXECUTOR_ID:
                lifecycle.apply(tx, execution_id, lifecycle.Rebooked(value["task"], source), self.ctx)
                return routed
            raise Conflict(f"execution request {execution_id} exists; its input cannot change")
        # Ours are checked now; a request for an executor elsewhere is stored as DataHub stores
        # it, and that executor says what it makes of it (upstream/requests.py refuses).
        if self.pools.is_local(pool_id):
            if value["task"] not in TASKS:
                raise Invalid(f"task {value['task']!r} is not one of {', '.join(sorted(TASKS))}")
            if value["task"] in (RUN_INGEST, TEST_CONNECTION):
                parse_recipe(value.get("args", {}).get("recipe"))
        lifecycle.create(tx, execution_id=execution_id, pool_id=pool_id, task=value["task"], source_urn=source)
        return routed

    # the queue outbox --------------------------------------------------------------------------
    def request_send(self) -> None:
        """Something PENDING was committed: wake the outbox thread, which sends it. The caller
        (a request) never waits on the queue service."""
        self._to_send.set()

    def wait_for_send(self, timeout_s: float) -> None:
        """The outbox thread's pause: until a send is requested, or TIMEOUT_S (the retry of
        sends that failed). A request that lands between the wake and the clear is not lost:
        what it asks to send was committed before it, so the send that follows sees it."""
        self._to_send.wait(timeout_s)
        self._to_send.clear()

    def send_pending(self) -> int:
        """Send every PENDING execution that is not in its queue yet; returns how many were sent.

        At least once: an execution is marked sent (`enqueued_at`) only after its queue took
        it. Marked before, a crash or stop while the send was in flight (a queue service that
        hangs keeps one in flight for minutes) left it marked and never sent: PENDING for good
        on real SQS, which no restart sends again. A crash after the send and before the mark
        sends it twice, which claims tell apart (a second message for a claimed execution is a
        DUPLICATE, for a final one refused). One sender at a time (the lock); the mark is
        written only if no claim came in between (its lease epoch), so a release that asked
        for a new message while this send was in flight still gets one. A claim alone since (an
        executor long-polling gets the message before the queue's answer to the send is back)
        leaves the execution no longer PENDING: it is marked, so its record says when it was sent.

        A queue found gone (deleted while we ran) is made again as its pool's record says, and
        the round after sends the pool's PENDING runs to it, those it held too: until a restart
        made the queues, each send failed for good and what it held stayed PENDING for good."""
        sent, failed, gone = 0, {}, set()
        with self._sending:
            # Only our pools' executions: one for an executor elsewhere (no pool of ours) waits for it.
            for row in self.store.query("SELECT id, pool_id, task, created_at, lease_epoch FROM executions e WHERE "
                                        "status=? AND enqueued_at IS NULL AND EXISTS (SELECT 1 FROM pool_queues q "
                                        "WHERE q.pool_id = e.pool_id) ORDER BY created_at", (S.PENDING,)):
                try:
                    message_id = self.queues.send_text(self.pools.queue_for(row["pool_id"], row["task"]),
                                                       message.encode(row["id"], row["task"], row["pool_id"],
                                                                      int(row["created_at"] * 1000)))
                except Exception as exc:  # botocore: endpoint down, throttling; the outbox tries again
                    failed[row["id"]] = type(exc).__name__
                    if self.queues.is_missing_queue(exc):
                        gone.add(row["pool_id"])
                    continue
                sent += 1
                # A PENDING run's message is recorded as its latest: one of its found in the
                # dead-letter queue ends it only if no other was sent since (lost_messages.py).
                # A claim since keeps the message it came from.
                with self.store.transaction() as tx:
                    tx.execute("UPDATE executions SET enqueued_at=?, message_id=CASE WHEN status=? THEN ? ELSE message_id "
                               "END WHERE id=? AND enqueued_at IS NULL AND (lease_epoch=? OR status<>?)",
                               (time.time(), S.PENDING, message_id, row["id"], row["lease_epoch"], S.PENDING))
            sent += self._send_replacements(failed, gone)
            self._say_how_sending_went(sent, failed)
        for pool_id in sorted(gone):  # outside the send lock: this waits for pool changes
            self.remake_queues(pool_id)
        return sent

    def _send_replacements(self, failed: dict[str, str], gone: set[str], now: float | None = None) -> int:
        """Send a message again for each RUNNING execution whose message its queue lost (the
        embedded queue server restarted, or the queue was deleted: `enqueued_at` NULL, see
        forget_queued) once its holder's would have come back on SQS: the holder is no longer
        ONLINE and one visibility timeout has passed since its last heartbeat (or since our
        start). Another executor's claim then takes it over (decision 6); if none does before
        the holder is OFFLINE, the sweep ends it ABORTED (EXECUTOR_LOST), as on SQS.

        Not sooner: while the holder heartbeats it runs the execution, and a message anyone
        could receive would only be refused, counting toward the dead-letter queue. The
        replacement becomes the execution's `message_id`, so that a claim of it is judged as
        of the holder's own message: deferred (kept) should the holder heartbeat again."""
        now = now or time.time()
        not_before = self.ctx.not_before()
        sent = 0
        for row in self.store.query("SELECT e.id, e.pool_id, e.task, e.created_at, e.lease_epoch, e.executor_id, "
                                    "e.executor_instance, q.visibility_timeout_s FROM executions e JOIN pool_queues q "
                                    "ON q.pool_id = e.pool_id WHERE e.status=? AND e.enqueued_at IS NULL "
                                    "ORDER BY e.created_at", (S.RUNNING,)):
            with self.store.read() as db:
                if lifecycle.holder_online(db, row["executor_id"], row["executor_instance"], now, not_before):
                    continue
                holder = db.execute("SELECT last_seen FROM executor_instances WHERE executor_id=? AND instance=?",
                                    (row["executor_id"], row["executor_instance"])).fetchone()
            silent_since = max(holder[0] if holder else 0.0, not_before)
            if now < silent_since + row["visibility_timeout_s"]:
                continue
            self.ctx.replacements_sending.add(row["id"])  # a claim before the mark is of this one
            try:
                try:
                    message_id = self.queues.send_text(self.pools.queue_for(row["pool_id"], row["task"]),
                                                       message.encode(row["id"], row["task"], row["pool_id"],
                                                                      int(row["created_at"] * 1000)))
                except Exception as exc:  # as for a PENDING run's send: the next round tries again
                    failed[row["id"]] = type(exc).__name__
                    if self.queues.is_missing_queue(exc):
                        gone.add(row["pool_id"])
                    continue
                with self.store.transaction() as tx:
                    marked = tx.execute("UPDATE executions SET enqueued_at=?, message_id=? WHERE id=? AND status=? "
                                        "AND lease_epoch=? AND enqueued_at IS NULL",
                                        (now, message_id, row["id"], S.RUNNING, row["lease_epoch"])).rowcount
            finally:
                self.ctx.replacements_sending.discard(row["id"])
            if marked:
                sent += 1
                logger.bind(execution_id=row["id"]).warning(
                    "execution {}: its message was lost with its queue and its executor {} has not heartbeated for "
                    "{:.0f} s; sent again, for another executor to take over", row["id"], row["executor_id"],
                    now - silent_since)
        return sent

    def remake_queues(self, pool_id: str) -> None:
        """A queue of POOL_ID was found gone, by a send to it or by the look at the queues
        (lost_messages.py): its queues made again as the pool says, and what they held sent again.
        Not from under the send lock: this waits for pool changes."""
        try:
            if self.pools.remake_queues(pool_id):
                # What the deleted queue held is gone: every PENDING run of the pool is sent again
                # (a second message for one that still has its first is told apart at the claim).
                again = self.forget_queued(pool_id)
                logger.warning("a queue of pool {} did not exist (deleted while the control plane ran); its queues "
                               "were made again as the pool says, and its {} PENDING run(s) are sent to them",
                               pool_id, again)
                self.request_send()
            self._not_remade.discard(pool_id)
        except Exception as exc:  # AWS refuses a name deleted in the last 60 s: the next round tries again
            if pool_id not in self._not_remade:
                self._not_remade.add(pool_id)
                logger.warning("a queue of pool {} does not exist and could not be made again ({}); trying again "
                               "every few seconds", pool_id, type(exc).__name__)

    def _say_how_sending_went(self, sent: int, failed: dict[str, str]) -> None:
        """One warning when sends start failing and one a minute while they do, one line when
        they work again: a line per run and round (every 2 s) buried an outage's log (20 runs
        waiting: 207 lines in 20 s)."""
        now = time.monotonic()
        if failed:
            if self._failing_since is None or now - self._warned_at >= OUTBOX_WARNING_EVERY_S:
                execution_id, error = next(iter(failed.items()))
                logger.warning("{} execution(s) not sent to their queues ({}, execution {} among them); retrying "
                               "every few seconds", len(failed), error, execution_id)
                self._warned_at = now
            if self._failing_since is None:
                self._failing_since = now
        elif self._failing_since is not None:
            logger.info("executions sent to their queues again after {:.0f} s of failed sends ({} sent now)",
                        now - self._failing_since, sent)
            self._failing_since = None

    def forget_queued(self, pool_id: str | None = None) -> int:
        """The queues lost their messages (the embedded queue server restarted, or POOL_ID's
        queue was deleted): every PENDING execution (of POOL_ID) must be sent again, and every
        RUNNING one has no message behind it any more, which _send_replacements makes good
        should its holder stop heartbeating. Returns how many PENDING ones there are."""
        where, params = ("", ()) if pool_id is None else (" AND pool_id=?", (pool_id,))
        with self.store.transaction() as tx:
            pending = tx.execute(f"UPDATE executions SET enqueued_at=NULL WHERE status=?{where}",
                                 (S.PENDING, *params)).rowcount
            running = tx.execute(f"UPDATE executions SET enqueued_at=NULL WHERE status=?{where}",
                                 (S.RUNNING, *params)).rowcount
        if running:
            logger.info("{} RUNNING execution(s) lost their messages with the queue; each runs on, and is sent again "
                        "should its executor stop heartbeating", running)
        return pending

    # executors' side ---------------------------------------------------------------------------
    def claim(self, execution_id: str, *, executor_id: str, instance: str, pool_id: str, receive_count: int | None,
              identity: Identity, message_id: str | None = None) -> dict[str, Any]:
        """Claim for one executor process: the lease, the task and its arguments, the pool, and
        the run's ingest token. 409 when the execution is not this executor's to run."""
        if identity.kind != EXECUTOR and not identity.is_admin:
            raise Forbidden("claims need an executor token")
        identity.require_pool(pool_id)
        if not self.pools.is_local(pool_id):
            # A run for an executor elsewhere (its executorId names no pool of ours) is that
            # executor's: no executor of ours receives it, and a claim here would hand out its
            # recipe and an ingest token, and leave it RUNNING where no sweep ever ends it.
            raise Forbidden(f"pool {pool_id} is not one of this control plane's pools: its runs are claimed by the "
                            "executor elsewhere that they name")
        with self.store.read() as db:
            inputs = aspect_store.get(db, E.execution_urn(execution_id), E.EXECUTION_INPUT)
            row = db.execute("SELECT status, pool_id FROM executions WHERE id=?", (execution_id,)).fetchone()
        if row is not None:
            # Refused before anything is done for the claim: claim_context may ask an upstream
            # DataHub for the recipe's secrets, which another pool's executor must not set going
            # (nor learn, from a 503, that the run's recipe names some).
            lifecycle.require_claimers_pool(execution_id, row["pool_id"], pool_id)
        args = (inputs.value if inputs else {}).get("args", {})
        # A final execution's claim is refused below (409: the executor deletes its message).
        # Asking an upstream DataHub for its secrets first made a redelivery of a finished run
        # wait out a DataHub outage (503, asked again) instead.
        final = row is None or row["status"] in S.ENDED
        extra = self.claim_context(execution_id, args) if self.claim_context and inputs and not final else {}
        with self.store.transaction() as tx:
            applied = lifecycle.apply(tx, execution_id, lifecycle.Claim(executor_id, instance, pool_id, receive_count,
                                                                              message_id), self.ctx)
        if applied.outcome == "duplicate":
            raise Conflict(f"execution {execution_id} is a DUPLICATE: its source is already running in "
                           f"{applied.extra['running']}")
        if applied.outcome == "cancelled":
            raise Conflict(f"execution {execution_id} was cancelled while its executor was unreachable: it is "
                           "CANCELLED, not run again")
        return {**extra, "execution_id": execution_id, "lease": applied.lease,
                "lease_epoch": applied.execution["lease_epoch"], "task": applied.execution["task"],
                "pool_id": applied.execution["pool_id"], "args": args, "ingest_token": applied.ingest_token,
                "log_encodings": [full_log.GZIP]}

    def on_result(self, tx: sqlite3.Connection, execution_id: str, value: dict[str, Any], lease: str | None,
                  identity: Identity) -> lifecycle.Applied:
        """An executor wrote dataHubExecutionRequestResult: progress (RUNNING) or the end.

        Ours carry the lease of their claim. An execution for an executor elsewhere (its
        executorId names no pool here, e.g. an upstream-mode control plane's pool) has no claim
        of ours: as in DataHub, its result is written by whoever runs it, with an admin token."""
        row = tx.execute("SELECT pool_id FROM executions WHERE id=?", (execution_id,)).fetchone()
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        details = executor_details(value)
        if lease is None:
            if self.pools.is_local(row[0]):
                raise Forbidden("dataHubExecutionRequestResult is written by the executor that holds the execution's "
                                "lease (MCP header X-DataHub-Execution-Lease)")
            identity.require_admin(f"writing the result of execution {execution_id}, which runs elsewhere,")
            return lifecycle.apply(tx, execution_id, lifecycle.Reported(
                value, reason=_reason(details.get("reason")), exit_code=_int(details, "exitCode"),
                signal=_int(details, "signal"), peak_memory_bytes=_int(details, "peakMemoryBytes")), self.ctx)
        identity.require_pool(row[0])
        if value.get("status") == S.RUNNING:
            event: lifecycle.Event = lifecycle.Progress(lease, value, _int(details, "peakMemoryBytes"))
        else:
            event = lifecycle.Finish(lease, value, reason=_reason(details.get("reason")),
                                     exit_code=_int(details, "exitCode"), signal=_int(details, "signal"),
                                     peak_memory_bytes=_int(details, "peakMemoryBytes"))
        return lifecycle.apply(tx, execution_id, event, self.ctx)

    def release(self, execution_id: str, lease: str, why: str, identity: Identity, *, failed: bool = False) -> dict[str, Any]:
        """Work an executor claimed but will not run: queued again at once. FAILED: its runner
        broke (not a stop), which only so many times are allowed (lifecycle.FAILED_RELEASES_TO_FAIL)."""
        with self.store.transaction() as tx:
            self._require_pool_of(tx, execution_id, identity)
            applied = lifecycle.apply(tx, execution_id, lifecycle.Release(lease, why[:200], failed), self.ctx)
        self.request_send()
        return {"execution_id": execution_id, "status": applied.execution["status"]}

    def on_signal(self, tx: sqlite3.Connection, execution_id: str, value: dict[str, Any]) -> lifecycle.Applied | None:
        """DataHub's KILL signal. An execution that runs elsewhere is that executor's to end: it
        reads the signal aspect, as DataHub's own executor does; we only note the request."""
        if value.get("signal") != "KILL":
            return None
        row = tx.execute("SELECT pool_id, status FROM executions WHERE id=?", (execution_id,)).fetchone()
        if row is not None and not self.pools.is_local(row[0]):
            if row[1] not in S.ENDED:
                tx.execute("UPDATE executions SET cancel_requested=1 WHERE id=?", (execution_id,))
            return None
        return lifecycle.apply(tx, execution_id, lifecycle.Cancel(), self.ctx)

    def store_log(self, execution_id: str, lease: str, data: bytes, identity: Identity,
                  encoding: str = full_log.IDENTITY) -> dict[str, Any]:
        """The full log of the run that holds LEASE, as sent: plain (cut to its head and tail past
        the cap) or gzip (refused past the cap, not cut: cutting it would mean expanding it).
        An execution without a lease (never claimed, or queued again) has no run whose log it
        could be."""
        if encoding == full_log.GZIP:
            try:
                size = full_log.checked_gzip(data)
            except full_log.NotALog as exc:
                raise Invalid(str(exc)) from None
        elif encoding == full_log.IDENTITY:
            data = full_log.head_and_tail(data)
            size = len(data)
        else:
            raise Invalid(f"a log's Content-Encoding is gzip or none, not {encoding!r}")
        with self.store.transaction() as tx:
            row = self._require_pool_of(tx, execution_id, identity)
            if row["lease"] is None or lease != row["lease"]:
                raise Conflict(f"stale lease for execution {execution_id}: its log belongs to the run that holds it")
            tx.execute("INSERT OR REPLACE INTO execution_logs (execution_id, encoding, data) VALUES (?, ?, ?)",
                       (execution_id, encoding, data))
        return {"ok": True, "bytes": size}

    def _require_pool_of(self, tx: sqlite3.Connection, execution_id: str, identity: Identity) -> dict[str, Any]:
        cursor = tx.execute("SELECT pool_id, lease FROM executions WHERE id=?", (execution_id,))
        row = cursor.fetchone()
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        identity.require_pool(row[0])
        return {"pool_id": row[0], "lease": row[1]}

    # sweeps ------------------------------------------------------------------------------------
    def abort_lost(self, now: float | None = None) -> list[str]:
        """RUNNING executions whose holder is gone (OFFLINE, or no longer its executor id's
        registered process) end ABORTED (EXECUTOR_LOST). The look here is only a first cut: each
        is judged again inside the transaction that ends it (lifecycle.Lost), since a live
        executor may claim it, or its holder heartbeat, between this read and that write.

        One row that cannot be judged is logged and passed over: the rows after it, and the
        expiry sweep after this one, still run."""
        now = now or time.time()
        not_before = self.ctx.not_before()
        lost = []
        for row in self.store.query("SELECT e.id, e.executor_id, e.executor_instance, e.lease_epoch, i.instance, "
                                    "i.heartbeat_interval_s, i.last_seen, i.state FROM executions e "
                                    "LEFT JOIN executor_instances i ON i.executor_id = e.executor_id WHERE e.status=? "
                                    "AND EXISTS (SELECT 1 FROM pool_queues q WHERE q.pool_id = e.pool_id)", (S.RUNNING,)):
            # As lifecycle.holder_liveness: no holder, or a holder whose executor id names no
            # process (a run reported RUNNING from elsewhere, then its pool made here; a row
            # from before processes were recorded) is gone, not a liveness to compute.
            gone = (row["executor_id"] is None or row["instance"] is None or row["instance"] != row["executor_instance"]
                    or liveness(row["last_seen"], row["heartbeat_interval_s"], now, row["state"],
                                not_before) == OFFLINE)
            if not gone:
                continue
            holder = lifecycle.Lost(row["executor_id"], row["executor_instance"], row["lease_epoch"])
            try:
                with self.store.transaction() as tx:
                    lifecycle.apply(tx, row["id"], holder, self.ctx, now=now)
            except Conflict:
                continue  # it ended, was claimed again, or its holder came back meanwhile
            except Exception:
                logger.bind(execution_id=row["id"]).exception("could not judge RUNNING execution {} lost; the "
                                                              "sweep goes on with the others", row["id"])
                continue
            lost.append(row["id"])
        return lost

    def reconcile(self, tx: sqlite3.Connection, executor_id: str, instance: str, listed: set[str], *,
                  reported_at_ms: int | None = None, final: bool = False, clock_set_back: bool = False) -> list[str]:
        """What an executor says it runs against what we think it runs: an execution it holds
        but did not list in two heartbeats in a row is queued again (a claim whose answer was
        lost, a task that never started). A FINAL list (its last heartbeat, STOPPED) is the
        truth at once: what it did not list never ran, and is queued again now.

        The caller passes each heartbeat once (a copy the executor's HTTP layer re-sent is not
        reconciled again: executors.on_status). A heartbeat the executor reported (REPORTED_AT_MS,
        its own clock) before a claim was granted, by that claim's time on the same clock
        (lifecycle._claim_on_executor_clock), could not list it: it is no miss.

        CLOCK_SET_BACK: this heartbeat is earlier than the last one reconciled (the executor's
        clock was set back; executors._not_seen_before). A claim's time counted on the clock
        before can no longer be compared with it, nor with any heartbeat after: compared, an
        hour's step back made every heartbeat of that hour look built before the claim, and a
        claim whose answer was lost stayed RUNNING for the hour. It is forgotten: such a claim
        is queued again after two heartbeats without it, as one timed on no clock (of two in a
        row, only the first can have been built before it)."""
        requeued = []
        if clock_set_back:
            tx.execute("UPDATE executions SET claimed_at_executor_ms=NULL WHERE status=? AND executor_id=? AND "
                       "executor_instance=?", (S.RUNNING, executor_id, instance))
        held = tx.execute("SELECT id, unlisted_heartbeats, claimed_at_executor_ms FROM executions WHERE status=? "
                          "AND executor_id=? AND executor_instance=?", (S.RUNNING, executor_id, instance)).fetchall()
        for execution_id, unlisted, claimed_at_ms in held:
            if execution_id in listed:
                if unlisted:
                    tx.execute("UPDATE executions SET unlisted_heartbeats=0 WHERE id=?", (execution_id,))
                continue
            if not final and reported_at_ms is not None and claimed_at_ms is not None and reported_at_ms <= claimed_at_ms:
                continue  # its list was taken before the claim
            if final or unlisted + 1 >= lifecycle.UNLISTED_HEARTBEATS_TO_REQUEUE:
                lifecycle.apply(tx, execution_id, lifecycle.Requeue(
                    f"executor {executor_id} holds it but did not list it in {unlisted + 1} heartbeats"), self.ctx)
                requeued.append(execution_id)
            else:
                tx.execute("UPDATE executions SET unlisted_heartbeats=? WHERE id=?", (unlisted + 1, execution_id))
        return requeued

    def requeue_held(self, tx: sqlite3.Connection, executor_id: str, instance: str, why: str) -> list[str]:
        held = tx.execute("SELECT id FROM executions WHERE status=? AND executor_id=? AND executor_instance=?",
                          (S.RUNNING, executor_id, instance)).fetchall()
        for (execution_id,) in held:
            lifecycle.apply(tx, execution_id, lifecycle.Requeue(why), self.ctx)
        return [row[0] for row in held]

    # views -------------------------------------------------------------------------------------
    def view(self, execution_id: str, *, with_log: bool = False) -> dict[str, Any]:
        with self.store.read() as db:
            cursor = db.execute("SELECT * FROM executions WHERE id=?", (execution_id,))
            found = cursor.fetchone()
            if found is None:
                raise NotFound(f"execution {execution_id} not found")
            row = dict(zip([d[0] for d in cursor.description], found))
            aspects = aspect_store.latest(db, E.execution_urn(execution_id), (E.EXECUTION_INPUT, E.EXECUTION_RESULT))
            logged = db.execute(f"SELECT encoding, {'data' if with_log else 'NULL'} FROM execution_logs "
                                "WHERE execution_id=?", (execution_id,)).fetchone()
            mirrored = lifecycle.is_mirrored(db, execution_id)
        row.pop("lease", None)
        row["urn"] = E.execution_urn(execution_id)
        row["mirrored"] = mirrored  # an upstream DataHub's request: its source_urn is that DataHub's
        row["cancel_requested"] = bool(row["cancel_requested"])
        row["input"] = aspects[E.EXECUTION_INPUT].value if E.EXECUTION_INPUT in aspects else None
        row["result"] = aspects[E.EXECUTION_RESULT].value if E.EXECUTION_RESULT in aspects else None
        # An executor sends no separate log when the result's report holds it whole (logInReport).
        row["has_full_log"] = logged is not None or bool(executor_details(row["result"]).get("logInReport"))
        if with_log:
            tail = (row["result"] or {}).get("report") or ""
            row["log"] = full_log.text(logged[0], logged[1]) if logged is not None else tail
        return row

    def list(self, *, source_urn: str | None = None, status: str | None = None, pool_id: str | None = None,
             executor_id: str | None = None, start: int = 0, count: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """The runs that match, newest first. SOURCE_URN: the runs of our source of that urn; an
        upstream DataHub's requests naming the same urn are runs of that DataHub's source."""
        where, params = ["1=1"], []
        for column, value in (("source_urn", source_urn), ("status", status), ("pool_id", pool_id),
                              ("executor_id", executor_id)):
            if value:
                where.append(f"{column}=?")
                params.append(value)
        if source_urn:
            where.append(f"NOT {lifecycle.MIRRORED.format(id='executions.id')}")
        clause = " AND ".join(where)
        total = self.store.one(f"SELECT COUNT(*) AS n FROM executions WHERE {clause}", tuple(params))["n"]
        rows = self.store.query(f"SELECT id FROM executions WHERE {clause} ORDER BY created_at DESC, id DESC "
                                "LIMIT ? OFFSET ?", (*params, max(0, min(count, 1000)), max(0, start)))
        return total, [self.view(r["id"]) for r in rows]

    def index(self) -> list[dict[str, Any]]:
        """Every execution, newest first, with only what listings filter and sort on (id, urn,
        source_urn, mirrored, pool_id, status, task, created_at): a listing filters, sorts and
        pages these, then views the page alone."""
        rows = self.store.query(f"SELECT id, source_urn, {lifecycle.MIRRORED.format(id='e.id')} AS mirrored, pool_id, "
                                "status, task, created_at FROM executions e ORDER BY created_at DESC, id DESC")
        return [{**row, "mirrored": bool(row["mirrored"]), "urn": E.execution_urn(row["id"])} for row in rows]

    def run_summary(self, run_id: str) -> dict[str, Any]:
        """What a run wrote: entities and aspects (from the writes its ingest token made)."""
        rows = self.store.query("SELECT urn, entity_type, aspect, writes FROM run_writes WHERE run_id=? ORDER BY urn, aspect",
                                (run_id,))
        entities: dict[str, dict[str, Any]] = {}
        for row in rows:
            entity = entities.setdefault(row["urn"], {"urn": row["urn"], "type": row["entity_type"], "aspects": []})
            entity["aspects"].append(row["aspect"])
        return {"run_id": run_id, "entities": len(entities), "aspects": len(rows),
                "writes": sum(r["writes"] for r in rows), "entity_list": list(entities.values())}


def check_id(execution_id: str, pool_id: str | None = None) -> str:
    """EXECUTION_ID, if a run routed to POOL_ID may have it (Invalid, saying the rule, if not);
    with no POOL_ID, if any run may (a lookup)."""
    try:
        return ids.execution_id(execution_id)
    except ids.InvalidId as exc:
        if pool_id not in (None, DATAHUB_CLI_EXECUTOR_ID):
            raise Invalid(str(exc)) from None
        if not isinstance(execution_id, str) or not CLI_RUN_ID.fullmatch(execution_id):
            raise Invalid(f"{exc}; {CLI_RUN_ID_RULE}") from None
        return execution_id


def _int(details: dict[str, Any], name: str) -> int | None:
    """The whole number the result's executor section has under NAME (anything else: none). One
    SQLite cannot store (past 64 bits) is refused with 400, not failed on with a 500 the executor
    would retry for ever."""
    value = details.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if not INT64_MIN <= value <= INT64_MAX:
        raise Invalid(f"structuredReport.executor.{name} ({value}) is out of a 64-bit integer's range")
    return value


def _reason(value: Any) -> str | None:
    """An executor's reason, kept where it is one an executor gives; the control plane's own
    (EXECUTOR_LOST, CANCELLED_BEFORE_START, ...) say what the control plane decided, and an
    executor's result naming one is not taken as having happened, as an unknown one is not."""
    if isinstance(value, str) and value in S.EXECUTOR_REASONS:
        return value
    return None


def input_for_source(source: dict[str, Any], task: str, actor: str | None = None) -> dict[str, Any]:
    """DataHub's dataHubExecutionRequestInput for a run of SOURCE (an ingestion source's urn and
    info), as DataHub's resolver writes it: the recipe, version and debug mode of the source, its
    extraArgs as further arguments, routed by the source's executorId."""
    if task not in TASKS:
        raise Invalid(f"task must be one of {', '.join(sorted(TASKS))}")
    info = source["info"]
    config = info.get("config", {})
    # The source's urn is the pipeline's name where the recipe gives none, as DataHub's resolver
    # and scheduler give it (stateful ingestion keeps its checkpoints under it).
    arguments = {"recipe": with_pipeline_name(config["recipe"], source["urn"]), "version": config.get("version") or "",
                 "debug_mode": "true" if config.get("debugMode") else "false", **extra_args(info)}
    value: dict[str, Any] = {"task": task, "args": arguments, "executorId": config.get("executorId") or E.DEFAULT_EXECUTOR_ID,
                             "source": {"type": REQUEST_SOURCE_MANUAL, "ingestionSource": source["urn"]},
                             "requestedAt": aspect_store.now_ms()}
    if actor:
        value["actorUrn"] = actor
    return value
