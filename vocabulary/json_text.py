"""JSON text from outside (a request, a message, a recipe's extra arguments, a result), parsed
without letting its nesting reach the interpreter's recursion limit.

`json.loads` raises RecursionError, not ValueError, for arrays or objects nested about a thousand
deep: a 2 KiB string of `[` did it. Every caller catches ValueError for bad JSON, so that one
escaped them all (a 500 with a traceback in the control plane's log, an executor runner failing
after its claim). Here it is one more ValueError; MAX_DEPTH is far beyond any JSON this project
reads, and checked without recursion, so what passes can be walked recursively afterwards.
"""
from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 200


class TooDeep(ValueError):
    """JSON nested deeper than MAX_DEPTH."""


def loads(text: str | bytes, **options: Any) -> Any:
    """json.loads(TEXT), with nesting past MAX_DEPTH a ValueError (TooDeep), never RecursionError."""
    try:
        value = json.loads(text, **options)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if isinstance(value, (dict, list)) and _depth_over(value, MAX_DEPTH):
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether VALUE nests deeper than LIMIT, walked with a stack of its own."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
