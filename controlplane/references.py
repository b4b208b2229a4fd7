"""`POST /entities?action=deleteReferences`: the references other entities' aspects hold to one
urn, counted, and removed unless it is a dry run (GMS's DeleteEntityService.deleteReferencesTo).

DataHub's CLI asks it after a hard delete of a tag, user, group, domain, glossary term or node,
or form (`datahub delete --urn ... --hard`), and `datahub delete references --urn` asks it
alone: without it, those deletes failed after the entity was gone.

GMS finds the references in its graph index and answers `total`, the edges (a referring entity
and a relationship type) pointing to the urn, and up to ten `relatedAspects` ({relationship,
entity, aspect}). We keep no graph index: the aspects that may refer to the urn are found by its
text in the stored latest values, and each is read through its schema's relationships
(metadata/relationships.py). Key aspects are left out: they are an entity's identity (a data
job's flow), not a reference that can be removed, and rewriting one would delete the entity
(decision 94).

The rewrites go through ingest as the caller's proposals, with the rules our own entities keep,
in one transaction per batch, each conditional on the version read (If-Version-Match): an
aspect changed since it was read is read again, rather than overwritten with the old value.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import PreconditionFailed
from .ingest import MAX_BATCH, UNVERSIONED_STORED, VERSION_HEADER
from .metadata import aspect_store, relationships
from .metadata.registry import MetadataInvalid
from .service import ControlPlane
from .tokens import Identity

SAMPLE_SIZE = 10  # GMS's relatedAspects: the first ten
ATTEMPTS = 3  # of reading and rewriting, when aspects change under it


@dataclass(frozen=True)
class Reference:
    """An aspect of ENTITY that points to the urn by RELATIONSHIP."""
    relationship: str
    entity: str
    aspect: str


@dataclass(frozen=True)
class Rewrite:
    """What one referring aspect becomes: VALUE, or deleted when None."""
    stored: aspect_store.StoredAspect
    value: dict[str, Any] | None


def delete_references(cp: ControlPlane, urn_text: str, dry_run: bool, identity: Identity) -> dict[str, Any]:
    """GMS's DeleteReferencesResponse for URN_TEXT, after removing the references unless DRY_RUN."""
    identity.require_admin("deleting references")
    urn = str(cp.registry.parse_urn(urn_text))
    for attempt in range(ATTEMPTS):
        references, rewrites = _find(cp, urn)
        if dry_run or not rewrites:
            break
        try:
            _apply(cp, rewrites, identity)
            break
        except PreconditionFailed:
            if attempt == ATTEMPTS - 1:
                raise
    edges = {(reference.entity, reference.relationship) for reference in references}
    return {"total": len(edges),
            "relatedAspects": [{"relationship": r.relationship, "entity": r.entity, "aspect": r.aspect}
                               for r in references[:SAMPLE_SIZE]]}


def _find(cp: ControlPlane, urn: str) -> tuple[list[Reference], list[Rewrite]]:
    """Every reference to URN in the latest aspects, and what each referring aspect becomes."""
    references: list[Reference] = []
    rewrites: list[Rewrite] = []
    with cp.store.read() as db:
        candidates = aspect_store.latest_holding(db, urn)
    for stored in candidates:
        try:
            entity = cp.registry.entity(stored.entity_type)
            spec = cp.registry.aspect(stored.entity_type, stored.aspect)
        except MetadataInvalid:
            continue  # stored under a model this server no longer has: no relationship known
        if stored.aspect == entity.key_aspect:
            continue
        found = relationships.references_to(spec.schema, stored.value, urn)
        value: dict[str, Any] | None = stored.value
        for relationship in found:
            references.append(Reference(relationship.name, stored.urn, stored.aspect))
            if value is not None:
                value = relationships.without_reference(spec.schema, value, relationship.path, urn)
        if found:
            rewrites.append(Rewrite(stored, value))
    return _one_per_relationship(references), rewrites


def _one_per_relationship(references: list[Reference]) -> list[Reference]:
    """An aspect that refers to the urn by one relationship at several paths is one reference."""
    return list(dict.fromkeys(references))


def _apply(cp: ControlPlane, rewrites: list[Rewrite], identity: Identity) -> None:
    """The rewrites as UPSERTs (DELETEs for aspects left with nothing), each conditional on the
    version read, in batches ingest takes whole."""
    proposals = [_proposal(rewrite) for rewrite in rewrites]
    for start in range(0, len(proposals), MAX_BATCH):
        cp.ingest.ingest(proposals[start:start + MAX_BATCH], identity)


def _proposal(rewrite: Rewrite) -> dict[str, Any]:
    stored = rewrite.stored
    proposal: dict[str, Any] = {
        "entityType": stored.entity_type, "entityUrn": stored.urn, "aspectName": stored.aspect,
        "changeType": "DELETE" if rewrite.value is None else "UPSERT",
        "headers": {VERSION_HEADER: str((stored.system_metadata or {}).get("version") or UNVERSIONED_STORED)},
    }
    if rewrite.value is not None:
        proposal["aspect"] = {"value": json.dumps(rewrite.value, separators=(",", ":"), ensure_ascii=False),
                              "contentType": "application/json"}
    return proposal
