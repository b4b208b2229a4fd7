"""An entity's key aspect, as GMS serves it: the one place that decides what is answered for it.

GMS stores an entity's key aspect as a row with the entity's first write, and an entity exists
when that row does (DataHubGraph.exists reads the key aspect). We store it only when it is
written (an MCP of the key aspect, alone or not): every other write would pay for a row the urn
already says all of. So an entity exists when any of its aspects is stored, the key included,
and its key aspect is the stored row where there is one, else the one GMS builds from the urn
(EntityUtils.getKeyEnvelopedAspect), stamped by GMS's system actor.
"""
from __future__ import annotations

import sqlite3

from datahub.metadata.urns import Urn

from . import aspect_store
from .registry import Registry

SYSTEM_ACTOR = "urn:li:corpuser:__datahub_system"  # GMS's Constants.SYSTEM_ACTOR


def key_aspect(db: sqlite3.Connection, registry: Registry, urn: Urn, *,
               only_if_exists: bool = True) -> aspect_store.StoredAspect | None:
    """URN's key aspect: stored, else built from the urn; None for an entity that does not exist,
    unless ONLY_IF_EXISTS is false (GMS's EntityResponse carries a key for any urn asked about)."""
    name = registry.entity(urn.entity_type).key_aspect
    stored = aspect_store.get(db, str(urn), name)
    if stored is not None:
        return stored
    if only_if_exists and not aspect_store.exists(db, str(urn)):
        return None
    return aspect_store.StoredAspect(urn=str(urn), entity_type=urn.entity_type, aspect=name, version=0,
                                     value=registry.key_value(urn), system_metadata=None,
                                     created_on_ms=aspect_store.now_ms(), created_by=SYSTEM_ACTOR)
