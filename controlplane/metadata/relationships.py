"""The urns an aspect points to, by relationship, and an aspect with one such reference removed.

GMS reads an aspect's relationships from its schema's @Relationship annotations (in DataHub's
generated Avro schemas, each field's "Relationship" property): on a urn field itself
(`{"name": "TaggedWith", "entityTypes": ["tag"]}`), on an array of urns for its items
(`{"/*": {...}}`), or on an outer field for a path below it (`{"/tags/*/tag": {...}}`, which
is how a schema field's tags become SchemaFieldTaggedWith rather than TaggedWith: an annotation
given by path replaces the one the field there carries, the outermost first). Every path is
made of record fields and array items ("*"): in DataHub's model no relationship lies below a map
or a union of several types, and none is looked for there.

Removal follows GMS's DeleteEntityUtils, the rules `POST /entities?action=deleteReferences`
applies: an optional field holding the urn is removed; an array item holding it goes, and
with it the array element it is in when that element is a record whose field holding the urn
is required (GMS's own rule 2, "go up to the nearest array and remove the element"); a record
left with nothing once a required field would go is removed in turn, up to the aspect itself,
which is then deleted (None). Where GMS's code keeps an array element whose required urn field
names the deleted entity because the element has other fields (an Upstream with its type), we
remove the element, as its documented rule says: a lineage edge to an entity that is gone is the
dangling pointer this call is for (decision 94).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from avro import schema as avro

ITEMS = "*"


@dataclass(frozen=True)
class RelationshipPath:
    """One relationship of an aspect: its NAME (TaggedWith), where in the aspect its urns lie
    (field names and ITEMS, from the aspect's root) and the entity types it may point to."""

    name: str
    path: tuple[str, ...]
    destinations: tuple[str, ...]
    by_path: bool = False  # declared by an enclosing field for a path below it


_PATHS: dict[str, tuple[RelationshipPath, ...]] = {}


def paths_of(schema: avro.RecordSchema) -> tuple[RelationshipPath, ...]:
    """Every relationship ASPECT's schema declares, each path once (remembered by the schema's
    name: an aspect's schema never changes while the process runs)."""
    found = _PATHS.get(schema.fullname)
    if found is None:
        collected: dict[tuple[str, ...], RelationshipPath] = {}
        _collect(schema, (), {}, None, frozenset(), collected)
        found = _PATHS[schema.fullname] = tuple(collected.values())
    return found


def _relationship(annotation: Any, path: tuple[str, ...], by_path: bool) -> RelationshipPath | None:
    if not isinstance(annotation, dict) or not isinstance(annotation.get("name"), str):
        return None
    return RelationshipPath(annotation["name"], path, tuple(annotation.get("entityTypes") or ()), by_path)


def _collect(schema: avro.Schema, path: tuple[str, ...], by_path: dict[tuple[str, ...], Any], own: Any,
             records_above: frozenset[str], collected: dict[tuple[str, ...], RelationshipPath]) -> None:
    """BY_PATH: the annotations outer fields gave by path, which win over OWN (the annotation of
    the field whose value SCHEMA is). RECORDS_ABOVE stops a record that contains itself."""
    kind = schema.type
    if kind == "union":
        branches = [branch for branch in schema.schemas if branch.type != "null"]
        if len(branches) == 1:  # an optional value: the same path
            _collect(branches[0], path, by_path, own, records_above, collected)
    elif kind == "array":
        _collect(schema.items, path + (ITEMS,), by_path, None, records_above, collected)
    elif kind == "record" and schema.fullname not in records_above:
        inside = records_above | {schema.fullname}
        for field in schema.fields:
            field_path = path + (field.name,)
            annotation = field.other_props.get("Relationship")
            given = dict(by_path)
            if isinstance(annotation, dict) and "name" not in annotation:
                for relative, inner in annotation.items():
                    parts = tuple(part for part in relative.split("/") if part)
                    given.setdefault(field_path + parts, inner)  # an outer field's says first
            _collect(field.type, field_path, given, annotation, inside, collected)
    elif kind == "string":
        relationship = _relationship(by_path.get(path, own), path, path in by_path)
        if relationship is not None:
            collected[path] = relationship


def located(value: Any, path: tuple[str, ...], where: str = "") -> Iterator[tuple[str, Any]]:
    """What VALUE holds at PATH, one value for each array item passed through, each with where it
    is in VALUE as GMS names a place ("/owners/0/owner")."""
    if not path:
        yield where, value
        return
    step, rest = path[0], path[1:]
    if step == ITEMS:
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield from located(item, rest, f"{where}/{index}")
    elif isinstance(value, dict) and value.get(step) is not None:
        yield from located(value[step], rest, f"{where}/{step}")


def wrong_destinations(schema: avro.RecordSchema, value: dict[str, Any],
                       entity_of: Callable[[str], str]) -> list[str]:
    """GMS's refusals (EntityRegistryUrnValidator) of a urn that its relationship may not point
    to: Owner.owner only to a corpuser, corpGroup or aiAgent; DashboardInfo.datasetEdges'
    `/*/destinationUrn`, declared by path from the enclosing field, only to a dataset. GMS looks
    the field's path up among the aspect's relationships, so where an enclosing field removes a
    relationship below it (SchemaAssertionInfo.schema nulls its SchemaMetadata's) the urn may be
    of any type, whatever the field itself declares. A urn that does not parse avro_check.py
    refuses, so it is passed over here."""
    found = []
    for relationship in paths_of(schema):
        if not relationship.destinations:
            continue
        for where, urn in located(value, relationship.path):
            try:
                entity = entity_of(urn) if isinstance(urn, str) else None
            except ValueError:
                continue
            if entity is not None and entity not in relationship.destinations:
                found.append(f"ERROR :: {where} :: Provided urn {urn!r} is invalid: entity type {entity} is not a "
                             f"valid destination for this field (one of: {', '.join(relationship.destinations)})")
    return found


def references_to(schema: avro.RecordSchema, value: dict[str, Any], urn: str) -> list[RelationshipPath]:
    """The relationships of VALUE (an aspect of SCHEMA) that point to URN."""
    return [relationship for relationship in paths_of(schema)
            if any(found == urn for _, found in located(value, relationship.path))]


def without_reference(schema: avro.RecordSchema, value: dict[str, Any], path: tuple[str, ...],
                      urn: str) -> dict[str, Any] | None:
    """A copy of VALUE with URN removed where PATH leads, by the rules in the module's docstring;
    None when nothing of the aspect would be left."""
    return _remove(schema, copy.deepcopy(value), path, urn)


def _remove(schema: avro.Schema, value: Any, path: tuple[str, ...], urn: str) -> Any:
    """VALUE (changed in place) without URN at PATH, or None when VALUE itself must go: a record
    whose required field held URN, or held a record that had to go. An array keeps its other
    items, and stays (empty, too) where the record around it keeps it."""
    schema = _without_null(schema)
    step, rest = path[0], path[1:]
    if step == ITEMS:
        if isinstance(value, list) and rest:
            kept = (_remove(schema.items, item, rest, urn) for item in value)
            value[:] = [item for item in kept if item is not None]
        elif isinstance(value, list):
            value[:] = [item for item in value if item != urn]
        return value
    if not isinstance(value, dict) or value.get(step) is None:
        return value
    field = next(f for f in schema.fields if f.name == step)
    left = (_remove(field.type, value[step], rest, urn) if rest
            else (None if value[step] == urn else value[step]))
    if left is not None:
        value[step] = left
        return value
    if _is_optional(field.type):
        del value[step]
        return value
    return None


def _without_null(schema: avro.Schema) -> avro.Schema:
    if schema.type == "union":
        branches = [branch for branch in schema.schemas if branch.type != "null"]
        if len(branches) == 1:
            return branches[0]
    return schema


def _is_optional(schema: avro.Schema) -> bool:
    return schema.type == "union" and any(branch.type == "null" for branch in schema.schemas)
