"""GMS's filters on a timeseries aspect's points (getTimeseriesAspectValues), matched here.

GMS keeps each point as a search document (its TimeseriesAspectTransformer) and a filter names
that document's fields: `urn`, `timestampMillis`, `runId` (the writer's systemMetadata),
`messageId`, `eventGranularity` and `partitionSpec.partition`, and the aspect's fields annotated
@TimeseriesField (a checkpoint's `pipelineName`, a profile's `rowCount`). Numbers stay numbers;
records and arrays are JSON text; everything else is text. A field the document lacks matches
nothing, as a term query on an unmapped field does. This module builds that document from a
stored point and matches a filter against it; it does no I/O.

A filter is Rest.li's `Filter`: `{"or": [{"and": [criterion, ...]}, ...]}` (any conjunction
matches), or the deprecated `{"criteria": [...]}` (one conjunction). A criterion is
`{"field", "values" (or the older single "value"), "condition" (EQUAL), "negated" (false)}`.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .registry import AspectSpec, MetadataInvalid

ABSENT = object()


@dataclass(frozen=True)
class Criterion:
    field: str
    values: tuple[str, ...]
    condition: str
    negated: bool


Filter = tuple[tuple[Criterion, ...], ...]  # disjunction of conjunctions; () matches everything


def parse_filter(raw: Any) -> Filter:
    """RAW (Rest.li JSON, or None) as a Filter; MetadataInvalid (400) naming what is wrong."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise MetadataInvalid("filter must be an object: {\"or\": [{\"and\": [criterion, ...]}]}")
    if raw.get("or") is not None:
        disjunction = raw["or"]
        if not isinstance(disjunction, list):
            raise MetadataInvalid("filter.or must be a list of {\"and\": [criterion, ...]}")
        conjunctions = []
        for index, conjunction in enumerate(disjunction):
            if not isinstance(conjunction, dict) or not isinstance(conjunction.get("and"), list):
                raise MetadataInvalid(f"filter.or[{index}] must be {{\"and\": [criterion, ...]}}")
            conjunctions.append(tuple(_criterion(c, f"filter.or[{index}].and[{i}]")
                                      for i, c in enumerate(conjunction["and"])))
        return tuple(conjunctions)
    if raw.get("criteria") is not None:
        if not isinstance(raw["criteria"], list):
            raise MetadataInvalid("filter.criteria must be a list of criteria")
        return (tuple(_criterion(c, f"filter.criteria[{i}]") for i, c in enumerate(raw["criteria"])),)
    return ()


def _criterion(raw: Any, where: str) -> Criterion:
    if not isinstance(raw, dict) or not isinstance(raw.get("field"), str):
        raise MetadataInvalid(f"{where} must be a criterion with a field: {{\"field\", \"values\", \"condition\"}}")
    values = raw.get("values") or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise MetadataInvalid(f"{where}.values must be a list of strings")
    if not values and raw.get("value") is not None:
        # GMS reads the older single value where no list is given (CriterionUtils.validateAndConvert).
        if not isinstance(raw["value"], str):
            raise MetadataInvalid(f"{where}.value must be a string")
        values = [raw["value"]]
    condition = raw.get("condition", "EQUAL")
    if not isinstance(condition, str) or condition not in CONDITIONS:
        raise MetadataInvalid(f"{where}.condition {str(condition)[:40]!r} is not supported on timeseries aspects by "
                              f"this server; use one of {', '.join(CONDITIONS)}")
    negated = raw.get("negated", False)
    if not isinstance(negated, bool):
        raise MetadataInvalid(f"{where}.negated must be true or false")
    return Criterion(raw["field"], tuple(values), condition, negated)


def timeseries_fields(spec: AspectSpec) -> dict[str, str]:
    """The aspect's @TimeseriesField fields, {document name: field name}, of its top level."""
    return {(field.other_props["TimeseriesField"] or {}).get("name", field.name): field.name
            for field in spec.schema.fields if "TimeseriesField" in field.other_props}


def document(fields: dict[str, str], urn: str, value: dict[str, Any],
             system_metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of the search document GMS makes of one point of an aspect whose
    @TimeseriesField fields are FIELDS (timeseries_fields: read from its schema once per request,
    not for each point)."""
    doc: dict[str, Any] = {"urn": urn, "timestampMillis": value.get("timestampMillis")}
    run_id = (system_metadata or {}).get("runId")
    if run_id is not None:
        doc["runId"] = run_id
    if value.get("messageId") is not None:
        doc["messageId"] = value["messageId"]
    if value.get("eventGranularity") is not None:
        doc["eventGranularity"] = _text(value["eventGranularity"])
    partition = (value.get("partitionSpec") or {}).get("partition")
    if partition is not None:
        doc["partitionSpec.partition"] = partition
    for name, field in fields.items():
        if value.get(field) is not None:
            doc[name] = _indexed(value[field])
    return doc


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _indexed(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return value
    return _text(value)


def matches(flt: Filter, doc: dict[str, Any]) -> bool:
    if not flt:
        return True
    return any(all(_holds(c, doc) for c in conjunction) for conjunction in flt)


def _holds(criterion: Criterion, doc: dict[str, Any]) -> bool:
    found = doc.get(criterion.field, ABSENT)
    held = CONDITIONS[criterion.condition](found, criterion.values)
    return held != criterion.negated


def _same(found: Any, wanted: str, fold: bool = False) -> bool:
    if isinstance(found, (int, float)):
        try:
            return float(wanted) == found
        except ValueError:
            return False
    text = str(found)
    return text.lower() == wanted.lower() if fold else text == wanted


def _order(found: Any, wanted: str) -> int | None:
    """-1, 0 or 1 as FOUND is below, at or above WANTED (numbers by value, text by its order)."""
    if isinstance(found, (int, float)):
        try:
            bound: Any = float(wanted)
        except ValueError:
            return None
    else:
        found, bound = str(found), wanted
    return (found > bound) - (found < bound)


def _compare(test: Callable[[int], bool]) -> Callable[[Any, tuple[str, ...]], bool]:
    def holds(found: Any, values: tuple[str, ...]) -> bool:
        if found is ABSENT or not values:
            return False
        order = _order(found, values[0])
        return order is not None and test(order)
    return holds


def _text_test(test: Callable[[str, str], bool]) -> Callable[[Any, tuple[str, ...]], bool]:
    def holds(found: Any, values: tuple[str, ...]) -> bool:
        return found is not ABSENT and any(test(str(found), v) for v in values)
    return holds


CONDITIONS: dict[str, Callable[[Any, tuple[str, ...]], bool]] = {
    "EQUAL": lambda found, values: found is not ABSENT and any(_same(found, v) for v in values),
    "IN": lambda found, values: found is not ABSENT and any(_same(found, v) for v in values),
    "IEQUAL": lambda found, values: found is not ABSENT and any(_same(found, v, fold=True) for v in values),
    "CONTAIN": _text_test(lambda text, v: v in text),
    "START_WITH": _text_test(str.startswith),
    "END_WITH": _text_test(str.endswith),
    "IS_NULL": lambda found, values: found is ABSENT,
    "EXISTS": lambda found, values: found is not ABSENT and found != "",
    "GREATER_THAN": _compare(lambda order: order > 0),
    "GREATER_THAN_OR_EQUAL_TO": _compare(lambda order: order >= 0),
    "LESS_THAN": _compare(lambda order: order < 0),
    "LESS_THAN_OR_EQUAL_TO": _compare(lambda order: order <= 0),
}
