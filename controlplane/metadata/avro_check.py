"""Checks an aspect, in the JSON form GMS speaks (Rest.li's), against its Avro schema.

GMS refuses what does not match its schema with one message naming every problem and where
it is ("ERROR :: /relatedAssets/0/asset :: field is required but not found and has no default
value"). DataHub's Python classes (`from_obj` + `validate`) say only "invalid" and accept fields
the schema does not know, which GMS refuses ("unrecognized field found but not allowed"); this
walk gives GMS's answer, and the registry runs the class check after it.

Rest.li JSON differs from Avro JSON in two ways that matter here: an optional field (a union
with null) carries its value bare, and a union of several types carries {"<full name>": value}
with the name in its `com.linkedin.` form (no `pegasus2avro`).

A field the schema marks as a urn (PDL's Urn typeref and its subclasses, which the generated
schema carries as the field's "Urn" property) must hold a urn GMS can parse, of the entity type
its class names (a DatasetUrn is a dataset's): GMS's EntityRegistryUrnValidator refuses any
other with "Provided urn ... is invalid". Parsing a urn needs the entity registry, which the
caller passes in as ENTITY_OF. The types a relationship may point to (Owner.owner: a corpuser,
corpGroup or aiAgent) are relationships.wrong_destinations' to check, from the aspect's
relationships as a whole: an annotation on an enclosing field replaces or removes the one a
field carries, and only the aspect's own paths say which holds.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from avro import schema as avro

PEGASUS = "com.linkedin.pegasus2avro."
RESTLI = "com.linkedin."
MAX_PROBLEMS = 20

# The entity type of a urn, or ValueError saying why GMS would not take it as one.
EntityOf = Callable[[str], str]


@dataclass(frozen=True)
class UrnField:
    """What a urn-typed field may hold: a urn of ENTITY_TYPE (None: any)."""
    urn_class: str
    entity_type: str | None


def restli_name(named: avro.NamedSchema) -> str:
    """The name Rest.li uses for a record, enum or fixed: com.linkedin.X, not com.linkedin.pegasus2avro.X."""
    return named.fullname.replace(PEGASUS, RESTLI, 1)


def problems(schema: avro.Schema, value: Any, entity_of: EntityOf | None = None) -> list[str]:
    """Every way VALUE breaks SCHEMA, as GMS words them; empty when it conforms. Without
    ENTITY_OF, urn-typed fields are checked only for being strings."""
    found: list[str] = []
    _check(schema, value, "", found, entity_of, None)
    return found[:MAX_PROBLEMS]


def urn_field(field: avro.Field) -> UrnField | None:
    """The urn FIELD holds, if its schema marks it as one."""
    urn_class = field.other_props.get("Urn")
    if not isinstance(urn_class, str) or not urn_class.endswith("Urn"):
        return None
    return UrnField(urn_class, _entity_type_of_class(urn_class))


def _entity_type_of_class(urn_class: str) -> str | None:
    """The entity type a Java urn class is of, as its ENTITY_TYPE says: DatasetUrn -> dataset,
    CorpuserUrn -> corpuser, MLModelUrn -> mlModel; the base class Urn is of any."""
    stem = urn_class[:-len("Urn")]
    if not stem:
        return None
    return "ml" + stem[2:] if stem.startswith("ML") else stem[0].lower() + stem[1:]


def _check_urn(urn: UrnField, value: str, path: str, found: list[str], entity_of: EntityOf) -> None:
    try:
        entity = entity_of(value)
    except ValueError as exc:
        found.append(f"ERROR :: {path} :: Provided urn {_describe(value)} is invalid: {exc}")
        return
    if urn.entity_type is not None and entity != urn.entity_type:
        found.append(f"ERROR :: {path} :: Provided urn {_describe(value)} is invalid: a {urn.urn_class} is a urn "
                     f"of entity type {urn.entity_type}, this is of {entity}")


def _type_name(schema: avro.Schema) -> str:
    return schema.fullname if isinstance(schema, avro.NamedSchema) else schema.type


def _check(schema: avro.Schema, value: Any, path: str, found: list[str], entity_of: EntityOf | None,
           urn: UrnField | None) -> None:
    """URN: what the string(s) here must be, when the field they are in is urn-typed."""
    if len(found) >= MAX_PROBLEMS:
        return
    kind = schema.type
    here = path or "/"
    if kind == "record":
        if not isinstance(value, dict):
            found.append(f"ERROR :: {here} :: {_describe(value)} is not backed by a DataMap")
            return
        known = {field.name for field in schema.fields}
        for key in value:
            if key not in known:
                found.append(f"ERROR :: {path}/{key} :: unrecognized field found but not allowed")
        for field in schema.fields:
            present = field.name in value and value[field.name] is not None
            if present:
                _check(field.type, value[field.name], f"{path}/{field.name}", found, entity_of, urn_field(field))
            elif not (field.has_default or _is_optional(field.type)):
                found.append(f"ERROR :: {path}/{field.name} :: field is required but not found and has no default value")
    elif kind == "union":
        branches = [b for b in schema.schemas if b.type != "null"]
        if value is None:
            if len(branches) != len(schema.schemas):
                found.append(f"ERROR :: {here} :: null is not a member of the union")
            return
        if len(branches) == 1:
            _check(branches[0], value, path, found, entity_of, urn)
            return
        if not isinstance(value, dict) or len(value) != 1:
            found.append(f"ERROR :: {here} :: {_describe(value)} is not a union: give one member as {{\"<type>\": value}}")
            return
        (member, inner), = value.items()
        for branch in branches:
            if member in (_union_key(branch), _type_name(branch)):
                _check(branch, inner, f"{path}/{member}", found, entity_of, None)
                return
        found.append(f"ERROR :: {here} :: {member!r} is not a member type of the union")
    elif kind == "array":
        if not isinstance(value, list):
            found.append(f"ERROR :: {here} :: {_describe(value)} is not an array")
            return
        for index, item in enumerate(value):
            _check(schema.items, item, f"{path}/{index}", found, entity_of, urn)
    elif kind == "map":
        if not isinstance(value, dict):
            found.append(f"ERROR :: {here} :: {_describe(value)} is not a map")
            return
        for key, item in value.items():
            _check(schema.values, item, f"{path}/{key}", found, entity_of, None)
    elif kind == "enum":
        if value not in schema.symbols:
            found.append(f"ERROR :: {here} :: {_describe(value)} is not an enum symbol of {restli_name(schema)}")
    elif kind in ("string", "bytes", "fixed"):
        if not isinstance(value, str):
            found.append(f"ERROR :: {here} :: {_describe(value)} is not a string")
        elif urn is not None and entity_of is not None:
            _check_urn(urn, value, here, found, entity_of)
    elif kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            found.append(f"ERROR :: {here} :: {_describe(value)} is not a {kind}")
        elif kind == "int" and not -(2**31) <= value < 2**31:
            found.append(f"ERROR :: {here} :: {value} is out of range for an int")
        elif not -(2**63) <= value < 2**63:
            found.append(f"ERROR :: {here} :: {value} is out of range for a long")
    elif kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            found.append(f"ERROR :: {here} :: {_describe(value)} is not a {kind}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            found.append(f"ERROR :: {here} :: {_describe(value)} is not a boolean")
    elif kind == "null":
        if value is not None:
            found.append(f"ERROR :: {here} :: {_describe(value)} is not null")


def _is_optional(schema: avro.Schema) -> bool:
    return schema.type == "union" and any(b.type == "null" for b in schema.schemas)


def _union_key(branch: avro.Schema) -> str:
    return restli_name(branch) if isinstance(branch, avro.NamedSchema) else branch.type


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
