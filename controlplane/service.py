"""The control plane, assembled: storage, DataHub's model, pools, sources, executions,
executors, secrets and tokens, and the rules by which DataHub's ingest endpoint writes our entities.

Transport-free: gms_api.py (DataHub's Rest.li endpoints), graphql_api.py (DataHub's GraphQL)
and executor_api.py (the operations DataHub has none for) map it onto HTTP.
"""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import entities as E
from . import lifecycle
from .errors import Conflict, Forbidden, Invalid, NotFound
from .executions import Executions
from .executors import Executors
from vocabulary import statuses as S
from vocabulary.results import LEASE_HEADER

from .ingest import Ingest, Proposal
from .lost_messages import LostMessages
from .metadata import aspect_store
from .metadata.registry import Registry
from .pools import DATAHUB_CLI_EXECUTOR_ID, Pools
from .queues import Queues
from .secret_cipher import KEY_FILE, SecretCipher
from .secret_store import Secrets, check_name, name_of
from .sources import Sources
from .store import Store
from .tokens import Identity, Tokens


def aspect_proposal(urn: str, aspect: str, value: dict[str, Any], change_type: str = "UPSERT") -> dict[str, Any]:
    """The MetadataChangeProposal (as JSON) that writes VALUE as URN's ASPECT through our ingest path."""
    return {"entityType": urn.split(":", 3)[2], "entityUrn": urn, "changeType": change_type, "aspectName": aspect,
            "aspect": {"value": json.dumps(value), "contentType": "application/json"}}


class ControlPlane:
    def __init__(self, store: Store, queues: Queues, registry: Registry | None = None) -> None:
        self.store = store
        self.queues = queues
        self.registry = registry or Registry.load()
        # Heartbeats cannot arrive while the control plane is down: after a restart an executor is
        # judged only from the restart on (from serving(), once the server calls it), so an outage
        # of ours never makes executors "lost".
        self.started_at = time.time()
        self.tokens = Tokens(store)
        self.pools = Pools(store, queues)
        self.sources = Sources(store, self.pools)
        self.executions = Executions(store, self.pools, queues, lifecycle.Context(self.tokens, self.started_at))
        self.executors = Executors(store, self.executions, self.started_at)
        self.lost_messages = LostMessages(store, self.pools, queues, self.executions)
        # The secrets' key lives beside the database (the state directory), never in it.
        self.secrets = Secrets(store, SecretCipher(Path(store.path).parent / KEY_FILE if store.path else None))
        self.ingest = Ingest(self.registry, {
            E.EXECUTION_INPUT: self._write_execution_input,
            E.EXECUTION_RESULT: self._write_execution_result,
            E.EXECUTION_SIGNAL: self._write_execution_signal,
            E.SOURCE_INFO: self._write_source_info,
            E.POOL_INFO: self._write_pool_info,
            E.GLOBAL_CONFIG_ASPECT: self._write_default_pool,
            E.EXECUTOR_STATUS: self._write_executor_status,
            E.SECRET_VALUE: self._write_secret_value,
            # A key aspect's DELETE deletes its whole entity, as GMS does: judged by the rules of
            # POST /entities?action=delete, not stored as it comes.
            **{self.registry.entity(entity).key_aspect: self._write_entity_key
               for entity in (E.POOL, E.GLOBAL_CONFIG, E.EXECUTION, E.EXECUTOR)},
        }, store, after_commit=self.executions.request_send)

    # writing our entities through DataHub's ingest endpoint -----------------------------------
    def _write_execution_input(self, tx: sqlite3.Connection, proposal: Proposal, identity: Identity) -> None:
        execution_id = E.key_of(proposal.urn, E.EXECUTION)
        if proposal.change_type == "DELETE":
            self._delete_execution(tx, execution_id)
            return
        assert proposal.value is not None
        routed = self.executions.on_input(tx, execution_id, proposal.value)
        if routed is not None:
            self.ingest.write(tx, dataclasses.replace(proposal, value=routed), identity)

    def _write_execution_result(self, tx: sqlite3.Connection, proposal: Proposal, identity: Identity) -> None:
        if proposal.change_type == "DELETE" or proposal.value is None:
            raise Forbidden("an execution's result is written by its executor and cannot be deleted")
        self.executions.on_result(tx, E.key_of(proposal.urn, E.EXECUTION), proposal.value,
                                  proposal.headers.get(LEASE_HEADER), identity)

    def _write_execution_signal(self, tx: sqlite3.Connection, proposal: Proposal, identity: Identity) -> None:
        execution_id = E.key_of(proposal.urn, E.EXECUTION)
        if tx.execute("SELECT 1 FROM executions WHERE id=?", (execution_id,)).fetchone() is None:
            raise NotFound(f"execution {execution_id} not found")
        self.ingest.write(tx, proposal, identity)
        if proposal.value is not None:
            self.executions.on_signal(tx, execution_id, proposal.value)

    def _write_source_info(self, tx: sqlite3.Connection, proposal: Proposal, identity: Identity) -> None:
        if proposal.change_type != "DELETE":
            Sources.check_id(E.key_of(proposal.urn, E.SOURCE))
            assert proposal.value is not None
            self.sources.check_info(proposal.value)
        self.ingest.write(tx, proposal, identity)

    def _write_pool_info(self, tx: sqlite3.Connection, proposal: Proposal, identity: Identity) -> None:
        pool_id = E.key_of(proposal.urn, E.POOL)
        current = aspect_store.get(tx, proposal.urn, E.POOL_INFO)
        if proposal.change_type == "DELETE" or current is None:
            raise Invalid("pools are created with the createRemoteExecutorPool mutation (which makes their queues) "
                          "and deleted with POST /entities?action=delete")
        assert proposal.value is not None
        managed = {k: v for k, v in current.value.items() if k != "description"}
        if {k: v for k, v in proposal.value.items() if k != "description"} != managed:
            raise Invalid(f"pool {pool_id}: only the description may change; queueUrl, queueRegion, state and "
                          "createdAt belong to the control plane")
        aspect_store.put(tx, urn=proposal.urn, entity_type=E.POOL, aspect=E.POOL_INFO, value=proposal.value,
                         system_metadata=current.system_metadata, actor=identity.actor)

    def _write_default_pool(self, tx: sqlite3.Connection, proposal: Proposal, identity: Identity) -> None:
        if proposal.change_type == "DELETE":
            raise Invalid("the default pool can be changed, not removed")
        assert proposal.value is not None
        pool_id = proposal.value["defaultExecutorPoolId"]
        if tx.execute("SELECT 1 FROM pool_queues WHERE pool_id=?", (pool_id,)).fetchone() is None:
            raise Invalid(f"defaultExecutorPoolId {pool_id!r} names no pool")
        self.ingest.write(tx, proposal, identity)

    def _write_executor_status(self, tx: sqlite3.Connection, proposal: Proposal, identity: Identity) -> None:
        if proposal.change_type == "DELETE":
            identity.require_admin("deleting an executor")
            self.ingest.write(tx, proposal, identity)
            return
        assert proposal.value is not None
        outcome = self.executors.on_status(tx, E.key_of(proposal.urn, E.EXECUTOR), proposal.value,
                                           proposal.system_metadata, identity)
        if outcome["status"] is None:
            return  # older than what is stored: the stored status stands
        aspect_store.put(tx, urn=proposal.urn, entity_type=E.EXECUTOR, aspect=E.EXECUTOR_STATUS, value=outcome["status"],
                         system_metadata=proposal.system_metadata, actor=identity.actor)

    def _write_secret_value(self, tx: sqlite3.Connection, proposal: Proposal, identity: Identity) -> None:
        self.secrets.check_write(tx, proposal.change_type, proposal.urn, proposal.value)
        self.ingest.write(tx, proposal, identity)

    def _write_entity_key(self, tx: sqlite3.Connection, proposal: Proposal, identity: Identity) -> None:
        if proposal.change_type != "DELETE":
            self.ingest.write(tx, proposal, identity)
        elif proposal.entity_type == E.POOL:
            raise Invalid("a pool is deleted with POST /entities?action=delete, which deletes its queues too")
        else:
            self._delete_entity(tx, proposal.urn, proposal.entity_type)

    # operations that are not aspect writes ------------------------------------------------------
    def delete_entity(self, urn_text: str, identity: Identity) -> aspect_store.Deleted:
        """POST /entities?action=delete: a hard delete, with our entities' own rules; what it
        removed (nothing, for an entity that never was)."""
        identity.require_admin("deleting entities")
        urn = self.registry.parse_urn(urn_text)
        if urn.entity_type == E.POOL:
            return self.pools.delete(E.key_of(str(urn), E.POOL))
        with self.store.transaction() as tx:
            return self._delete_entity(tx, str(urn), urn.entity_type)

    def _delete_entity(self, tx: sqlite3.Connection, urn: str, entity_type: str) -> aspect_store.Deleted:
        """A hard delete of any entity but a pool (Pools.delete, which deletes its queues too),
        inside TX: however a delete comes, it meets the same rules."""
        if entity_type == E.GLOBAL_CONFIG:
            raise Invalid("the default pool can be changed, not removed")
        if entity_type == E.EXECUTION:
            return self._delete_execution(tx, E.key_of(urn, E.EXECUTION))
        if entity_type == E.EXECUTOR:
            self.executors.forget(tx, E.key_of(urn, E.EXECUTOR))
        return aspect_store.delete_entity(tx, urn, self.registry.entity(entity_type).key_aspect)

    def delete_timeseries(self, urn_text: str, aspect: str, start_ms: int | None, end_ms: int | None,
                          identity: Identity) -> int:
        """POST /entities?action=delete with an aspectName: the points of that timeseries aspect
        from START_MS to END_MS (both included, either open), nothing else of the entity; how
        many. GMS deletes no versioned aspect this way ("Not supported for non-timeseries
        aspect"), nor does DataHub's CLI ask it to: a versioned aspect is refused."""
        identity.require_admin("deleting timeseries points")
        urn = self.registry.parse_urn(urn_text)
        if not self.registry.aspect(urn.entity_type, aspect).timeseries:
            raise Invalid(f"Not supported for non-timeseries aspect {aspect}: only a timeseries aspect's points are "
                          "deleted by aspectName; delete the whole entity, or write the aspect with change type DELETE")
        with self.store.transaction() as tx:
            return aspect_store.delete_timeseries(tx, str(urn), aspect, start_ms=start_ms, end_ms=end_ms)

    @staticmethod
    def _delete_execution(tx: sqlite3.Connection, execution_id: str) -> aspect_store.Deleted:
        row = tx.execute("SELECT status FROM executions WHERE id=?", (execution_id,)).fetchone()
        if row is not None and row[0] not in S.ENDED:
            raise Conflict(f"execution {execution_id} is {row[0]}; cancel it before deleting it")
        mirrored = tx.execute("SELECT state FROM upstream_requests WHERE execution_id=? AND state <> 'DONE'",
                              (execution_id,)).fetchone()
        if row is not None and mirrored is not None:
            # Upstream mode has not yet written its end to the DataHub it came from: deleted
            # now, the request would stay open there for good.
            raise Conflict(f"execution {execution_id} came from the upstream DataHub, which has not yet been told how "
                           "it ended; delete it once its result is written back (a few seconds, while DataHub answers)")
        tx.execute("DELETE FROM executions WHERE id=?", (execution_id,))
        tx.execute("DELETE FROM execution_logs WHERE execution_id=?", (execution_id,))
        return aspect_store.delete_entity(tx, E.execution_urn(execution_id))

    def run_source(self, source_ref: str, task: str, identity: Identity) -> str:
        """Create an execution request for a source (createIngestionExecutionRequest)."""
        identity.require_admin("running a source")
        source = self.sources.get(source_ref)
        if source["info"].get("config", {}).get("executorId") == DATAHUB_CLI_EXECUTOR_ID:
            # DataHub would store the request and nothing would ever run it (its UI offers no run
            # of such a source). Here it would stay PENDING for good: a cancel only asks the
            # executor it names, and a PENDING run cannot be deleted.
            raise Invalid(f"source {source['name']} ({source['urn']}) records runs of `datahub ingest` (executorId "
                          f"{DATAHUB_CLI_EXECUTOR_ID}), which the CLI makes and reports itself; no executor runs it. "
                          "Run its recipe with `datahub ingest`, or create a source that names a pool")
        value = self.executions.input_for_source(source, task, identity.actor)
        return self.write_aspect(E.execution_urn(self.executions.new_id()), E.EXECUTION_INPUT, value, identity)

    def test_connection(self, recipe: str, version: str | None, pool: str | None, identity: Identity) -> str:
        identity.require_admin("testing a connection")
        value = self.executions.input_for_recipe(recipe, version, pool, identity.actor)
        return self.write_aspect(E.execution_urn(self.executions.new_id()), E.EXECUTION_INPUT, value, identity)

    def cancel(self, execution_ref: str, identity: Identity) -> str:
        """DataHub's cancel: a KILL signal aspect on the execution request, naming the executor
        it is for as DataHub's CancelIngestionExecutionRequestResolver names it: the run's
        source's config.executorId (absent when the source has none). A run of no source (a
        connection test; DataHub's resolver cancels none) names the executor it was routed to."""
        identity.require_admin("cancelling an execution")
        execution_id = E.key_of(execution_ref, E.EXECUTION)
        value: dict[str, Any] = {"signal": "KILL", "createdAt": {"time": aspect_store.now_ms(), "actor": identity.actor}}
        executor_id = self._executor_to_signal(execution_id)
        if executor_id:
            value["executorId"] = executor_id
        return self.write_aspect(E.execution_urn(execution_id), E.EXECUTION_SIGNAL, value, identity)

    def _executor_to_signal(self, execution_id: str) -> str | None:
        """The executor a KILL of EXECUTION_ID names. A run adopted from an upstream DataHub is a
        run of that DataHub's source, which routed it to the executor its input names; a source
        of ours with the same urn is another source (decision 86), whose executor it is not."""
        with self.store.read() as db:
            inputs = aspect_store.get(db, E.execution_urn(execution_id), E.EXECUTION_INPUT)
            if lifecycle.is_mirrored(db, execution_id):
                return inputs.value.get("executorId") if inputs else None
            source_urn = ((inputs.value if inputs else {}).get("source") or {}).get("ingestionSource")
            source = aspect_store.get(db, source_urn, E.SOURCE_INFO) if source_urn else None
        if source is not None:
            return source.value.get("config", {}).get("executorId")
        return inputs.value.get("executorId") if inputs else None

    def create_secret(self, name: str, plaintext: str, description: str | None, identity: Identity) -> str:
        """DataHub's createSecret: a new secret, keyed by its name; a name that exists is refused."""
        identity.require_admin("managing secrets")
        check_name(name)
        value = self.secrets.value_aspect(name, plaintext, description,
                                          {"time": aspect_store.now_ms(), "actor": identity.actor})
        return self.write_aspect(E.secret_urn(name), E.SECRET_VALUE, value, identity, change_type="CREATE_ENTITY")

    def update_secret(self, urn: str, name: str, plaintext: str, description: str | None, identity: Identity) -> str:
        """DataHub's updateSecret: a new value and description; the name stays the urn's."""
        identity.require_admin("managing secrets")
        current = self.secrets.get(urn)
        if name != current.value["name"]:
            raise Invalid(f"secret {current.value['name']} keeps its name (recipes reference it by name): updateSecret's "
                          f"name must be {current.value['name']!r}; to rename, create the new name and delete this one")
        value = self.secrets.value_aspect(name, plaintext, description, current.value.get("created"))
        return self.write_aspect(current.urn, E.SECRET_VALUE, value, identity)

    def delete_secret(self, urn: str, identity: Identity) -> str:
        """DataHub's deleteSecret: a hard delete; deleting one that is not there is not an error."""
        identity.require_admin("managing secrets")
        self.delete_entity(E.secret_urn(name_of(urn)), identity)
        return urn

    def write_aspect(self, urn: str, aspect: str, value: dict[str, Any], identity: Identity,
                     change_type: str = "UPSERT", also: Callable[[sqlite3.Connection], None] | None = None) -> str:
        """Write one aspect through the ingest endpoint's path, as an MCP would (ALSO: a record
        committed with it, see Ingest.ingest)."""
        self.ingest.ingest([aspect_proposal(urn, aspect, value, change_type)], identity, also=also)
        return urn

    def serving(self, now: float | None = None) -> None:
        """The API is about to take requests: executors are judged from NOW at the earliest.
        Judged from this object's creation instead, a start slowed by the queue service (each
        pool's queues are made again, each PENDING run sent: botocore's retries against an SQS
        outage take minutes) counted against executors that could not heartbeat meanwhile, and
        the first sweep ended their runs ABORTED (EXECUTOR_LOST)."""
        self.started_at = now or time.time()
        self.executions.ctx = dataclasses.replace(self.executions.ctx, started_at=self.started_at)
        self.executors.started_at = self.started_at

    def sweep(self) -> None:
        """What the control plane does on its own, every few seconds: end executions whose
        executor is gone, mark gone executors expired. Sending to the queues is the outbox
        thread's, and looking at them for messages that leave unclaimed the queue look's
        (lost_messages.py; both server.py): a queue service that hangs must not delay these judgements."""
        self.executions.abort_lost()
        self.executors.expire_offline()
