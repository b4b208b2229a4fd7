from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.ledger import Ledger
from vocabulary.weights import FULL, InvalidWeight, parse_weight


def admit_keys(ledger):
    return [a.key for a in ledger.admit()]


def test_four_workers_means_four_tasks_of_a_quarter():
    ledger = Ledger("ingestion", 4)
    for i in range(6):
        ledger.offer(f"t{i}", ledger.default_weight, None)
    assert admit_keys(ledger) == ["t0", "t1", "t2", "t3"]
    assert ledger.used == FULL
    ledger.release("t1")
    assert admit_keys(ledger) == ["t4"]


def test_a_weight_one_task_runs_alone():
    ledger = Ledger("ingestion", 4)
    ledger.offer("big", parse_weight("1.0", ledger.default_weight), None)
    ledger.offer("small", ledger.default_weight, None)
    assert admit_keys(ledger) == ["big"]
    assert admit_keys(ledger) == []
    ledger.release("big")
    assert admit_keys(ledger) == ["small"]


def test_two_halves_run_together_and_a_third_waits():
    ledger = Ledger("ingestion", 4)
    for key in ("a", "b", "c"):
        ledger.offer(key, parse_weight("0.5", ledger.default_weight), None)
    assert admit_keys(ledger) == ["a", "b"]
    assert ledger.waiting == 1


def test_three_thirds_fit_exactly():
    ledger = Ledger("ingestion", 3)
    for key in ("a", "b", "c"):
        ledger.offer(key, parse_weight("1/3", ledger.default_weight), None)
    assert admit_keys(ledger) == ["a", "b", "c"]
    assert ledger.free == 0
    float_ledger = Ledger("ingestion", 3)
    for key in ("a", "b", "c"):
        float_ledger.offer(key, float_ledger.default_weight, None)
    assert len(float_ledger.admit()) == 3


def test_a_waiting_big_task_is_not_starved_by_a_stream_of_small_ones():
    ledger = Ledger("ingestion", 4)
    for i in range(3):
        ledger.offer(f"small{i}", ledger.default_weight, None)
    admit_keys(ledger)
    ledger.offer("big", FULL, None)
    assert admit_keys(ledger) == []
    assert ledger.receive_capacity() == 0, "no more messages while a task waits"
    arrived = 3
    for finished in range(3):
        ledger.offer(f"small{arrived}", ledger.default_weight, None)  # keeps arriving
        arrived += 1
        ledger.release(f"small{finished}")
        admitted = admit_keys(ledger)
        assert "small3" not in admitted
    assert admitted == ["big"], "big starts as soon as the tasks running before it end"


def test_receive_capacity_is_what_can_be_admitted():
    ledger = Ledger("ingestion", 4)
    assert ledger.receive_capacity() == 4
    ledger.offer("a", Fraction(1, 2), None)
    ledger.admit()
    assert ledger.receive_capacity() == 2
    assert Ledger("monitors", 30).receive_capacity() == 10


@pytest.mark.parametrize("text", ["1.5", "0", "-0.25", "abc", "nan", "1/0"])
def test_invalid_weights_are_refused_with_the_value_named(text):
    with pytest.raises(InvalidWeight) as err:
        parse_weight(text, Fraction(1, 4))
    assert repr(text) in str(err.value)


def test_missing_weight_is_the_default():
    assert parse_weight(None, Fraction(1, 4)) == Fraction(1, 4)
    assert parse_weight("", Fraction(1, 4)) == Fraction(1, 4)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 16), st.lists(st.tuples(st.sampled_from(["offer", "release", "admit"]), st.integers(1, 8)), max_size=80))
def test_running_weight_never_exceeds_one_and_returns_to_zero(max_workers, operations):
    ledger = Ledger("ingestion", max_workers)
    counter = 0
    for op, n in operations:
        if op == "offer":
            ledger.offer(f"t{counter}", Fraction(n, 8), None)
            counter += 1
        elif op == "release" and ledger.running:
            ledger.release(ledger.running_keys()[n % ledger.running])
        else:
            ledger.admit()
        assert 0 <= ledger.used <= FULL
    while ledger.running or ledger.waiting:
        for key in ledger.running_keys():
            ledger.release(key)
        ledger.admit()
    assert ledger.used == 0
