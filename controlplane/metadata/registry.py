"""The entity registry: which entities exist, their key, and the aspects each may carry, with
each aspect's schema. Built from DataHub's own generated model (`datahub.metadata.schema_classes`
of acryl-datahub, or of acryl-datahub-cloud where that is installed), plus the remote-executor
entities of DataHub Cloud where the installed model lacks them (remote_executor_model.py).

Validation is GMS's: an unknown entity or aspect, a malformed urn (the entity's, or one an
aspect's urn-typed field holds), or an aspect that breaks its schema is refused with a 400 that names the problem. An aspect with a generated class is then
also instantiated and validated by that class (`from_obj` + `validate`), so what we store is
what DataHub's own client reads back.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from avro import schema as avro
from datahub.emitter.serialization_helper import post_json_transform
from datahub.metadata.urns import Urn
from datahub.utilities.urns.error import InvalidUrnError

from . import remote_executor_model
from .avro_check import problems, restli_name
from .relationships import wrong_destinations

# Urns remembered parsed: a batch names each entity once per aspect it writes.
PARSED_URNS = 1024


class MetadataInvalid(ValueError):
    """A proposal GMS would refuse with 400; the message is GMS's kind of message."""


class InvalidUrn(MetadataInvalid):
    """A urn that does not parse, or has the wrong number of key parts; REASON says which."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"Invalid urn {text!r}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class AspectSpec:
    name: str
    schema: avro.RecordSchema
    model_class: type | None  # DataHub's generated class, where the installed model has one
    timeseries: bool

    @property
    def restli_name(self) -> str:
        """What GET /aspects answers it under: {"aspect": {"com.linkedin.x.Y": {...}}}."""
        return restli_name(self.schema)


@dataclass(frozen=True)
class EntitySpec:
    name: str
    key_aspect: str
    key_fields: tuple[str, ...]
    aspects: frozenset[str]


@dataclass(frozen=True)
class SnapshotSpec:
    """One member of a MetadataChangeEvent's proposedSnapshot union: the entity it is of, and the
    aspects it may carry, by the Rest.li name each is given under ({"com.linkedin.x.Y": {...}})."""
    name: str  # Rest.li's: com.linkedin.metadata.snapshot.DatasetSnapshot
    entity: str
    aspects: dict[str, str]  # Rest.li class name -> aspect name


class Registry:
    def __init__(self, entities: dict[str, EntitySpec], aspects: dict[str, AspectSpec],
                 snapshots: dict[str, SnapshotSpec] | None = None) -> None:
        self._entities = entities
        self._aspects = aspects
        self._snapshots = snapshots or {}
        self._parsed_urn = functools.lru_cache(maxsize=PARSED_URNS)(self._parse_urn)

    @classmethod
    def load(cls, model: ModuleType | None = None, *, add_remote_executor: bool = True) -> Registry:
        """From a generated model module (default: the installed datahub.metadata.schema_classes)."""
        if model is None:
            import datahub.metadata.schema_classes as model
        entities: dict[str, EntitySpec] = {}
        aspects: dict[str, AspectSpec] = {}
        for name, aspect_class in model.ASPECT_NAME_MAP.items():
            aspects[name] = AspectSpec(name, aspect_class.RECORD_SCHEMA, aspect_class,
                                       getattr(aspect_class, "ASPECT_TYPE", "default") == "timeseries")
        for entity, key_class in model.KEY_ASPECTS.items():
            entities[entity] = _entity_from_key(key_class.RECORD_SCHEMA)
        if add_remote_executor and "dataHubRemoteExecutorPool" not in entities:
            names = avro.Names()
            for definition in remote_executor_model.SCHEMAS:
                record = avro.make_avsc_object(definition, names)
                aspect_name = definition["Aspect"]["name"]
                aspects[aspect_name] = AspectSpec(aspect_name, record, None, False)
                if "keyForEntity" in definition["Aspect"]:
                    entity_spec = _entity_from_key(record)
                    entities[entity_spec.name] = entity_spec
        return cls(entities, aspects, _snapshots(model))

    @property
    def entity_names(self) -> list[str]:
        return sorted(self._entities)

    def entity(self, name: str) -> EntitySpec:
        spec = self._entities.get(name)
        if spec is None:
            raise MetadataInvalid(f"Unknown entity type {name!r}: the entity registry has no such entity")
        return spec

    def aspect(self, entity: str, aspect: str) -> AspectSpec:
        """The aspect's spec, if ENTITY may carry it (its key aspect included)."""
        entity_spec = self.entity(entity)
        spec = self._aspects.get(aspect)
        if spec is None or (aspect not in entity_spec.aspects and aspect != entity_spec.key_aspect):
            raise MetadataInvalid(f"Unknown aspect {aspect} for entity {entity}")
        return spec

    def snapshot(self, name: Any) -> SnapshotSpec:
        """A snapshot by its Rest.li name, as an MCE's entity union gives it."""
        spec = self._snapshots.get(name) if isinstance(name, str) else None
        if spec is None:
            raise MetadataInvalid(f"{str(name)[:120]!r} is not a member type of the snapshot union (a Rest.li name: "
                                  f"com.linkedin.metadata.snapshot.<Entity>Snapshot, such as "
                                  f"com.linkedin.metadata.snapshot.DatasetSnapshot)")
        return spec

    def parse_urn(self, text: Any) -> Urn:
        """A urn of a known entity type, with as many key parts as its key has fields. Each text is
        parsed once while it is among the last PARSED_URNS (the Urn is never changed by its users);
        a refused one is parsed, and refused, every time."""
        if not isinstance(text, str):
            raise MetadataInvalid(f"Invalid urn {text!r}: a urn is a string")
        return self._parsed_urn(text)

    def _parse_urn(self, text: str) -> Urn:
        try:
            urn = Urn.from_string(text)
        except InvalidUrnError as exc:
            raise InvalidUrn(text, str(exc)) from None
        spec = self.entity(urn.entity_type)
        if len(urn.entity_ids) != len(spec.key_fields):
            raise InvalidUrn(text, f"entity {spec.name} has a key of {len(spec.key_fields)} part(s) "
                                   f"({', '.join(spec.key_fields)}), the urn has {len(urn.entity_ids)}")
        return urn

    def _entity_of(self, text: str) -> str:
        """The entity type of TEXT, held by a urn-typed field of an aspect (avro_check's ENTITY_OF):
        GMS parses those as it parses an entity's urn."""
        try:
            return self.parse_urn(text).entity_type
        except InvalidUrn as exc:
            raise ValueError(exc.reason) from None

    def key_value(self, urn: Urn) -> dict[str, str]:
        """The entity's key aspect, as GMS derives it from the urn."""
        spec = self.entity(urn.entity_type)
        return dict(zip(spec.key_fields, urn.entity_ids))

    def urn_from_key(self, entity: str, key: Any) -> str:
        """The urn an MCP's entityKeyAspect names (DataHub's executor heartbeats that way)."""
        spec = self.entity(entity)
        self.validate(self.aspect(entity, spec.key_aspect), key)
        parts = [str(key[field]) for field in spec.key_fields]
        if len(parts) == 1:
            return f"urn:li:{entity}:{parts[0]}"
        return f"urn:li:{entity}:({','.join(parts)})"

    def validate(self, spec: AspectSpec, value: Any) -> None:
        """Refuse VALUE (Rest.li JSON) unless it conforms to SPEC's schema and, where DataHub has a
        generated class for it, that class accepts it."""
        found = problems(spec.schema, value, self._entity_of) or wrong_destinations(spec.schema, value, self._entity_of)
        if found:
            raise MetadataInvalid(f"Failed to validate record with class {spec.restli_name}: {found}")
        if spec.model_class is not None:
            try:
                valid = spec.model_class.from_obj(post_json_transform(value)).validate()
            except Exception as exc:  # avrogen raises several types; all mean "not valid"
                raise MetadataInvalid(f"Failed to validate record with class {spec.restli_name}: {exc}") from None
            if not valid:
                raise MetadataInvalid(f"Failed to validate record with class {spec.restli_name}: "
                                      f"{json.dumps(value)[:200]} does not conform to its schema")


def _snapshots(model: ModuleType) -> dict[str, SnapshotSpec]:
    """The snapshots of MetadataChangeEvent.proposedSnapshot, from the model's Avro schemas."""
    event = getattr(model, "MetadataChangeEventClass", None)
    if event is None:
        return {}
    union = next(field.type for field in event.RECORD_SCHEMA.fields if field.name == "proposedSnapshot")
    snapshots = {}
    for record in union.schemas:
        aspects = next(field.type.items for field in record.fields if field.name == "aspects")
        snapshots[restli_name(record)] = SnapshotSpec(
            restli_name(record), record.other_props["Entity"]["name"],
            {restli_name(aspect): aspect.other_props["Aspect"]["name"] for aspect in aspects.schemas})
    return snapshots


def _entity_from_key(key_schema: avro.RecordSchema) -> EntitySpec:
    info = key_schema.other_props["Aspect"]
    return EntitySpec(name=info["keyForEntity"], key_aspect=info["name"],
                      key_fields=tuple(field.name for field in key_schema.fields),
                      aspects=frozenset(info.get("entityAspects", ())))
