"""Parsing of human-written sizes ("512M", "2G", "1.5GiB", "4096").

Binary units throughout (K = 1024): cgroup limits are page-granular and operators
think of memory in MiB/GiB, so "512M" means 512 MiB, as in systemd and Docker.
"""
from __future__ import annotations

import re
from decimal import Decimal

MAX_SIZE = (1 << 63) - 1  # the kernel's limits are signed 64-bit
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Return the number of bytes TEXT names; ValueError names the input and the accepted forms."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(
            f"invalid size {text!r}: use a whole number of bytes or a number with a unit "
            "K, M, G or T (binary: 512M = 512 MiB), e.g. 512M, 2G, 1.5G"
        )
    number, unit = match.groups()
    value = int(Decimal(number) * _UNITS[unit.upper()])  # exact: a float of 400 digits is infinity
    if value > MAX_SIZE:
        raise ValueError(f"invalid size {text!r}: too large (no kernel takes more than {MAX_SIZE} bytes)")
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: must be greater than zero")
    return value


def format_size(value: int) -> str:
    """The shortest exact binary-unit spelling of VALUE bytes, for messages."""
    for unit in ("T", "G", "M", "K"):
        if value % _UNITS[unit] == 0:
            return f"{value // _UNITS[unit]}{unit}"
    return str(value)
