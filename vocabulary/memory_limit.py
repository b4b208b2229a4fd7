"""EXECUTOR_TASK_MEMORY_LIMIT, from a source's extra environment variables.

EXECUTOR_TASK_MEMORY_LIMIT is documented in kilobytes. DataHub's own executor applies the
number as *bytes of address space* (RLIMIT_AS), so its documented example breaks tasks; we
follow the documented unit, also accept explicit suffixes ("512M", "4G"), and confine the
task's cgroup (resident memory), not its address space.
"""
from __future__ import annotations

import re

from sandbox.sizes import parse_size


class InvalidMemoryLimit(ValueError):
    """EXECUTOR_TASK_MEMORY_LIMIT is not a size; the message names the value and the forms accepted."""


def parse_memory_limit_kb(text: str | None) -> int | None:
    """Bytes from EXECUTOR_TASK_MEMORY_LIMIT: a bare number is kilobytes (KiB), as documented."""
    if text is None or str(text).strip() == "":
        return None
    value = str(text).strip()
    try:
        if re.fullmatch(r"\d+", value):
            result = int(value) * 1024
            if result <= 0:
                raise ValueError
            return result
        return parse_size(value)
    except ValueError:
        raise InvalidMemoryLimit(
            f"EXECUTOR_TASK_MEMORY_LIMIT {text!r} is not a memory size: give kilobytes (e.g. 4000000 for ~4 GB) "
            "or a number with a unit (512M, 4G)"
        ) from None
