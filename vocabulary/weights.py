"""EXECUTOR_TASK_WEIGHT: how much of an executor's capacity (1.0) one task takes.

Exact rationals (fractions.Fraction), not floats: "1/3" three times fills a ledger exactly, and
admissions and releases never drift. The control plane refuses an invalid weight when a source
is saved; the executor parses the weight of the claimed arguments again and fails the
execution (INVALID_WEIGHT) if it is still invalid.
"""
from __future__ import annotations

import re
from fractions import Fraction

FULL = Fraction(1)
MAX_DENOMINATOR = 10**6
# Fraction("1e99999999") computes 10**99999999 before any check can look at it: minutes of CPU
# in one C call that holds the GIL (the executor's master, or the control plane saving a source,
# frozen whole), for a value outside (0, 1.0] anyway. An exponent of more digits than this is
# refused before it is built; 1e-999 is already 0 to MAX_DENOMINATOR.
MAX_EXPONENT_DIGITS = 3
_EXPONENT = re.compile(r"[eE][-+]?0*(\d+)")


class InvalidWeight(ValueError):
    """A weight that is not a number in (0, 1]. The message names the value."""


def parse_weight(text: str | float | None, default: Fraction) -> Fraction:
    """EXECUTOR_TASK_WEIGHT as written on a source ("0.25", "1.0", "1/3"), or DEFAULT when absent."""
    if text is None or (isinstance(text, str) and text.strip() == ""):
        return default
    exponent = _EXPONENT.search(str(text).replace("_", ""))
    if exponent and len(exponent.group(1)) > MAX_EXPONENT_DIGITS:
        raise InvalidWeight(f"EXECUTOR_TASK_WEIGHT {str(text)[:40]!r} is outside (0, 1.0]: 1.0 means the task runs alone")
    try:
        weight = Fraction(str(text).strip()).limit_denominator(MAX_DENOMINATOR)
    except (ValueError, ZeroDivisionError):
        raise InvalidWeight(f"EXECUTOR_TASK_WEIGHT {str(text)[:40]!r} is not a number; use a value in (0, 1.0], "
                            "e.g. 0.5 or 1/3") from None
    if weight <= 0 or weight > FULL:
        raise InvalidWeight(f"EXECUTOR_TASK_WEIGHT {str(text)[:40]!r} is outside (0, 1.0]: 1.0 means the task runs alone")
    return weight
