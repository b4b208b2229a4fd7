"""Which user each running task is: one shared user, or a uid of its own from a range.

With one shared task user, two tasks running at once are the same uid to the kernel: one can
read the other's /proc/<pid>/environ (its ingest token, its resolved secrets), signal or ptrace
it, and open the files in its work directory. DATAHUB_EXECUTOR_TASK_USER=FIRST-LAST gives every
running task a uid (and a group of the same number) no other running task has, so those are
refused by the kernel's ordinary permission checks.

A uid is held from admission (before the virtualenv build and the work directory, which it
owns) until the task's cgroup is empty and its work directory is gone; it then goes to the back
of the free list, so the uid a new task gets is the one idle the longest. Files a task left
outside its work directory (a world-writable directory, when DATAHUB_EXECUTOR_TASK_PRIVATE_TMP
is off) stay readable to the next task with that uid: private /tmp is what removes them.
"""
from __future__ import annotations

import threading
from collections import deque

from sandbox import TaskUser

# 65536 uids is a whole user namespace's worth; more would be a typo.
MAX_RANGE = 1 << 16


class TaskUsers:
    """Hands out task users per execution. SHARED: every task gets the same user (or None, the
    executor's own); otherwise each holder gets a distinct one, and acquire waits when all are
    held (the range is smaller than the number of tasks the ledgers admit at once)."""

    def __init__(self, users: list[TaskUser | None], *, exclusive: bool) -> None:
        if not users:
            raise ValueError("no task users to hand out")
        self.exclusive = exclusive
        self._free: deque[TaskUser | None] = deque(users)
        self._held: dict[str, TaskUser | None] = {}
        self._changed = threading.Condition()
        self.size = len(users)

    @classmethod
    def shared(cls, user: TaskUser | None) -> TaskUsers:
        return cls([user], exclusive=False)

    @classmethod
    def uid_range(cls, first: int, last: int) -> TaskUsers:
        return cls([TaskUser(uid, uid) for uid in range(first, last + 1)], exclusive=True)

    def acquire(self, execution_id: str, cancelled: threading.Event, *, poll_s: float = 0.5) -> TaskUser | None:
        """The user EXECUTION_ID runs as. Raises Cancelled when CANCELLED is set while every
        uid of the range is held."""
        with self._changed:
            if execution_id in self._held:
                return self._held[execution_id]
            if not self.exclusive:
                self._held[execution_id] = self._free[0]
                return self._free[0]
            while not self._free:
                if cancelled.is_set():
                    raise Cancelled(execution_id)
                self._changed.wait(poll_s)
            user = self._free.popleft()
            self._held[execution_id] = user
            return user

    def release(self, execution_id: str) -> None:
        """EXECUTION_ID's task has ended and nothing of it runs; releasing twice is harmless."""
        with self._changed:
            user = self._held.pop(execution_id, None)
            if self.exclusive and user is not None:
                self._free.append(user)
                self._changed.notify()

    def all_held(self) -> bool:
        """Whether a new task would wait for a uid now (for the log; acquire decides)."""
        with self._changed:
            return self.exclusive and not self._free

    def held(self) -> dict[str, TaskUser | None]:
        with self._changed:
            return dict(self._held)

    def describe(self) -> str:
        if self.exclusive:
            first, last = self._bounds()
            return f"each task gets a uid of its own from {first}-{last} ({self.size} uids)"
        user = self._free[0]
        return f"uid {user.uid}, gid {user.gid}" if user else "the executor's own user"

    def _bounds(self) -> tuple[int, int]:
        uids = [u.uid for u in list(self._free) + list(self._held.values()) if u is not None]
        return min(uids), max(uids)


class Cancelled(Exception):
    """The executor stopped while a task waited for a free uid."""
