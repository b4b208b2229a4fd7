"""DataHub's ingest endpoint: MetadataChangeProposals in, validated, authorized, stored.

Everything that writes an aspect comes through here: `datahub ingest`'s default sink, DataHub's
Python emitter, the GraphQL mutations (which build their aspects and hand them over), and our
executors (heartbeats, progress, results). A batch is all-or-nothing: every proposal is parsed,
validated against the registry and authorized before the one transaction that writes them.

The control plane's own entities are written through rules of their own (RULES), which check
what a plain aspect store would not (a source's recipe and pool, an execution's lease, an
executor's identity) and drive the execution life cycle. Other metadata is stored as it comes.

Conditional writes are GMS's (its ConditionalWriteValidator): an MCP whose headers carry
`If-Version-Match: N` is refused unless N is the aspect's version now, its systemMetadata.version
(-1: not stored, or a CREATE; 1: stored without a version), and an aspect stored as it comes gets
its version in its systemMetadata, as GMS gives each aspect it writes. A refusal is a 422, as GMS's Rest.li
answers it, with GMS's words, "Expected version N, actual version M" (decision 79).
"""
from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import datahub.metadata.schema_classes as model

from vocabulary.results import LEASE_HEADER

from . import entities as E
from .errors import Conflict, Forbidden, Invalid, NotFound, PreconditionFailed
from .json_input import check_storable, loads
from .metadata import aspect_store
from .metadata.avro_check import problems
from .metadata.registry import AspectSpec, MetadataInvalid, Registry
from .tokens import ADMIN, EXECUTOR, INGEST, Identity

VERSION_HEADER = "If-Version-Match"  # GMS's ConditionalWriteValidator.HTTP_HEADER_IF_VERSION_MATCH
UNVERSIONED = "-1"  # ConditionalWriteValidator.UNVERSIONED_ASPECT_VERSION
UNVERSIONED_STORED = "1"  # the version GMS counts an aspect stored without one in its systemMetadata as
VERSION_REFUSED = "Expected version"  # GMS's words that begin a refused conditional write's reason
SUPPORTED_HEADERS = {LEASE_HEADER, VERSION_HEADER}
CHANGE_TYPES = {"UPSERT", "CREATE", "CREATE_ENTITY", "RESTATE", "DELETE", "PATCH"}
NO_RUN_ID = aspect_store.NO_RUN_ID
MAX_BATCH = 10_000
# Aspect texts remembered as valid (ValidTexts): how many, and the longest remembered.
VALID_TEXTS = 4096
VALID_TEXT_MAX_CHARS = 2048


@dataclass(frozen=True)
class Proposal:
    urn: str
    entity_type: str
    aspect: str
    change_type: str
    value: dict[str, Any] | None
    spec: AspectSpec
    system_metadata: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str | None:
        run = (self.system_metadata or {}).get("runId")
        return run if run and run != NO_RUN_ID else None


class ValidTexts:
    """The (aspect, JSON text) pairs that passed validation lately. Validation is a function of
    those two alone, and the costliest step of ingest (DataHub's class check runs after ours);
    ingestion sends the same small aspects for many entities (status, subTypes, a container, a
    platform instance), so each is validated once. Only short texts are kept, and only valid
    ones: what fails is checked, and refused with its message, every time. Oldest out first."""

    def __init__(self, size: int = VALID_TEXTS, max_chars: int = VALID_TEXT_MAX_CHARS) -> None:
        self.size, self.max_chars = size, max_chars
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()  # GraphQL's mutations ingest from FastAPI's worker threads

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._seen

    def add(self, key: tuple[str, str]) -> None:
        if len(key[1]) > self.max_chars:
            return
        with self._lock:
            self._seen[key] = None
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)


class Ingest:
    def __init__(self, registry: Registry, rules: dict[str, Callable[[sqlite3.Connection, Proposal, Identity], None]],
                 store, after_commit: Callable[[], None]) -> None:
        self.registry = registry
        self.rules = rules
        self.store = store
        self.after_commit = after_commit
        self._system_metadata_schema = model.SystemMetadataClass.RECORD_SCHEMA
        self._valid = ValidTexts()

    def parse(self, raw: Any) -> Proposal:
        """One proposal in Rest.li JSON, or MetadataInvalid / Invalid (400) saying what is wrong."""
        if not isinstance(raw, dict):
            raise Invalid("a proposal is a JSON object")
        entity_type = raw.get("entityType")
        if not isinstance(entity_type, str):
            raise Invalid("proposal.entityType is required")
        self.registry.entity(entity_type)
        change_type = raw.get("changeType")
        if not isinstance(change_type, str) or change_type not in CHANGE_TYPES:
            raise Invalid(f"proposal.changeType {str(change_type)[:40]!r} is not one of {', '.join(sorted(CHANGE_TYPES))}")
        if change_type == "PATCH":
            raise Invalid("changeType PATCH is not supported by this server (its /config says patchCapable: false); "
                          "send the whole aspect with UPSERT")
        aspect_name = raw.get("aspectName")
        if not isinstance(aspect_name, str):
            raise Invalid("proposal.aspectName is required")
        spec = self.registry.aspect(entity_type, aspect_name)
        urn = self._urn(raw, entity_type)
        value = None
        if change_type != "DELETE":
            aspect = raw.get("aspect")
            if not isinstance(aspect, dict) or not isinstance(aspect.get("value"), str):
                raise Invalid("proposal.aspect must be {\"value\": \"<aspect as a JSON string>\", \"contentType\": "
                              "\"application/json\"}")
            if aspect.get("contentType", "application/json") != "application/json":
                raise Invalid(f"aspect contentType {str(aspect.get('contentType'))[:60]!r} is not supported; "
                              "use application/json")
            value = loads(aspect["value"])
            if (aspect_name, aspect["value"]) not in self._valid:
                self.registry.validate(spec, value)
                self._valid.add((aspect_name, aspect["value"]))
        system_metadata = raw.get("systemMetadata")
        if system_metadata is not None:
            check_storable(system_metadata)
            found = problems(self._system_metadata_schema, system_metadata)
            if found:
                raise MetadataInvalid(f"Failed to validate record with class com.linkedin.mxe.SystemMetadata: {found}")
        headers = raw.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise Invalid("proposal.headers must be a map of strings")
        unsupported = set(headers) - SUPPORTED_HEADERS
        if unsupported:
            raise Invalid(f"proposal header(s) {', '.join(sorted(unsupported))} are not supported by this server")
        return Proposal(urn, entity_type, aspect_name, change_type, value, spec, system_metadata, dict(headers))

    def _urn(self, raw: dict[str, Any], entity_type: str) -> str:
        if raw.get("entityUrn") is not None:
            urn = self.registry.parse_urn(raw["entityUrn"])
            if urn.entity_type != entity_type:
                raise MetadataInvalid(f"entityUrn {raw['entityUrn']} is not of entityType {entity_type}")
            return str(urn)
        key = raw.get("entityKeyAspect")
        if not isinstance(key, dict) or not isinstance(key.get("value"), str):
            raise Invalid("a proposal needs entityUrn or entityKeyAspect")
        return self.registry.urn_from_key(entity_type, loads(key["value"]))

    def authorize(self, proposal: Proposal, identity: Identity) -> None:
        if identity.kind == ADMIN:
            return
        if identity.kind == INGEST:
            if proposal.entity_type in E.CONTROL_PLANE_ENTITIES:
                raise Forbidden(f"a run's ingest token may not write {proposal.entity_type} entities")
            if proposal.change_type == "DELETE":
                # A run writes metadata; erasing what others wrote (a DELETE of the key aspect
                # deletes the whole entity) needs an admin token, as POST /entities?action=delete
                # does. Ingestion's own removals are soft: a `status` aspect with removed=true.
                raise Forbidden("a run's ingest token may not delete metadata; deletes need an admin token")
            return
        if identity.kind == EXECUTOR and proposal.change_type in ("UPSERT", "RESTATE") and (
                (proposal.entity_type, proposal.aspect) in ((E.EXECUTOR, E.EXECUTOR_STATUS),
                                                           (E.EXECUTION, E.EXECUTION_RESULT))):
            return
        raise Forbidden(f"a{'n' if identity.kind[0] in 'aeiou' else ''} {identity.kind} token may not write "
                        f"{proposal.aspect} of {proposal.entity_type}")

    def ingest(self, raws: list[Any], identity: Identity,
               also: Callable[[sqlite3.Connection], None] | None = None) -> list[str]:
        """Parse, authorize and write RAWS in one transaction; the urns written, in order. ALSO
        runs in that transaction after the writes (a record that must commit with them)."""
        if len(raws) > MAX_BATCH:
            raise Invalid(f"a batch holds at most {MAX_BATCH} proposals")
        proposals = [self.parse(raw) for raw in raws]
        for proposal in proposals:
            self.authorize(proposal, identity)
        with self.store.transaction() as tx:
            for proposal in proposals:
                check_version(tx, proposal)
                rule = self.rules.get(proposal.aspect)
                if rule is not None:
                    rule(tx, proposal, identity)
                else:
                    self.write(tx, proposal, identity)
            if also is not None:
                also(tx)
        self.after_commit()
        return [p.urn for p in proposals]

    def write(self, tx: sqlite3.Connection, proposal: Proposal, identity: Identity) -> None:
        """Store a proposal as GMS would, with no rule of ours in between."""
        is_key = proposal.aspect == self.registry.entity(proposal.entity_type).key_aspect
        if proposal.change_type == "DELETE":
            if is_key:
                aspect_store.delete_entity(tx, proposal.urn, proposal.aspect)
            else:
                aspect_store.delete_aspect(tx, proposal.urn, proposal.aspect)
            return
        # An entity's key aspect is there as long as the entity is, stored or built from the urn
        # (metadata/entity_keys.py): a CREATE of it is one of an entity.
        if proposal.change_type == "CREATE_ENTITY" and aspect_store.exists(tx, proposal.urn):
            raise Conflict(f"CREATE_ENTITY: {proposal.urn} already exists")
        if proposal.change_type == "CREATE" and (aspect_store.exists(tx, proposal.urn) if is_key else
                                                 aspect_store.get(tx, proposal.urn, proposal.aspect) is not None):
            raise Conflict(f"CREATE: {proposal.aspect} of {proposal.urn} already exists")
        assert proposal.value is not None
        run_id = identity.execution_id or proposal.run_id
        if is_key and proposal.entity_type in E.CONTROL_PLANE_ENTITIES:
            self._check_own_key(tx, proposal)
        elif proposal.spec.timeseries:
            aspect_store.put_timeseries(tx, urn=proposal.urn, entity_type=proposal.entity_type, aspect=proposal.aspect,
                                        value=proposal.value, system_metadata=proposal.system_metadata)
        else:
            if proposal.entity_type not in E.CONTROL_PLANE_ENTITIES:
                self._book(tx, proposal, run_id or NO_RUN_ID, is_key)
            aspect_store.put(tx, urn=proposal.urn, entity_type=proposal.entity_type, aspect=proposal.aspect,
                             value=proposal.value, system_metadata=proposal.system_metadata, actor=identity.actor)
        if run_id:
            tx.execute("INSERT INTO run_writes VALUES (?,?,?,?,1,?) ON CONFLICT(run_id, urn, aspect) DO UPDATE SET "
                       "writes=writes+1, last_written=excluded.last_written",
                       (run_id, proposal.urn, proposal.aspect, proposal.entity_type, aspect_store.now_ms()))

    def _book(self, tx: sqlite3.Connection, proposal: Proposal, run_id: str, is_key: bool) -> None:
        """Book the versioned aspect PROPOSAL writes to RUN_ID in the run index, as GMS's index
        books every write, the same value again included (its runId follows the newest write).
        The write that makes an entity books its key aspect to that run too, as GMS writes the
        key row with an entity's first aspect: rolling the run back then removes the entity
        (gms_api.rollback_run). Called before the write: whether the entity exists is asked.
        The control plane's own entities are not booked: their life cycles are their rules', and
        no run's rollback may undo them (decision 101)."""
        observed = aspect_store.observed_ms(proposal.system_metadata)
        if not is_key and not aspect_store.exists(tx, proposal.urn):
            key = self.registry.entity(proposal.entity_type).key_aspect
            aspect_store.index_write(tx, proposal.urn, key, run_id, observed)
        aspect_store.index_write(tx, proposal.urn, proposal.aspect, run_id, observed, proposal.value)

    @staticmethod
    def _check_own_key(tx: sqlite3.Connection, proposal: Proposal) -> None:
        """A key aspect of one of the control plane's own entities is not stored: each exists by
        its rules (a pool with its queues, a run with its row and input, a secret with its
        value), and a key alone would make one that none of them knows and none could delete.
        Written for one that exists, it changes nothing, as the same key does in GMS."""
        if not aspect_store.exists(tx, proposal.urn):
            raise Invalid(f"{proposal.urn} does not exist, and a {proposal.entity_type} is not made by writing its key "
                          f"aspect {proposal.aspect}: the control plane makes its own entities (createRemoteExecutorPool, "
                          "createIngestionSource, createIngestionExecutionRequest, createSecret, an executor's "
                          "first heartbeat)")


def check_version(tx: sqlite3.Connection, proposal: Proposal) -> None:
    """PreconditionFailed (422, as GMS's Rest.li answers) when PROPOSAL's If-Version-Match is not
    the aspect's version now, found as GMS finds it; a RESTATE is not checked, as in GMS."""
    expected = proposal.headers.get(VERSION_HEADER)
    if expected is None or proposal.change_type == "RESTATE":
        return
    stored = aspect_store.get(tx, proposal.urn, proposal.aspect)
    if stored is None or proposal.change_type in ("CREATE", "CREATE_ENTITY"):
        actual = UNVERSIONED
    else:
        actual = str((stored.system_metadata or {}).get("version") or UNVERSIONED_STORED)
    if expected != actual:
        raise PreconditionFailed(f"{VERSION_HEADER}: {VERSION_REFUSED} {expected}, actual version {actual}: "
                                 f"{proposal.aspect} of {proposal.urn} changed since version {expected} was read; "
                                 "read it again, and write your change with the version read")


def require_exists(tx: sqlite3.Connection, urn: str, aspect: str, what: str) -> aspect_store.StoredAspect:
    stored = aspect_store.get(tx, urn, aspect)
    if stored is None:
        raise NotFound(f"{what} {urn} not found")
    return stored
