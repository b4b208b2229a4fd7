"""The lease registry: the one record of what the master holds, changed only through checked
transitions, safe under concurrent runners, the extender and the heartbeat."""
from __future__ import annotations

import threading
from fractions import Fraction

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from executor.controlplane_client import ControlPlaneError
from executor.leases import ALLOWED, CLAIMED_STATES, TERMINAL, IllegalTransition, Leases, QueueRef, State
from executor.services import CancelWatch


def ref(message_id: str = "m1", handle: str = "h1", task_class: str = "ingestion") -> QueueRef:
    return QueueRef(task_class=task_class, message_id=message_id, receipt_handle=handle, receive_count=1,
                    first_received_ms=0)


def test_a_lease_walks_its_life_and_leaves_the_registry_at_the_end():
    leases = Leases()
    lease, what = leases.receive("exe_1", ref())
    assert what == "new" and leases.claimed_ids() == []
    assert leases.listed_ids() == ["exe_1"], "a claim may be on its way: the heartbeat lists it"
    assert leases.listed_ids(last=True) == [], "the last heartbeat lists only what started"
    for state in (State.CLAIMED, State.ADMITTED, State.RUNNING, State.REPORTING):
        leases.move(lease, state)
        assert leases.claimed_ids() == ["exe_1"]
        assert leases.listed_ids(last=True) == (["exe_1"] if state in (State.RUNNING, State.REPORTING) else [])
    leases.move(lease, State.ACKED)
    assert len(leases) == 0


def test_our_own_message_back_refreshes_the_handle_and_another_message_is_a_duplicate():
    leases = Leases()
    lease, _ = leases.receive("exe_1", ref("m1", "h1"))
    assert leases.receive("exe_1", ref("m1", "h2")) == (None, "refreshed")
    assert leases.current_message(lease).receipt_handle == "h2", "only the latest handle surely deletes"
    assert leases.receive("exe_1", ref("m2", "h9")) == (None, "duplicate")


def test_another_message_takes_the_place_of_one_sqs_refused_and_only_of_the_current_receipt():
    leases = Leases()
    lease, _ = leases.receive("exe_1", ref("m1", "h1"))
    leases.refused("exe_1", "h0")  # an older receipt of ours, refused: says nothing of the current one
    assert leases.receive("exe_1", ref("m2", "h9")) == (None, "duplicate")
    leases.refused("exe_1", "h1")
    assert leases.receive("exe_1", ref("m2", "h9")) == (None, "replaced")
    assert leases.current_message(lease).message_id == "m2" and not lease.message_refused
    assert leases.receive("exe_1", ref("m3", "h5")) == (None, "duplicate"), "the new message is not refused"
    leases.refused("exe_1", "h9")
    assert leases.receive("exe_1", ref("m2", "h10")) == (None, "refreshed")
    assert not lease.message_refused, "a new receipt of the same message is held again"


@pytest.mark.parametrize("start, illegal", [(State.RECEIVED, State.RUNNING), (State.RECEIVED, State.REPORTING),
                                            (State.CLAIMED, State.ACKED), (State.RUNNING, State.RELEASED)])
def test_a_transition_from_a_state_that_does_not_allow_it_is_refused(start, illegal):
    leases = Leases()
    lease, _ = leases.receive("exe_1", ref())
    path = {State.RECEIVED: [], State.CLAIMED: [State.CLAIMED], State.RUNNING: [State.CLAIMED, State.ADMITTED, State.RUNNING]}
    for state in path[start]:
        leases.move(lease, state)
    with pytest.raises(IllegalTransition):
        leases.move(lease, illegal)
    assert lease.state is start


def test_pending_counts_what_was_received_on_a_queue_and_not_yet_admitted():
    leases = Leases()
    a, _ = leases.receive("a", ref("ma"))
    leases.receive("b", ref("mb"))
    leases.receive("c", ref("mc", task_class="monitors"))
    assert leases.pending("ingestion") == 2 and leases.pending("monitors") == 1
    leases.move(a, State.CLAIMED)
    leases.move(a, State.ADMITTED)
    assert leases.pending("ingestion") == 1


def test_reporting_names_the_executions_of_a_ledger_whose_result_is_being_reported():
    leases = Leases()
    held = {}
    for name, task_class in (("a", "ingestion"), ("b", "ingestion"), ("c", "monitors")):
        held[name], _ = leases.receive(name, ref(f"m{name}"))
        leases.move(held[name], State.CLAIMED)
        leases.move(held[name], State.ADMITTED, weight=Fraction(1, 4), task_class=task_class)
        leases.move(held[name], State.RUNNING)
    assert leases.reporting("ingestion") == set()
    leases.move(held["a"], State.REPORTING)
    leases.move(held["c"], State.REPORTING)
    assert leases.reporting("ingestion") == {"a"} and leases.reporting("monitors") == {"c"}
    leases.move(held["a"], State.ACKED)
    assert leases.reporting("ingestion") == set()


def test_only_a_claimed_unstarted_run_is_marked_cancelled_and_watched_for_it():
    """CancelWatch asks for the cancels of the runs no runner asks for (claimed, not started)."""
    leases = Leases()
    held = {}
    for name, states in (("received", ()), ("claimed", (State.CLAIMED,)), ("admitted", (State.CLAIMED, State.ADMITTED)),
                         ("running", (State.CLAIMED, State.ADMITTED, State.RUNNING))):
        held[name], _ = leases.receive(name, ref(f"m-{name}"))
        for state in states:
            leases.move(held[name], state)
    assert leases.unstarted_claims() == ["admitted", "claimed"]
    assert [name for name in held if leases.ask_cancel(name)] == ["claimed", "admitted"]
    assert not leases.ask_cancel("claimed"), "marked once"
    assert [name for name, lease in held.items() if lease.cancel_asked] == ["claimed", "admitted"]
    assert not leases.ask_cancel("unknown")


class CancelsAnswered:
    def __init__(self, answers: dict) -> None:
        self.answers, self.asked = answers, []

    def cancel_requested(self, execution_id: str) -> bool:
        self.asked.append(execution_id)
        if isinstance(self.answers[execution_id], Exception):
            raise self.answers[execution_id]
        return self.answers[execution_id]


def test_the_cancel_watch_marks_cancelled_runs_wakes_the_waits_once_and_outlives_an_outage():
    leases = Leases()
    for name in ("a", "b", "c"):
        lease, _ = leases.receive(name, ref(f"m-{name}"))
        leases.move(lease, State.CLAIMED)
    client = CancelsAnswered({"a": True, "b": ControlPlaneError("control plane unreachable"), "c": False})
    wakes = []
    watch = CancelWatch(client, leases, lambda: wakes.append(1), interval_s=3.0)
    assert watch.step() == 3.0
    assert client.asked == ["a", "b", "c"] and len(wakes) == 1
    assert [lease.execution_id for lease in leases.all() if lease.cancel_asked] == ["a"]
    client.answers["b"] = True
    watch.step()
    assert [lease.execution_id for lease in leases.all() if lease.cancel_asked] == ["a", "b"] and len(wakes) == 2
    watch.step()
    assert len(wakes) == 2, "nothing newly cancelled: no wake"


class LeasesFromThreads(RuleBasedStateMachine):
    """Every move on its own thread, as each runner moves its own lease while the heartbeat and
    the extender read: the registry holds exactly the non-terminal leases, in legal states."""

    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        self.leases = Leases()
        self.model: dict[str, State] = {}
        self.counter = 0

    @rule(target=held)
    def receive(self):
        self.counter += 1
        execution_id = f"exe_{self.counter}"
        lease, what = self.leases.receive(execution_id, ref(f"m{self.counter}"))
        assert what == "new"
        self.model[execution_id] = State.RECEIVED
        return lease

    @rule(lease=held, to=st.sampled_from(list(State)))
    def move_from_a_thread(self, lease, to):
        outcome: list[BaseException | None] = []

        def move() -> None:
            try:
                self.leases.move(lease, to)
                outcome.append(None)
            except IllegalTransition as exc:
                outcome.append(exc)

        readers = [threading.Thread(target=self.leases.claimed_ids), threading.Thread(target=self.leases.counts)]
        mover = threading.Thread(target=move)
        for thread in (mover, *readers):
            thread.start()
        for thread in (mover, *readers):
            thread.join(5)
        current = self.model.get(lease.execution_id)
        legal = current is not None and to in ALLOWED.get(current, frozenset())
        assert (outcome[0] is None) == legal
        if legal:
            if to in TERMINAL:
                del self.model[lease.execution_id]
            else:
                self.model[lease.execution_id] = to

    @invariant()
    def registry_matches_the_model(self):
        assert {lease.execution_id: lease.state for lease in self.leases.all()} == self.model
        assert self.leases.claimed_ids() == sorted(e for e, s in self.model.items() if s in CLAIMED_STATES)


TestLeasesFromThreads = LeasesFromThreads.TestCase
TestLeasesFromThreads.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
