"""How a confined command ended, said exactly."""
from __future__ import annotations

import signal as _signal
from dataclasses import asdict, dataclass, field
from enum import Enum


class Status(str, Enum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    MEMORY_LIMIT_EXCEEDED = "MEMORY_LIMIT_EXCEEDED"
    TIMED_OUT = "TIMED_OUT"
    KILLED = "KILLED"


@dataclass(frozen=True)
class Outcome:
    status: Status
    exit_code: int | None
    signal: int | None
    oom_kills: int
    peak_memory_bytes: int | None
    duration_s: float
    mode: str
    limits_enforced: dict[str, str] = field(default_factory=dict)
    killed_by: str | None = None
    pids_limit_hits: int = 0
    isolation: dict[str, str] = field(default_factory=dict)
    # Processes that would not die within the kill budget (stuck in the kernel, frozen by
    # someone else). Their cgroup is kept; the next start-up's sweep retries.
    unkillable_pids: list[int] = field(default_factory=list)
    # The task's cgroup was not seen empty and removed (the processes above, or a cgroup that
    # could not be read or removed): something of the task may still run in it, kept for the
    # next sweep. Whoever gives the task's uid to another task must not (executor/runner.py).
    tree_left: bool = False
    # Whether the OOM kills (oom_kills) were for the task's own memory limit; False where they
    # were for the host's memory or an enclosing cgroup's limit (the run is then FAILED, not
    # MEMORY_LIMIT_EXCEEDED: raising the task's limit would not help); None where there were
    # none or it cannot be told.
    memory_limit_reached: bool | None = None

    @property
    def shell_exit_code(self) -> int:
        """What a shell would report: the exit code, or 128 + the signal number."""
        if self.signal is not None:
            return 128 + self.signal
        return self.exit_code if self.exit_code is not None else 1

    def to_dict(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        data["signal_name"] = signal_name(self.signal) if self.signal else None
        data["duration_s"] = round(self.duration_s, 4)
        return data


def signal_name(number: int) -> str:
    """SIGKILL, SIGRTMIN+6 (real-time signals have no names of their own; as `kill -l` says
    them), or SIG<n> for a number that is neither."""
    try:
        return _signal.Signals(number).name
    except ValueError:
        pass
    if _signal.SIGRTMIN < number <= _signal.SIGRTMAX:
        return f"SIGRTMIN+{number - _signal.SIGRTMIN}"
    return f"SIG{number}"


def classify(
    *, returncode: int | None, oom_kills: int, killed_by: str | None, limit_reached: bool | None = None
) -> Status:
    """The status from what we know for certain; OOM comes from counters, never from exit 137.

    Precedence: a limit breach the kernel (or our watchdog) recorded explains a failed run
    better than anything else; then an end we caused; then the exit code. RETURNCODE is None
    when the main process could not be waited for (it would not die, or waiting failed).
    LIMIT_REACHED says whether the task's own memory limit is what the OOM kills were for
    (None: cannot be told). An OOM kill for the host's memory or an enclosing cgroup's limit
    is no breach of the task's limit: raising it would not help, so the run is FAILED, with
    its signal and oom_kills saying what happened.
    """
    if killed_by == "memory-watchdog":
        return Status.MEMORY_LIMIT_EXCEEDED
    if oom_kills > 0 and returncode != 0 and killed_by is None and limit_reached is not False:
        return Status.MEMORY_LIMIT_EXCEEDED
    if killed_by == "timeout":
        return Status.TIMED_OUT
    if killed_by is not None:
        return Status.KILLED
    return Status.SUCCEEDED if returncode == 0 else Status.FAILED
