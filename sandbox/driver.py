"""The interface every confinement driver (cgroup v2, cgroup v1, none) implements."""
from __future__ import annotations

import signal
from abc import ABC, abstractmethod

from .limits import Limits

TASK_PREFIX = "task-"


class TaskGroup(ABC):
    """The processes of one task, wherever they are in the tree, and its counters."""

    name: str
    enforced: dict[str, str]

    @abstractmethod
    def attach(self, pid: int) -> None: ...

    @abstractmethod
    def pids(self) -> list[int]: ...

    @abstractmethod
    def signal_all(self, sig: int) -> None: ...

    @abstractmethod
    def kill_all(self) -> None:
        """SIGKILL every process of the task and return when none is left (bounded)."""

    @abstractmethod
    def oom_kills(self) -> int: ...

    @abstractmethod
    def memory_current(self) -> int | None: ...

    @abstractmethod
    def memory_peak(self) -> int | None: ...

    @abstractmethod
    def remove(self) -> None:
        """Release the group; only called once it is empty."""

    def terminate_all(self) -> None:
        self.signal_all(signal.SIGTERM)

    def pids_limit_hits(self) -> int:
        """How often a fork was refused by the task's pids limit (pids.events "max"); 0 where
        nothing counts it. A fork bomb shows here rather than in an exit code."""
        return 0

    def needs_watchdog(self) -> bool:
        """True where memory is limited by polling rather than by the kernel."""
        return False


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
    def close(self) -> None:
        """Remove the root when no task group is left in it."""
