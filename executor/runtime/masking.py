"""Masks secret values in every line the executor keeps or ships (task log, log tail).

Each value is replaced in its plain form and in the encodings it commonly reappears in:
JSON-escaped (a recipe echoed as JSON), URL-encoded (a password inside a connection URI) and
repr-escaped. Longest values first, so a secret that contains another is masked whole.
Values shorter than MIN_SECRET_LENGTH are not masked: masking "a" or "1" would shred every
line and reveal the value by its absence.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "********"
MIN_SECRET_LENGTH = 3


class Masker:
    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in secrets:
            if value is None or len(value) < MIN_SECRET_LENGTH:
                continue
            forms.update({value, json.dumps(value)[1:-1], quote(value, safe=""), quote_plus(value), repr(value)[1:-1]})
        ordered = sorted((f for f in forms if len(f) >= MIN_SECRET_LENGTH), key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def mask(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text

    def __bool__(self) -> bool:
        return self._pattern is not None
