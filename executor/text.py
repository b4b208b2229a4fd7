"""Text from outside (queue messages, control-plane answers, task output) made safe to log.

A control character in a logged value could forge a log line ("...\\n2026-01-01 INFO finished:
SUCCESS") or move the terminal's cursor; each is escaped as \\xNN (\\n, \\r, \\t as themselves).
"""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value: object, limit: int = 300) -> str:
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)
