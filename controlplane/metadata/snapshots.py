"""Snapshot-style metadata (MetadataChangeEvents) as the proposals it stands for.

GMS's `POST /entities?action=ingest` takes an entity as a snapshot, an urn with a list of
aspects, in Rest.li JSON:

    {"entity": {"value": {"com.linkedin.metadata.snapshot.DatasetSnapshot": {
        "urn": "urn:li:dataset:(...)",
        "aspects": [{"com.linkedin.dataset.DatasetProperties": {...}}, ...]}}},
     "systemMetadata": {...}}

and writes each aspect as an UPSERT of it on the urn, with the snapshot's system metadata
(EntityServiceImpl.ingestEntity; DataHub's client splits one the same way, mcps_from_mce). This
module makes those UPSERTs, as ingestProposal's JSON, so that they meet the same validation,
authorisation and all-or-nothing write as any other proposal. It checks only the envelope;
what is inside each aspect is the ingest path's to judge.
"""
from __future__ import annotations

import json
from typing import Any

from .registry import MetadataInvalid, Registry


def proposals(registry: Registry, entity: Any, system_metadata: Any, where: str = "entity") -> list[dict[str, Any]]:
    """The UPSERT proposals (ingestProposal's JSON) that the snapshot ENTITY stands for, in the
    order of its aspects; MetadataInvalid (400) saying what in its envelope is wrong."""
    if not isinstance(entity, dict) or set(entity) != {"value"} or not isinstance(entity["value"], dict) \
            or len(entity["value"]) != 1:
        raise MetadataInvalid(f"{where} must be {{\"value\": {{\"com.linkedin.metadata.snapshot.<Entity>Snapshot\": "
                              "{\"urn\": ..., \"aspects\": [...]}}}}")
    (name, snapshot), = entity["value"].items()
    spec = registry.snapshot(name)
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("urn"), str) \
            or not isinstance(snapshot.get("aspects"), list):
        raise MetadataInvalid(f"{where}: a {name.rsplit('.', 1)[-1]} is {{\"urn\": \"<urn>\", \"aspects\": [...]}}")
    unknown = set(snapshot) - {"urn", "aspects"}
    if unknown:
        raise MetadataInvalid(f"{where}: {', '.join(sorted(unknown))}: unrecognized field found but not allowed")
    # Rest.li coerces the snapshot's typed urn (DatasetUrn, ...) before anything else: a malformed
    # one, or one of another entity, is refused even with no aspect to write.
    urn = registry.parse_urn(snapshot["urn"])
    if urn.entity_type != spec.entity:
        raise MetadataInvalid(f"{where}: urn {snapshot['urn'][:200]!r} is not of entityType {spec.entity}, which a "
                              f"{name.rsplit('.', 1)[-1]} needs")
    made = []
    for index, member in enumerate(snapshot["aspects"]):
        if not isinstance(member, dict) or len(member) != 1:
            raise MetadataInvalid(f"{where}.aspects[{index}] must be one aspect as {{\"<its Rest.li class>\": {{...}}}}")
        (class_name, value), = member.items()
        aspect = spec.aspects.get(class_name)
        if aspect is None:
            raise MetadataInvalid(f"{where}.aspects[{index}]: {class_name[:120]!r} is not a member type of the aspect "
                                  f"union of {name} (Rest.li names: com.linkedin..., not com.linkedin.pegasus2avro...)")
        proposal = {"entityType": spec.entity, "entityUrn": snapshot["urn"], "changeType": "UPSERT",
                    "aspectName": aspect, "aspect": {"value": json.dumps(value, separators=(",", ":"), ensure_ascii=False),
                                                     "contentType": "application/json"}}
        if system_metadata is not None:
            proposal["systemMetadata"] = system_metadata
        made.append(proposal)
    return made
