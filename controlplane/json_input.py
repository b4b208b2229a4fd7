"""JSON from clients, refused before anything is stored when it cannot be stored.

A lone UTF-16 surrogate ("\\ud800") is valid JSON and a valid Python str, but not UTF-8: stored,
it made every later answer that included it fail with 500, for good. Such text, non-UTF-8
bytes and non-finite numbers (NaN, which JSON does not have) are refused here with a 400 that
says where.
"""
from __future__ import annotations

import math
from typing import Any

from vocabulary import json_text

from .errors import Invalid


def loads(data: bytes | str) -> Any:
    """Parse a request body; Invalid (400) when it is not storable JSON."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise Invalid(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json_text.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise Invalid(f"the body is not JSON: {exc}") from None
    check_storable(value)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_storable(value: Any, path: str = "") -> None:
    """Invalid if any string (key or value) inside VALUE cannot be encoded as UTF-8, or a number is not finite."""
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(str(key), f"{path}/{key}")
            check_storable(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_storable(item, f"{path}/{index}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"{path or '/'}: {value} is not a finite number")


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Invalid(f"{path or '/'}: text with an unpaired surrogate at character {exc.start} cannot be stored; "
                      "send valid Unicode") from None
