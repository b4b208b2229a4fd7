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

A range is shared by both task classes, but each class has uids kept for it (issue 13: monitors
are never starved by ingestion). Without that, ingestion runs of a small weight (0.05 admits
twenty at once) could hold every uid of the range while the monitors' own ledger stood empty,
and each monitor check would wait for an ingestion run to end. A class may take a uid beyond its
reserve only while the uids still owed to the other classes stay free; the reserves are the
ledgers' max_workers (the tasks each runs at once at its default weight), scaled down in
proportion when the range is smaller than their sum, and never below one uid per class.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Mapping

from sandbox import TaskUser

from .ledger import StopFlag

# 65536 uids is a whole user namespace's worth; more would be a typo.
MAX_RANGE = 1 << 16


def split_range(size: int, wants: Mapping[str, int]) -> dict[str, int]:
    """The uids kept for each task class out of SIZE: what each WANTS when the range holds them
    all, else shares in proportion (largest remainders first), at least one each. A range smaller
    than the number of classes cannot keep one for each: resolve_task_user refuses it."""
    if size < len(wants):
        raise ValueError(f"{size} uid(s) cannot keep one for each of {len(wants)} task classes")
    if sum(wants.values()) <= size:
        return dict(wants)
    total = sum(wants.values())
    exact = {name: size * want / total for name, want in wants.items()}
    shares = {name: max(1, int(value)) for name, value in exact.items()}
    by_remainder = sorted(wants, key=lambda name: exact[name] - int(exact[name]), reverse=True)
    for name in by_remainder:
        if sum(shares.values()) >= size:
            break
        shares[name] += 1
    while sum(shares.values()) > size:  # the minimum of one pushed the sum over: take from the largest
        largest = max(shares, key=shares.__getitem__)
        shares[largest] -= 1
    return shares


RETIRED = "retired:"  # the key prefix of a uid held for good by a task whose processes would not die


class TaskUsers:
    """Hands out task users per execution. SHARED: every task gets the same user (or None, the
    executor's own); otherwise each holder gets a distinct one, and acquire waits when the
    class may take none (the range is smaller than the number of tasks the ledgers admit at
    once, or the uids left are kept for the other class)."""

    def __init__(self, users: list[TaskUser | None], *, exclusive: bool, reserves: Mapping[str, int] | None = None) -> None:
        if not users:
            raise ValueError("no task users to hand out")
        self.exclusive = exclusive
        self.reserves = dict(reserves or {})
        if sum(self.reserves.values()) > len(users):
            raise ValueError(f"reserves {self.reserves} exceed the {len(users)} uids")
        self._free: deque[TaskUser | None] = deque(users)
        self._held: dict[str, tuple[TaskUser | None, str]] = {}  # execution id -> (user, task class)
        self._changed = threading.Condition()
        self.size = len(users)
        # The range never changes: its bounds are read here once. describe() is called from the
        # heartbeat and from runners while others take and give back uids; walking the free list
        # and the held map for them, unlocked, raised "changed size during iteration".
        uids = [user.uid for user in users if user is not None]
        self._uid_bounds = (min(uids), max(uids)) if uids else None

    @classmethod
    def shared(cls, user: TaskUser | None) -> TaskUsers:
        return cls([user], exclusive=False)

    @classmethod
    def uid_range(cls, first: int, last: int, wants: Mapping[str, int] | None = None) -> TaskUsers:
        """FIRST..LAST, one uid per running task; WANTS (task class -> tasks at once) sets the
        uids kept for each class (split_range)."""
        size = last - first + 1
        return cls([TaskUser(uid, uid) for uid in range(first, last + 1)], exclusive=True,
                   reserves=split_range(size, wants) if wants else None)

    def acquire(self, execution_id: str, task_class: str, cancelled: StopFlag, *,
                poll_s: float = 0.5) -> TaskUser | None:
        """The user EXECUTION_ID (a task of TASK_CLASS) runs as. Raises Cancelled when CANCELLED
        is set while the class may take no uid."""
        with self._changed:
            if execution_id in self._held:
                return self._held[execution_id][0]
            if not self.exclusive:
                self._held[execution_id] = (self._free[0], task_class)
                return self._free[0]
            while not self._may_take(task_class):
                if cancelled.is_set():
                    raise Cancelled(execution_id)
                self._changed.wait(poll_s)
            user = self._free.popleft()
            self._held[execution_id] = (user, task_class)
            return user

    def release(self, execution_id: str) -> None:
        """EXECUTION_ID's task has ended and nothing of it runs; releasing twice is harmless."""
        with self._changed:
            user, _ = self._held.pop(execution_id, (None, ""))
            if self.exclusive and user is not None:
                self._free.append(user)
                self._changed.notify_all()  # a waiter of either class may now take it

    def retire(self, execution_id: str) -> TaskUser | None:
        """EXECUTION_ID's task has ended, but processes of it would not die (stuck in the kernel):
        its uid is never handed out again, since a task given it could signal them or read what
        they hold, until the executor restarts (its start-up sweep ends them). It stays counted
        as held by its class. Returns the user (None if EXECUTION_ID held none)."""
        with self._changed:
            held = self._held.pop(execution_id, None)
            if held is None:
                return None
            if self.exclusive:
                self._held[RETIRED + execution_id] = held
            return held[0]

    def _owed(self, task_class: str) -> int:
        """Free uids kept for the classes other than TASK_CLASS (below their reserve)."""
        held = Counter(held_by for _, held_by in self._held.values())
        return sum(max(0, reserve - held[name]) for name, reserve in self.reserves.items() if name != task_class)

    def _may_take(self, task_class: str) -> bool:
        """Whether a task of TASK_CLASS may take a uid now. Invariant: the free uids always cover
        what every class is still owed, so a class below its reserve always may."""
        return len(self._free) > self._owed(task_class)

    def all_held(self, task_class: str) -> bool:
        """Whether a new task of TASK_CLASS would wait for a uid now (for the log; acquire decides)."""
        with self._changed:
            return self.exclusive and not self._may_take(task_class)

    def held(self) -> dict[str, TaskUser | None]:
        with self._changed:
            return {execution_id: user for execution_id, (user, _) in self._held.items()}

    def describe(self) -> str:
        if self.exclusive and self._uid_bounds is not None:
            first, last = self._uid_bounds
            kept = self.kept()
            return f"each task gets a uid of its own from {first}-{last} ({self.size} uids{'; ' + kept if kept else ''})"
        user = self._free[0]
        return f"uid {user.uid}, gid {user.gid}" if user else "the executor's own user"

    def kept(self) -> str:
        """The uids kept for each task class, in words ("" without reserves)."""
        return ", ".join(f"{count} kept for {name}" for name, count in sorted(self.reserves.items()))


class Cancelled(Exception):
    """The executor stopped while a task waited for a free uid."""
