"""What a task may use. Plain data: the drivers decide how each limit is enforced."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import SandboxError


@dataclass(frozen=True)
class Limits:
    """Resource limits of one task; None means unlimited.

    address_space_bytes (RLIMIT_AS) is opt-in only: address space is not memory. A JVM
    reserves gigabytes of address space for a few MB resident, so using it as the memory
    limit breaks connectors that are well within their real budget.
    """

    memory_max_bytes: int | None = None
    memory_high_bytes: int | None = None
    pids_max: int | None = None
    cpu_max: float | None = None
    address_space_bytes: int | None = None
    timeout_s: float | None = None

    def validate(self) -> None:
        """Reject values no kernel accepts, naming the limit and the fix.

        Only finite numbers: an infinite or NaN timeout passes every comparison with zero and
        then breaks the reaper's deadline arithmetic (a task killed at once), and an infinite
        CPU limit cannot be turned into a quota. "No limit" is None, not infinity.
        """
        for name in ("memory_max_bytes", "memory_high_bytes", "pids_max", "address_space_bytes"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise SandboxError(f"{name} must be a whole number (got {value!r}); use None for no limit")
            if value <= 0:
                raise SandboxError(f"{name} must be greater than zero (got {value})")
        for name in ("cpu_max", "timeout_s"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SandboxError(f"{name} must be a finite number (got {value!r}); use None for no limit")
        if self.cpu_max is not None and self.cpu_max > MAX_CPUS:
            raise SandboxError(f"cpu limit {self.cpu_max} is more CPUs than any machine has; leave it out for no limit")
        if self.cpu_max is not None and self.cpu_max < 0.01:
            raise SandboxError(
                f"cpu limit {self.cpu_max} is below what the kernel accepts: the smallest CFS quota is "
                "1 ms per 100 ms period, i.e. 0.01 CPUs"
            )
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise SandboxError(f"timeout must be greater than zero seconds (got {self.timeout_s})")
        if self.memory_max_bytes is not None and self.memory_max_bytes < MIN_MEMORY_BYTES:
            raise SandboxError(
                f"memory limit {self.memory_max_bytes} bytes is below the {MIN_MEMORY_BYTES // (1 << 20)} MiB "
                "that any process needs to start; raise it"
            )
        if (
            self.memory_high_bytes is not None
            and self.memory_max_bytes is not None
            and self.memory_high_bytes > self.memory_max_bytes
        ):
            raise SandboxError("memory_high must not exceed memory_max: the throttle point lies below the hard limit")

    def effective_memory_high(self) -> int | None:
        """memory.high a little below memory.max, so the kernel reclaims before it kills."""
        if self.memory_high_bytes is not None:
            return self.memory_high_bytes
        if self.memory_max_bytes is None:
            return None
        return self.memory_max_bytes - max(self.memory_max_bytes // 16, 1 << 20)


# Beyond this a CPU limit is no limit, and its CFS quota would overflow what the kernel takes.
MAX_CPUS = 1_000_000
# Below this, not even a shell starts; a kernel accepts it, but the result is a confusing failure.
MIN_MEMORY_BYTES = 4 << 20
