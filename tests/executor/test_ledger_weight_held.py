"""Weight the ledger must not hand out: a cancelled waiter takes none, even when its turn comes
and it fits; and an ended task whose processes would not die keeps its weight until they end.

The second is shown with a real TaskRunner and a real sandbox: the task leaves a process behind
which this test freezes (cgroup v1 freezer), so the sandbox's SIGKILL cannot end it and the
outcome names it in unkillable_pids (as tests/executor/test_runner_retires_the_uid_of_a_task_left_behind.py
does); thawed, the process dies of the SIGKILL it holds, and the weight goes back."""
from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from executor.ledger import Ledger
from executor.task_users import TaskUsers
from tests.executor.test_runner_retires_the_uid_of_a_task_left_behind import (  # noqa: F401 (fixtures)
    EXECUTION, freezer, run_task, short_kill_budget, task_sandbox)

HALF = Fraction(1, 2)


# a cancelled waiter ---------------------------------------------------------------------------
def test_a_cancelled_task_takes_no_weight_even_when_it_fits():
    ledger = Ledger("ingestion", 2)
    cancelled = threading.Event()
    cancelled.set()
    assert ledger.acquire("cancelled", HALF, cancelled=cancelled) is False
    assert ledger.snapshot().used == 0 and ledger.running_keys() == []


def test_a_cancelled_head_of_the_line_does_not_hold_back_the_task_behind_it():
    """A (weight 1.0) waits behind a running task; B (0.5) waits behind A. A is cancelled (the stop,
    or its run's cancel) at the moment the running task ends: B is admitted, and A takes nothing.
    Admitted, A held the whole ledger until its runner came to give it back, and B waited on it."""
    ledger = Ledger("ingestion", 2)
    assert ledger.acquire("running", HALF)
    a_cancelled, b_gives_up = threading.Event(), threading.Event()
    answers: dict[str, bool] = {}
    a = threading.Thread(target=lambda: answers.setdefault("a", ledger.acquire(
        "a", Fraction(1), cancelled=a_cancelled, poll_s=0.01)), daemon=True)
    a.start()
    while ledger.snapshot().waiting < 1:
        time.sleep(0.001)
    b = threading.Thread(target=lambda: answers.setdefault("b", ledger.acquire(
        "b", HALF, cancelled=b_gives_up, poll_s=0.01)), daemon=True)
    b.start()
    while ledger.snapshot().waiting < 2:
        time.sleep(0.001)
    with ledger._changed:  # both at once, as a wake-up finds them: A fits, and is cancelled
        a_cancelled.set()
        del ledger._running["running"]
        ledger._changed.notify_all()
    a.join(timeout=30)
    b.join(timeout=30)
    if b.is_alive():  # today's code: B waits behind A, which holds the whole ledger
        b_gives_up.set()
        b.join(timeout=30)
    assert answers == {"a": False, "b": True}, answers
    assert ledger.running_keys() == ["b"]


def test_a_waiter_admitted_before_its_cancel_keeps_its_place():
    ledger = Ledger("ingestion", 2)
    never = threading.Event()
    assert ledger.acquire("first", HALF, cancelled=never)
    assert ledger.running_keys() == ["first"]


# processes that would not die -------------------------------------------------------------------
def test_the_weight_of_a_task_whose_process_would_not_die_stays_taken_until_that_process_ends(tmp_path, task_sandbox,
                                                                                              freezer):
    ran = run_task(tmp_path, task_sandbox, TaskUsers.shared(None), freeze=freezer.freeze)
    outcome, ledger = ran.outcome, ran.ledger
    assert outcome.unkillable_pids, outcome
    snap = ledger.snapshot()
    assert snap.used == ledger.default_weight, "the weight went back while a process of the task still ran"
    assert ledger.running_keys() == [f"left-behind:{EXECUTION}"], "the execution's own key is free for a rerun"
    assert ledger.receive_capacity() == 1
    Path(freezer.path, "freezer.state").write_text("THAWED")  # the SIGKILL it holds ends it now
    deadline = time.monotonic() + 30
    while ledger.snapshot().used:
        assert time.monotonic() < deadline, "the weight was not given back once the process ended"
        time.sleep(0.05)
    assert ledger.running_keys() == [] and ledger.receive_capacity() == 2


def test_the_weight_of_a_task_that_ended_whole_goes_back_at_once(tmp_path, task_sandbox):
    ran = run_task(tmp_path, task_sandbox, TaskUsers.shared(None))
    outcome, ledger = ran.outcome, ran.ledger
    assert not outcome.unkillable_pids and not outcome.tree_left, outcome
    assert ledger.snapshot().used == 0 and ledger.running_keys() == []


def test_set_aside_keeps_the_weight_and_frees_the_key():
    ledger = Ledger("ingestion", 2)
    assert ledger.acquire("exe", HALF)
    aside = ledger.set_aside("exe")
    assert ledger.snapshot().used == HALF
    assert ledger.acquire("exe", HALF)  # its run queued again
    assert ledger.snapshot().used == 1
    ledger.release(aside)
    assert ledger.running_keys() == ["exe"]
    with pytest.raises(KeyError):
        ledger.set_aside("unknown")
