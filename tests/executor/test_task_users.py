"""Who tasks run as: DATAHUB_EXECUTOR_TASK_USER resolved, and a uid range handed out so that no
two running tasks share a uid (tests/e2e/test_task_isolation_end_to_end.py runs two for real)."""
from __future__ import annotations

import grp
import os
import pwd
import threading

import pytest

from executor.isolation import TaskUserError, resolve_task_user
from executor.task_users import Cancelled, TaskUsers, split_range
from sandbox import TaskUser
from vocabulary.tasks import INGESTION, MONITORS

WANTS = {INGESTION: 4, MONITORS: 10}


class SwitchingSandbox:
    """What resolve_task_user asks of a sandbox: whether it can switch users."""

    def __init__(self, can_switch: bool = True) -> None:
        self.can_switch = can_switch

    def isolation_support(self) -> dict:
        return {"task_user": "available: test" if self.can_switch else "not available: test"}


def test_a_range_gives_each_holder_its_own_uid_and_reuses_the_longest_idle_first():
    users = TaskUsers.uid_range(3_000_000, 3_000_002)
    never = threading.Event()
    a, b, c = (users.acquire(e, INGESTION, never) for e in ("a", "b", "c"))
    assert len({a, b, c}) == 3 and all(u.gid == u.uid for u in (a, b, c))
    assert users.acquire("a", INGESTION, never) == a, "asking again is the same uid"
    users.release("b")
    users.release("b")
    users.release("a")
    assert users.acquire("d", INGESTION, never) == b and users.acquire("e", INGESTION, never) == a


def test_a_full_range_waits_until_a_uid_is_released_or_the_executor_stops():
    users = TaskUsers.uid_range(3_000_000, 3_000_000)
    never, stopping = threading.Event(), threading.Event()
    first = users.acquire("a", INGESTION, never)
    assert users.all_held(INGESTION)
    got: list[TaskUser | None] = []
    waiter = threading.Thread(target=lambda: got.append(users.acquire("b", INGESTION, never, poll_s=0.01)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and got == []
    users.release("a")
    waiter.join(5)
    assert got == [first]
    stopping.set()
    with pytest.raises(Cancelled):
        users.acquire("c", INGESTION, stopping, poll_s=0.01)


def test_many_threads_never_share_a_uid():
    users = TaskUsers.uid_range(3_000_000, 3_000_003)
    never = threading.Event()
    holders: dict[int, str] = {}
    clashes: list[tuple] = []
    guard = threading.Lock()

    def work(name: str) -> None:
        for round_ in range(200):
            execution = f"{name}-{round_}"
            user = users.acquire(execution, INGESTION, never, poll_s=0.001)
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
    assert users.acquire("a", INGESTION, never) == users.acquire("b", INGESTION, never) == user
    assert not users.all_held(INGESTION)


def test_the_setting_takes_a_name_a_uid_a_range_or_none():
    sandbox = SwitchingSandbox()
    nobody = pwd.getpwnam("nobody")
    assert resolve_task_user("nobody", sandbox, WANTS).users.acquire("x", INGESTION, threading.Event()) == TaskUser(nobody.pw_uid,
                                                                                                  nobody.pw_gid)
    ranged = resolve_task_user("3000000-3000015", sandbox, WANTS)
    assert ranged.users.exclusive and ranged.users.size == 16
    assert "3000000-3000015" in ranged.description
    assert resolve_task_user("none", sandbox, WANTS).users.acquire("x", INGESTION, threading.Event()) is None
    unable = resolve_task_user("3000000-3000015", SwitchingSandbox(can_switch=False), WANTS)
    assert unable.users.acquire("x", INGESTION, threading.Event()) is None and "not available" in unable.description


@pytest.mark.parametrize("value, says", [
    ("3000010-3000000", "FIRST <= LAST"),
    ("0-10", "0 < FIRST"),
    ("3000000-3100000", "at most 65536"),
])
def test_a_bad_range_is_refused_saying_why(value, says):
    with pytest.raises(TaskUserError, match=says):
        resolve_task_user(value, SwitchingSandbox(), WANTS)


def test_a_range_holding_an_account_a_group_or_the_executor_is_refused():
    nobody = pwd.getpwnam("nobody")
    with pytest.raises(TaskUserError, match=f"uid {nobody.pw_uid} belongs to user 'nobody'"):
        resolve_task_user(f"{nobody.pw_uid - 1}-{nobody.pw_uid}", SwitchingSandbox(), WANTS)
    own = os.geteuid()
    if own != 0:  # root's uid 0 is outside every range (0 < FIRST)
        with pytest.raises(TaskUserError, match="executor's own uid"):
            resolve_task_user(f"{own}-{own}", SwitchingSandbox(), WANTS)
    group = next(g for g in grp.getgrall() if g.gr_gid > 0 and not any(p.pw_uid == g.gr_gid for p in pwd.getpwall()))
    with pytest.raises(TaskUserError, match=f"gid {group.gr_gid} belongs to group"):
        resolve_task_user(f"{group.gr_gid}-{group.gr_gid}", SwitchingSandbox(), WANTS)


def test_ingestion_holding_the_free_uids_leaves_the_monitors_theirs():
    """Issue 13: monitors are never starved by ingestion. Twenty ingestion runs of weight 0.05 are
    admitted at once by their ledger; on a range shared without reserves they held every uid and
    each monitor check waited for one of them to end, while the monitors' ledger stood empty."""
    users = TaskUsers.uid_range(3_000_000, 3_000_013, WANTS)
    assert users.reserves == WANTS, "a range of 14 keeps each class its ledger's size"
    never = threading.Event()
    ingestion = [users.acquire(f"ingest-{i}", INGESTION, never) for i in range(4)]
    assert users.all_held(INGESTION), "ingestion has taken its own four; the other ten are the monitors'"
    assert not users.all_held(MONITORS)
    monitors = [users.acquire(f"monitor-{i}", MONITORS, never) for i in range(10)]
    assert len({*ingestion, *monitors}) == 14 and users.all_held(MONITORS)
    users.release("monitor-3")
    assert users.all_held(INGESTION), "a monitor's uid freed is still kept for the monitors"
    assert users.acquire("monitor-10", MONITORS, never) == monitors[3]


def test_beyond_its_reserve_a_class_takes_what_no_other_class_is_owed():
    users = TaskUsers.uid_range(3_000_000, 3_000_019, WANTS)  # 20 uids: 4 + 10 kept, 6 for either
    never = threading.Event()
    held = [users.acquire(f"ingest-{i}", INGESTION, never) for i in range(10)]
    assert users.all_held(INGESTION), "4 of its own and the 6 nobody is owed"
    assert [users.acquire(f"monitor-{i}", MONITORS, never) for i in range(10)] and users.all_held(MONITORS)
    for i in range(10):
        users.release(f"ingest-{i}")
    again = [users.acquire(f"monitor-{i}", MONITORS, never) for i in range(10, 16)]
    assert set(again) <= set(held) and users.all_held(MONITORS), "monitors beyond theirs take the shared 6 only"
    assert not users.all_held(INGESTION)


def test_many_threads_of_both_classes_keep_each_class_its_reserve():
    """Random acquires and releases of both classes from eight threads: whenever a class holds
    fewer than its reserve, a uid is free for it, and no uid is ever held twice."""
    users = TaskUsers.uid_range(3_000_000, 3_000_006, WANTS)  # 7 uids: shares 2 and 5
    assert users.reserves == {INGESTION: 2, MONITORS: 5}
    never = threading.Event()
    broken: list[str] = []

    def work(name: str, task_class: str) -> None:
        for round_ in range(300):
            execution = f"{name}-{round_}"
            users.acquire(execution, task_class, never, poll_s=0.001)
            with users._changed:
                held = [u for u, _ in users._held.values()]
                if len(held) != len(set(held)):
                    broken.append("a uid held twice")
                for other, reserve in users.reserves.items():
                    held_by_other = sum(1 for _, held_by in users._held.values() if held_by == other)
                    if held_by_other < reserve and users.all_held(other):
                        broken.append(f"{other} below its reserve and no uid for it")
            users.release(execution)

    threads = [threading.Thread(target=work, args=(f"t{i}", (INGESTION, MONITORS)[i % 2])) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert broken == [] and users.held() == {}


@pytest.mark.parametrize("size, shares", [
    (14, {INGESTION: 4, MONITORS: 10}),
    (32, {INGESTION: 4, MONITORS: 10}),
    (7, {INGESTION: 2, MONITORS: 5}),
    (2, {INGESTION: 1, MONITORS: 1}),
    (3, {INGESTION: 1, MONITORS: 2}),
])
def test_a_range_smaller_than_both_ledgers_is_shared_in_proportion(size, shares):
    assert split_range(size, WANTS) == shares


def test_a_range_of_one_uid_is_refused_as_it_cannot_keep_one_for_each_class():
    with pytest.raises(TaskUserError, match="at least 2 uids, one kept for each task class"):
        resolve_task_user("3000000-3000000", SwitchingSandbox(), WANTS)
    assert "4 kept for ingestion, 10 kept for monitors" in resolve_task_user("3000000-3000031", SwitchingSandbox(),
                                                                             WANTS).description


def test_the_uid_of_a_task_whose_processes_would_not_die_is_never_handed_out_again():
    """Its processes are stuck in the kernel past the kill budget; the uid went back to the free
    list and the next task, running as it, could signal them or read what they hold."""
    users = TaskUsers.uid_range(40000, 40001)
    stop = threading.Event()
    stuck = users.acquire("exe_stuck", INGESTION, stop)
    assert users.retire("exe_stuck") == stuck
    users.release("exe_stuck")  # the runner's usual release afterwards changes nothing
    other = users.acquire("exe_next", INGESTION, stop)
    assert other != stuck
    users.release("exe_next")
    stop.set()
    for index in range(3):
        assert users.acquire(f"exe_{index}", INGESTION, threading.Event()) != stuck
        users.release(f"exe_{index}")
    assert users.all_held(INGESTION) is False and len(users.held()) == 1, "one uid left, still counted as held"


def test_describing_the_range_while_runners_take_and_give_back_uids_never_fails():
    """The heartbeat describes the task users at every beat, and a runner does when no uid is
    free, while other runners take and give back uids; describe() walked the free list and the
    held map unlocked and raised "changed size during iteration": a lost beat, or a runner that
    gave its execution back as failed."""
    import sys

    users = TaskUsers.uid_range(40000, 42047, {INGESTION: 1024, MONITORS: 1024})  # long walks: the race shows
    stop, errors = threading.Event(), []
    for held in range(1500):  # a long held map to walk: the race shows within the test's seconds
        users.acquire(f"exe_held_{held}", INGESTION if held % 2 else MONITORS, threading.Event())

    def churn(n: int) -> None:
        cancelled, turn = threading.Event(), 0
        while not stop.is_set():
            execution_id = f"exe_{n}_{turn}"
            users.acquire(execution_id, INGESTION if n % 2 else MONITORS, cancelled)
            users.release(execution_id)
            turn += 1

    def describe() -> None:
        while not stop.is_set():
            try:
                assert users.describe().startswith("each task gets a uid of its own from 40000-42047")
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(exc))
                stop.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch often, as on a busy master
    threads = [threading.Thread(target=churn, args=(n,)) for n in range(6)] + [threading.Thread(target=describe)]
    try:
        for thread in threads:
            thread.start()
        stop.wait(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(interval)
    assert errors == []
