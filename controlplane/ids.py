"""Time-ordered identifiers: sorting executions by id sorts them by creation."""
from __future__ import annotations

import secrets
import time


def new_id(prefix: str = "") -> str:
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(5)}"
