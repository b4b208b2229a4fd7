"""The interface every confinement driver (cgroup v2, cgroup v1, none) implements."""
from __future__ import annotations

import signal
import time
from abc import ABC, abstractmethod

from .backoff import Backoff
from .errors import SandboxError
from .limits import Limits

TASK_PREFIX = "task-"
# How long the sandbox keeps killing a task whose processes will not go (stuck in the kernel,
# frozen by someone else) before it reports them and moves on.
KILL_BUDGET_S = 10.0


class TaskGroup(ABC):
    """The processes of one task, wherever they are in the tree, and its counters."""

    name: str
    enforced: dict[str, str]
    # The last error of a kill round, kept for the one log line that reports a task that
    # would not die (a kill that keeps failing is retried, not raised).
    last_kill_error: str | None = None

    @abstractmethod
    def attach(self, pid: int) -> None: ...

    @abstractmethod
    def pids(self) -> list[int]:
        """Every process of the task, in cgroups it made below its own too."""

    def is_empty(self) -> bool:
        """Whether no process of the task is left."""
        return not self.pids()

    @abstractmethod
    def signal_all(self, sig: int) -> None: ...

    @abstractmethod
    def kill_all(self) -> None:
        """SIGKILL every process of the task once, without waiting for them to go."""

    def try_kill_all(self) -> None:
        """kill_all, recording a failure instead of raising it: the caller retries."""
        try:
            self.kill_all()
        except (SandboxError, OSError) as exc:
            self.last_kill_error = str(exc)

    def kill_until_empty(self, backoff: Backoff) -> list[int]:
        """SIGKILL the task until no process is left, pausing longer after each round (a fork
        may race a round, a kill may fail), within BACKOFF's budget. Returns the pids left:
        none unless some would not die."""
        while True:
            try:
                if self.is_empty():
                    return []
            except OSError:
                pass  # not readable now (out of descriptors?): not known to be empty, so killed again
            self.try_kill_all()
            pause = backoff.next_pause()
            if pause is None:
                return self.pids()  # raises where it still cannot be read: the caller keeps the cgroup
            time.sleep(pause)

    @abstractmethod
    def oom_kills(self) -> int: ...

    def memory_limit_reached(self) -> bool | None:
        """Whether the task's own memory limit is what its OOM kills were for; None where that
        cannot be told (mode none: its watchdog kills only for the limit). An OOM kill counter
        counts the victims of any OOM killer: the host's, or one for an enclosing cgroup's limit
        (a container's, the sandbox root's), which a task well inside its own limit can meet."""
        return None

    @abstractmethod
    def memory_current(self) -> int | None: ...

    @abstractmethod
    def memory_peak(self) -> int | None: ...

    @abstractmethod
    def remove(self) -> None:
        """Release the group, cgroups the task made below its own first; only called once it is empty."""

    def terminate_all(self) -> None:
        self.signal_all(signal.SIGTERM)

    def pids_limit_hits(self) -> int:
        """How often a fork was refused by the task's pids limit (pids.events "max"); 0 where
        nothing counts it. A fork bomb shows here rather than in an exit code."""
        return 0

    def needs_watchdog(self) -> bool:
        """True where the tree is known, and memory limited, only by scanning it periodically
        rather than by the kernel."""
        return False

    def main_exited(self) -> None:
        """The main process has exited and is not yet reaped (the reaper calls this just before
        it reaps): the last moment its pid, and the session named by it, are surely the task's.
        Nothing to do where the kernel keeps the tree (a cgroup)."""


class Driver(ABC):
    mode: str

    @abstractmethod
    def create(self, name: str, limits: Limits) -> TaskGroup: ...

    @abstractmethod
    def leftover_names(self) -> list[str]:
        """Task groups under this driver's root, e.g. those of a crashed master."""

    @abstractmethod
    def open_existing(self, name: str) -> TaskGroup: ...

    @abstractmethod
    def tree_kill_support(self) -> str:
        """How a task's whole tree is ended here, in words (for isolation_support and `check`)."""

    @abstractmethod
    def close(self) -> None:
        """Remove the root when no task group is left in it."""
