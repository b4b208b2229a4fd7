"""Who tasks run as: DATAHUB_EXECUTOR_TASK_USER resolved, and a uid range handed out so that no
two running tasks share a uid (tests/e2e/test_task_isolation_end_to_end.py runs two for real)."""
from __future__ import annotations

import grp
import os
import pwd
import threading

import pytest

from executor.isolation import TaskUserError, resolve_task_user
from executor.task_users import Cancelled, TaskUsers
from sandbox import TaskUser


class SwitchingSandbox:
    """What resolve_task_user asks of a sandbox: whether it can switch users."""

    def __init__(self, can_switch: bool = True) -> None:
        self.can_switch = can_switch

    def isolation_support(self) -> dict:
        return {"task_user": "available: test" if self.can_switch else "not available: test"}


def test_a_range_gives_each_holder_its_own_uid_and_reuses_the_longest_idle_first():
    users = TaskUsers.uid_range(3_000_000, 3_000_002)
    never = threading.Event()
    a, b, c = (users.acquire(e, never) for e in ("a", "b", "c"))
    assert len({a, b, c}) == 3 and all(u.gid == u.uid for u in (a, b, c))
    assert users.acquire("a", never) == a, "asking again is the same uid"
    users.release("b")
    users.release("b")
    users.release("a")
    assert users.acquire("d", never) == b and users.acquire("e", never) == a


def test_a_full_range_waits_until_a_uid_is_released_or_the_executor_stops():
    users = TaskUsers.uid_range(3_000_000, 3_000_000)
    never, stopping = threading.Event(), threading.Event()
    first = users.acquire("a", never)
    assert users.all_held()
    got: list[TaskUser | None] = []
    waiter = threading.Thread(target=lambda: got.append(users.acquire("b", never, poll_s=0.01)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and got == []
    users.release("a")
    waiter.join(5)
    assert got == [first]
    stopping.set()
    with pytest.raises(Cancelled):
        users.acquire("c", stopping, poll_s=0.01)


def test_many_threads_never_share_a_uid():
    users = TaskUsers.uid_range(3_000_000, 3_000_003)
    never = threading.Event()
    holders: dict[int, str] = {}
    clashes: list[tuple] = []
    guard = threading.Lock()

    def work(name: str) -> None:
        for round_ in range(200):
            execution = f"{name}-{round_}"
            user = users.acquire(execution, never, poll_s=0.001)
            with guard:
                if user.uid in holders:
                    clashes.append((user.uid, holders[user.uid], execution))
                holders[user.uid] = execution
            with guard:
                del holders[user.uid]
            users.release(execution)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clashes == [] and users.held() == {}


def test_a_shared_user_is_everyones():
    user = TaskUser(65534, 65534)
    users = TaskUsers.shared(user)
    never = threading.Event()
    assert users.acquire("a", never) == users.acquire("b", never) == user
    assert not users.all_held()


def test_the_setting_takes_a_name_a_uid_a_range_or_none():
    sandbox = SwitchingSandbox()
    nobody = pwd.getpwnam("nobody")
    assert resolve_task_user("nobody", sandbox).users.acquire("x", threading.Event()) == TaskUser(nobody.pw_uid,
                                                                                                  nobody.pw_gid)
    ranged = resolve_task_user("3000000-3000015", sandbox)
    assert ranged.users.exclusive and ranged.users.size == 16
    assert "3000000-3000015" in ranged.description
    assert resolve_task_user("none", sandbox).users.acquire("x", threading.Event()) is None
    unable = resolve_task_user("3000000-3000015", SwitchingSandbox(can_switch=False))
    assert unable.users.acquire("x", threading.Event()) is None and "not available" in unable.description


@pytest.mark.parametrize("value, says", [
    ("3000010-3000000", "FIRST <= LAST"),
    ("0-10", "0 < FIRST"),
    ("3000000-3100000", "at most 65536"),
])
def test_a_bad_range_is_refused_saying_why(value, says):
    with pytest.raises(TaskUserError, match=says):
        resolve_task_user(value, SwitchingSandbox())


def test_a_range_holding_an_account_a_group_or_the_executor_is_refused():
    nobody = pwd.getpwnam("nobody")
    with pytest.raises(TaskUserError, match=f"uid {nobody.pw_uid} belongs to user 'nobody'"):
        resolve_task_user(f"{nobody.pw_uid - 1}-{nobody.pw_uid}", SwitchingSandbox())
    own = os.geteuid()
    if own != 0:  # root's uid 0 is outside every range (0 < FIRST)
        with pytest.raises(TaskUserError, match="executor's own uid"):
            resolve_task_user(f"{own}-{own}", SwitchingSandbox())
    group = next(g for g in grp.getgrall() if g.gr_gid > 0 and not any(p.pw_uid == g.gr_gid for p in pwd.getpwall()))
    with pytest.raises(TaskUserError, match=f"gid {group.gr_gid} belongs to group"):
        resolve_task_user(f"{group.gr_gid}-{group.gr_gid}", SwitchingSandbox())
