"""Pools: `dataHubRemoteExecutorPool` entities with their queues, and the default pool.

The pool's DataHub aspect holds what DataHub has fields for (description, queueUrl,
queueRegion, createdAt, state). What it has no field for is kept in the aspect's system
metadata properties, where DataHub's API shows it (GET /entitiesV2): the monitors queue, the
queue's ARN (for the ECS template's PoolQueueArn), the visibility timeout and, for the embedded
queue server only, its endpoint. The queues' dead-letter queues and redrive settings are the
control plane's alone (table pool_queues).
"""
from __future__ import annotations

import threading
from typing import Any

from loguru import logger

from vocabulary import ids
from vocabulary.message import MAX_VISIBILITY_S
from vocabulary.tasks import MONITORS, UnknownTask, task_class

from . import entities as E
from .errors import Conflict, Invalid, NotFound
from .metadata import aspect_store
from .queues import Queues
from .store import Store
from .tokens import Tokens

DEFAULT_VISIBILITY_TIMEOUT_S = 60
DEFAULT_MAX_RECEIVE_COUNT = 5
# DataHub's CLI's executor id. `datahub ingest`'s default reporter (DataHub's
# DatahubIngestionRunSummaryProvider) books each run on a source and an execution request of
# this executorId, in the same batches as the run's metadata; DataHub's UI shows them as CLI
# ingestion (its CLI_EXECUTOR_ID) and never schedules or runs them. No pool id can be it (a pool
# id starts with a letter or digit).
DATAHUB_CLI_EXECUTOR_ID = "__datahub_cli_"


class Pools:
    def __init__(self, store: Store, queues: Queues) -> None:
        self.store = store
        self.queues = queues
        # One change of queues at a time (create, queue settings, delete): each changes the queue
        # service and then the record, and two interleaved left the record saying one thing and
        # the queues another. Held across the queue service's calls: only pool changes wait.
        self._changing = threading.Lock()

    def create(self, pool_id: str, *, description: str | None = None, is_default: bool = False, creator: str | None = None,
               visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S,
               max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT) -> dict[str, Any]:
        try:
            ids.pool_id(pool_id)
        except ids.InvalidId as exc:
            raise Invalid(str(exc)) from None
        if not 1 <= visibility_timeout_s <= MAX_VISIBILITY_S:
            raise Invalid(f"visibility_timeout_s must be between 1 and {MAX_VISIBILITY_S} (SQS's 12-hour ceiling)")
        if not 1 <= max_receive_count <= 1000:
            raise Invalid("max_receive_count must be between 1 and 1000")
        if self._queue_row(pool_id) is not None:
            raise Conflict(f"pool {pool_id} already exists")
        created = self.queues.create_pool_queues(pool_id, visibility_timeout_s, max_receive_count)
        with self.store.transaction() as tx:
            # Again where it counts: another creation of the same id may have committed while
            # the queues were made (they are the same queues, so they stay).
            if tx.execute("SELECT 1 FROM pool_queues WHERE pool_id=?", (pool_id,)).fetchone() is not None:
                raise Conflict(f"pool {pool_id} already exists")
            tx.execute("INSERT INTO pool_queues VALUES (?,?,?,?,?,?,?)",
                       (pool_id, created.ingestion_url, created.ingestion_dlq_url, created.monitors_url,
                        created.monitors_dlq_url, visibility_timeout_s, max_receive_count))
            info = {"createdAt": aspect_store.now_ms(), "queueUrl": created.ingestion_url, "queueRegion": self.queues.region,
                    "isEmbedded": False, "state": {"status": "READY"}, "channel": "SQS"}
            if creator:
                info["creator"] = creator
            if description:
                info["description"] = description
            aspect_store.put(tx, urn=E.pool_urn(pool_id), entity_type=E.POOL, aspect=E.POOL_INFO, value=info,
                             system_metadata=self._extras(pool_id, created.monitors_url, created.ingestion_arn,
                                                          visibility_timeout_s), actor=creator)
            if is_default or self._default_pool_id(tx) is None:
                self._write_default(tx, pool_id)
        return self.get(pool_id)

    def _extras(self, pool_id: str, monitors_url: str, arn: str, visibility_timeout_s: int) -> dict[str, Any]:
        properties = {"monitorsQueueUrl": monitors_url, "queueArn": arn, "visibilityTimeoutSeconds": str(visibility_timeout_s)}
        if self.queues.local and self.queues.endpoint_url:
            properties["sqsEndpointUrl"] = self.queues.endpoint_url
        return {"lastObserved": aspect_store.now_ms(), "runId": "no-run-id-provided", "properties": properties}

    def ensure_queues(self) -> None:
        """(Re)create every pool's queues, e.g. after the embedded queue server restarted (its
        queues live in memory), and record their URLs."""
        for row in self.store.query("SELECT * FROM pool_queues"):
            self._ensure_queues(row)

    def remake_queues(self, pool_id: str) -> bool:
        """POOL_ID's queues made again as its record says, when a send found one gone (deleted by
        hand or by a script while we ran); False when the pool itself is gone. Serialised with
        pool changes, so a pool deleted meanwhile never has its queues made again."""
        with self._changing:
            row = self._queue_row(pool_id)
            if row is None:
                return False
            self._ensure_queues(row)
            return True

    def _ensure_queues(self, row: dict[str, Any]) -> None:
        created = self.queues.create_pool_queues(row["pool_id"], row["visibility_timeout_s"], row["max_receive_count"])
        with self.store.transaction() as tx:
            tx.execute("UPDATE pool_queues SET ingestion_queue_url=?, ingestion_dlq_url=?, monitors_queue_url=?, "
                       "monitors_dlq_url=? WHERE pool_id=?", (created.ingestion_url, created.ingestion_dlq_url,
                                                               created.monitors_url, created.monitors_dlq_url,
                                                               row["pool_id"]))
            current = aspect_store.get(tx, E.pool_urn(row["pool_id"]), E.POOL_INFO)
            info = dict(current.value) if current else {"createdAt": aspect_store.now_ms()}
            info.update({"queueUrl": created.ingestion_url, "queueRegion": self.queues.region})
            aspect_store.put(tx, urn=E.pool_urn(row["pool_id"]), entity_type=E.POOL, aspect=E.POOL_INFO, value=info,
                             system_metadata=self._extras(row["pool_id"], created.monitors_url, created.ingestion_arn,
                                                          row["visibility_timeout_s"]))

    def get(self, pool_id: str) -> dict[str, Any]:
        queues = self._queue_row(pool_id)
        with self.store.read() as db:
            info = aspect_store.get(db, E.pool_urn(pool_id), E.POOL_INFO)
        if queues is None or info is None:
            raise NotFound(f"pool {pool_id} not found")
        properties = (info.system_metadata or {}).get("properties", {})
        return {"id": pool_id, "urn": E.pool_urn(pool_id), "description": info.value.get("description") or "",
                "is_default": self.default_pool_id() == pool_id, "created_at_ms": info.value["createdAt"],
                "queue_url": queues["ingestion_queue_url"], "dlq_url": queues["ingestion_dlq_url"],
                "monitors_queue_url": queues["monitors_queue_url"], "monitors_dlq_url": queues["monitors_dlq_url"],
                "queue_arn": properties.get("queueArn"), "region": self.queues.region,
                "visibility_timeout_s": queues["visibility_timeout_s"], "max_receive_count": queues["max_receive_count"],
                "info": info.value}

    def ids(self) -> list[str]:
        return [row["pool_id"] for row in self.store.query("SELECT pool_id FROM pool_queues ORDER BY pool_id")]

    def list(self) -> list[dict[str, Any]]:
        return [self.get(pool_id) for pool_id in self.ids()]

    def update_description(self, pool_id: str, description: str | None) -> dict[str, Any]:
        self.get(pool_id)
        with self.store.transaction() as tx:
            current = aspect_store.get(tx, E.pool_urn(pool_id), E.POOL_INFO)
            info = {k: v for k, v in current.value.items() if k != "description"}
            if description:
                info["description"] = description
            aspect_store.put(tx, urn=E.pool_urn(pool_id), entity_type=E.POOL, aspect=E.POOL_INFO, value=info,
                             system_metadata=current.system_metadata)
        return self.get(pool_id)

    def set_queue_settings(self, pool_id: str, *, visibility_timeout_s: int | None = None,
                           max_receive_count: int | None = None) -> dict[str, Any]:
        """The pool's queue settings (DataHub has no operation for them: its queues are managed)."""
        with self._changing:
            return self._set_queue_settings(pool_id, visibility_timeout_s, max_receive_count)

    def _set_queue_settings(self, pool_id: str, visibility_timeout_s: int | None,
                            max_receive_count: int | None) -> dict[str, Any]:
        pool = self.get(pool_id)
        visibility = pool["visibility_timeout_s"] if visibility_timeout_s is None else visibility_timeout_s
        receives = pool["max_receive_count"] if max_receive_count is None else max_receive_count
        if not 1 <= visibility <= MAX_VISIBILITY_S:
            raise Invalid(f"visibility_timeout_s must be between 1 and {MAX_VISIBILITY_S} (SQS's 12-hour ceiling)")
        if not 1 <= receives <= 1000:
            raise Invalid("max_receive_count must be between 1 and 1000")
        for queue, dlq in ((pool["queue_url"], pool["dlq_url"]), (pool["monitors_queue_url"], pool["monitors_dlq_url"])):
            self.queues.set_queue_settings(queue, dlq, visibility, receives)
        with self.store.transaction() as tx:
            tx.execute("UPDATE pool_queues SET visibility_timeout_s=?, max_receive_count=? WHERE pool_id=?",
                       (visibility, receives, pool_id))
            current = aspect_store.get(tx, E.pool_urn(pool_id), E.POOL_INFO)
            extras = dict(current.system_metadata or {})
            extras["properties"] = {**extras.get("properties", {}), "visibilityTimeoutSeconds": str(visibility)}
            aspect_store.put(tx, urn=E.pool_urn(pool_id), entity_type=E.POOL, aspect=E.POOL_INFO, value=current.value,
                             system_metadata=extras)
        return self.get(pool_id)

    def set_default(self, pool_id: str) -> dict[str, Any]:
        """POOL_ID made the default, checked to exist in the transaction that writes it: a pool
        deleted in between would leave a default naming no pool, and every run routed to
        `default` refused."""
        self.get(pool_id)
        with self.store.transaction() as tx:
            if tx.execute("SELECT 1 FROM pool_queues WHERE pool_id=?", (pool_id,)).fetchone() is None:
                raise NotFound(f"pool {pool_id} not found")
            self._write_default(tx, pool_id)
        return self.get(pool_id)

    @staticmethod
    def _write_default(tx, pool_id: str) -> None:
        aspect_store.put(tx, urn=E.GLOBAL_CONFIG_URN, entity_type=E.GLOBAL_CONFIG, aspect=E.GLOBAL_CONFIG_ASPECT,
                         value={"defaultExecutorPoolId": pool_id})

    def default_pool_id(self) -> str | None:
        with self.store.read() as db:
            return self._default_pool_id(db)

    @staticmethod
    def _default_pool_id(db) -> str | None:
        config = aspect_store.get(db, E.GLOBAL_CONFIG_URN, E.GLOBAL_CONFIG_ASPECT)
        return config.value["defaultExecutorPoolId"] if config else None

    def resolve(self, executor_id: str | None) -> str:
        """The pool an `executorId` routes to: `default` (or none) means the default pool; any
        other id is taken as it is, as DataHub takes it. An id that names no pool here is an
        executor elsewhere's (an upstream-mode control plane's pool, docs/datahub-oss.md; or
        DataHub's CLI, DATAHUB_CLI_EXECUTOR_ID, which makes its runs itself): its runs wait
        PENDING, are never sent to a queue of ours, and take their results from that executor
        (is_local). Any other id no pool could have is refused (decision 26)."""
        if not executor_id or executor_id == E.DEFAULT_EXECUTOR_ID:
            default = self.default_pool_id()
            if default is None or self._queue_row(default) is None:
                raise Invalid("executorId is 'default' but no default pool is set: create a pool with isDefault "
                              "or name a pool")
            return default
        if executor_id == DATAHUB_CLI_EXECUTOR_ID:
            return executor_id
        pool_id = E.key_of(executor_id, E.POOL)
        try:
            ids.pool_id(pool_id)
        except ids.InvalidId as exc:
            raise Invalid(f"executorId: {exc}") from None
        return pool_id

    def is_local(self, pool_id: str) -> bool:
        """Whether POOL_ID is one of this control plane's pools (with queues of ours)."""
        return self._queue_row(pool_id) is not None

    def queue_for(self, pool_id: str, task: str) -> str:
        """The queue a run of TASK goes to. A task we do not know goes to the ingestion queue
        (DataHub's one queue for a pool), where the executor that claims it fails it
        UNKNOWN_TASK: such a run was stored for an executor elsewhere, unchecked, before a pool
        of ours took its id, and refusing to send it kept it PENDING, retried for good."""
        row = self._queue_row(pool_id)
        if row is None:
            raise NotFound(f"pool {pool_id} not found")
        try:
            monitors = task_class(task) == MONITORS
        except UnknownTask:
            monitors = False
        return row["monitors_queue_url"] if monitors else row["ingestion_queue_url"]

    def delete(self, pool_id: str) -> aspect_store.Deleted:
        with self._changing:
            return self._delete(pool_id)

    def _delete(self, pool_id: str) -> aspect_store.Deleted:
        pool = self.get(pool_id)
        with self.store.transaction() as tx:
            self._require_unused(tx, pool_id)
            tx.execute("DELETE FROM pool_queues WHERE pool_id=?", (pool_id,))
            deleted = aspect_store.delete_entity(tx, E.pool_urn(pool_id))
            narrowed, revoked = Tokens.forget_pool(tx, pool_id)
        if narrowed or revoked:
            logger.info("pool {} deleted: executor tokens {} no longer name it; {} revoked (it named no other pool)",
                        pool_id, ", ".join(narrowed) or "none", ", ".join(revoked) or "none")
        self.queues.delete_pool_queues([pool["queue_url"], pool["dlq_url"], pool["monitors_queue_url"],
                                        pool["monitors_dlq_url"]])
        return deleted

    def _require_unused(self, tx, pool_id: str) -> None:
        """Conflict unless nothing routes to POOL_ID: no source, no PENDING or RUNNING run, not
        the default. Judged inside the transaction that deletes it: a run created, or the pool
        made the default, between a look and the delete was left PENDING for good (its queues
        gone, its pool no longer ours, so neither sent, nor cancellable, nor deletable) or left
        a default naming no pool."""
        sources = aspect_store.latest_of_type(tx, E.SOURCE, E.SOURCE_INFO)
        default = self._default_pool_id(tx)
        is_default = default == pool_id
        users = [s for s in sources if routes_to(s.value.get("config", {}).get("executorId"), pool_id, default)]
        if users:
            names = ", ".join(s.value.get("name", s.urn) for s in users)
            raise Conflict(f"pool {pool_id} is used by sources: {names}; move them first")
        busy = tx.execute("SELECT COUNT(*) FROM executions WHERE pool_id=? AND status IN ('PENDING', 'RUNNING')",
                          (pool_id,)).fetchone()[0]
        if busy:
            raise Conflict(f"pool {pool_id} has {busy} pending or running execution(s); wait or cancel them first")
        if is_default:
            raise Conflict(f"pool {pool_id} is the default pool; make another pool the default first")

    def _queue_row(self, pool_id: str) -> dict[str, Any] | None:
        return self.store.one("SELECT * FROM pool_queues WHERE pool_id=?", (pool_id,))


def routes_to(executor_id: Any, pool_id: str, default_pool_id: str | None) -> bool:
    """Whether a source whose executorId is EXECUTOR_ID has its runs routed to POOL_ID, as
    Pools.resolve routes them: `default` (or none) is the default pool, even when another pool
    is named default (the quickstart's, after an admin made another pool the default); any
    other id, or a pool's urn, is that pool. Deletion and the pool's source listing judge by
    this, so they agree with where the runs go."""
    if not executor_id or executor_id == E.DEFAULT_EXECUTOR_ID:
        return pool_id == default_pool_id
    return isinstance(executor_id, str) and E.key_of(executor_id, E.POOL) == pool_id
