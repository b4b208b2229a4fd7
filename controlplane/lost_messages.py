"""PENDING runs whose message leaves its queue with no claim, noticed: the control plane looks
at its pools' queues every few seconds from a thread of its own (server.py), never from the
API's path nor from the sweep, which must not wait on the queue service.

A message leaves its queue unclaimed in two ways, and each left its run PENDING for good:

- **The queue's retention runs out.** SQS drops the message without a word (14 days now,
  queues.MESSAGE_RETENTION_S; 4, SQS's default, before: a pool with no executor over a long
  weekend lost its queued runs). A PENDING run whose message is older than its queue's retention
  less a margin (RESEND_MARGIN_S, or half a retention under twice that) is marked unsent, and
  the outbox sends it a new message, its latest from then on. The old one may still be there
  for the margin; two messages of one run are told apart at the claim: the other one's claim is
  refused (409, and the message deleted) while the run's holder lives, the holder's own intake
  deletes it unclaimed (decision 8), and a final run's claim is refused. So it runs once, and a
  run that waits for an executor waits on, however long.
- **It is received as often as the pool's redrive allows without being claimed**, and SQS moves
  it to the pool's dead-letter queue: claims deferred again and again (an executor judged
  OFFLINE whose intake still receives), or executors that receive and never claim. Sent again,
  it would go round the same loop, defeating the redrive, DataHub's guard against a message
  nothing can take. The run ends FAILURE (MESSAGE_DEAD_LETTERED, through lifecycle.apply) with a
  result that says what happened and where the message is, if the message found is the run's
  latest (lifecycle.DeadLettered). The message is left in the dead-letter queue for operators
  (alarms count it there, and its body names the run); each one is judged once, its id
  remembered (table dead_letters) for as long as SQS can keep it.

A queue the look finds gone (deleted by hand or by a script while we ran) took its messages with
it: it is made again and what it held sent again (Executions.remake_queues, decision 66), as when
a send finds it gone; a pool with no new run to send had its waiting runs PENDING for good.
"""
from __future__ import annotations

import sqlite3
import time
from typing import Any

from loguru import logger

from vocabulary import message, statuses as S

from . import lifecycle
from .errors import Conflict
from .executions import Executions
from .pools import Pools
from .queues import MESSAGE_RETENTION_S, Queues
from .store import Store

# How long before its queue's retention runs out a waiting run is sent a new message: a day
# covers a control plane down for hours, a queue service out meanwhile, and a retention change's
# 15 minutes to reach every SQS host. Under two days of retention (tests), half of it.
RESEND_MARGIN_S = 86400.0
# How long one look hides a dead-letter queue's messages from other receives: long enough for a
# round to page past them, short enough that an operator's console or a redrive hardly notices.
LOOK_HIDES_S = 10
LOOKS_PER_QUEUE = 10  # receives per dead-letter queue and round: up to 100 messages; more, next rounds
# A remembered message id is dropped once no queue can hold its message any more: SQS counts a
# dead-lettered message's retention from its first send, and no queue of ours keeps one longer.
FORGET_AFTER_S = MESSAGE_RETENTION_S + 86400.0


def resend_after_s(retention_s: int) -> float:
    """How old a waiting run's message may grow in a queue keeping messages RETENTION_S."""
    return retention_s - min(RESEND_MARGIN_S, retention_s / 2)


class LostMessages:
    def __init__(self, store: Store, pools: Pools, queues: Queues, executions: Executions) -> None:
        self.store = store
        self.pools = pools
        self.queues = queues
        self.executions = executions
        self._failing = False  # whether the last round could not look at some queue (said once)

    def check(self, now: float | None = None) -> dict[str, list[str]]:
        """One look at every pool's queues and dead-letter queues. Returns the runs sent again
        ("resent") and those ended because their message was dead-lettered ("dead_lettered")."""
        now = now or time.time()
        resent: list[str] = []
        ended: list[str] = []
        failures: list[str] = []
        gone: set[str] = set()
        for pool in self.store.query("SELECT * FROM pool_queues ORDER BY pool_id"):
            for queue_url, dlq_url in ((pool["ingestion_queue_url"], pool["ingestion_dlq_url"]),
                                       (pool["monitors_queue_url"], pool["monitors_dlq_url"])):
                try:
                    resent += self._send_again_before_expiry(pool["pool_id"], queue_url, now)
                    ended += self._judge_dead_letters(pool, dlq_url, now)
                except Exception as exc:  # the queue service down, or the queue deleted: the next round
                    failures.append(f"{queue_url.rsplit('/', 1)[-1]}: {type(exc).__name__}")
                    if self.queues.is_missing_queue(exc):
                        gone.add(pool["pool_id"])
        # A queue deleted while we ran took its runs' messages, and they are marked sent: made
        # again here too, not only when a send to it fails (a pool with no new run has none).
        for pool_id in sorted(gone):
            self.executions.remake_queues(pool_id)
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM dead_letters WHERE seen_at < ?", (now - FORGET_AFTER_S,))
        if resent:
            self.executions.request_send()
        if failures and not self._failing:
            logger.warning("could not look at {} queue(s) for runs whose messages leave them unclaimed ({}); trying "
                           "again every round", len(failures), ", ".join(failures[:4]))
        elif self._failing and not failures:
            logger.info("looking at the pools' queues for runs whose messages leave them unclaimed again")
        self._failing = bool(failures)
        return {"resent": resent, "dead_lettered": ended}

    def _send_again_before_expiry(self, pool_id: str, queue_url: str, now: float) -> list[str]:
        """The pool's PENDING runs in QUEUE_URL whose message is about to outlive the queue's
        retention (read from the queue: a hand edit counts until our next start gives it ours
        again), marked unsent for the outbox."""
        retention_s = self.queues.retention_of(queue_url)
        waited_s = resend_after_s(retention_s)
        resent = []
        for row in self.store.query("SELECT id, task, enqueued_at FROM executions WHERE status=? AND pool_id=? "
                                    "AND enqueued_at < ? ORDER BY enqueued_at", (S.PENDING, pool_id, now - waited_s)):
            if self.pools.queue_for(pool_id, row["task"]) != queue_url:
                continue
            with self.store.transaction() as tx:
                # Only the mark looked at: a release or a send since made another.
                cleared = tx.execute("UPDATE executions SET enqueued_at=NULL WHERE id=? AND status=? AND enqueued_at=?",
                                     (row["id"], S.PENDING, row["enqueued_at"])).rowcount
            if cleared:
                resent.append(row["id"])
                logger.bind(execution_id=row["id"]).warning(
                    "execution {} has waited {:.1f} h in queue {} and no executor has claimed it; the queue keeps a "
                    "message {:.1f} h, so it is sent again (is an executor of pool {} running?)", row["id"],
                    (now - row["enqueued_at"]) / 3600, queue_url.rsplit("/", 1)[-1], retention_s / 3600, pool_id)
        return resent

    def _judge_dead_letters(self, pool: dict[str, Any], dlq_url: str, now: float) -> list[str]:
        """Each message of DLQ_URL not judged before, judged once; the messages stay there."""
        ended: list[str] = []
        looked: set[str] = set()
        for _ in range(LOOKS_PER_QUEUE):
            batch = [m for m in self.queues.look_at(dlq_url, LOOK_HIDES_S) if m["MessageId"] not in looked]
            if not batch:
                break
            for found in batch:
                looked.add(found["MessageId"])
                execution_id = self._judge(pool, dlq_url, found, now)
                if execution_id is not None:
                    ended.append(execution_id)
        return ended

    def _judge(self, pool: dict[str, Any], dlq_url: str, found: dict[str, Any], now: float) -> str | None:
        """The run that FOUND, a message of POOL's dead-letter queue DLQ_URL, ended, if it ended
        one. What it did is remembered with its id, in the transaction that did it."""
        message_id = found["MessageId"]
        with self.store.transaction() as tx:
            if tx.execute("SELECT 1 FROM dead_letters WHERE message_id=?", (message_id,)).fetchone() is not None:
                return None
            execution_id, outcome = self._outcome(tx, pool, dlq_url, found, now)
            tx.execute("INSERT INTO dead_letters (message_id, queue_url, execution_id, outcome, seen_at) "
                       "VALUES (?,?,?,?,?)", (message_id, dlq_url, execution_id, outcome, now))
        queue = dlq_url.rsplit("/", 1)[-1]
        if outcome == S.FAILURE:
            logger.bind(execution_id=execution_id).warning(
                "execution {}'s message {} is in dead-letter queue {}: received {} times (pool {}'s redrive limit) "
                "and claimed by no executor; the execution ends FAILURE (MESSAGE_DEAD_LETTERED), the message is kept "
                "there", execution_id, message_id, queue, pool["max_receive_count"], pool["pool_id"])
            return execution_id
        logger.info("message {} in dead-letter queue {} is left there: {}", message_id, queue, outcome)
        return None

    def _outcome(self, tx: sqlite3.Connection, pool: dict[str, Any], dlq_url: str, found: dict[str, Any],
                 now: float) -> tuple[str | None, str]:
        """The execution FOUND names (if any) and what became of it: FAILURE when it ended here."""
        try:
            body = message.decode(found.get("Body") or "")
        except message.MalformedMessage as exc:
            return None, f"not a message of ours ({exc})"
        execution_id = body.execution_id
        row = tx.execute("SELECT status, pool_id FROM executions WHERE id=?", (execution_id,)).fetchone()
        if row is None:
            return execution_id, "it names no execution here"
        if body.pool_id != pool["pool_id"] or row[1] != pool["pool_id"]:
            return execution_id, f"it names execution {execution_id} of pool {row[1]}, not of pool {pool['pool_id']}"
        if row[0] != S.PENDING:
            return execution_id, f"execution {execution_id} is {row[0]}, not waiting for an executor"
        try:
            lifecycle.apply(tx, execution_id, lifecycle.DeadLettered(found["MessageId"], dlq_url,
                                                                     pool["max_receive_count"]), self.executions.ctx,
                            now=now)
        except Conflict as refused:
            return execution_id, str(refused)
        return execution_id, S.FAILURE
