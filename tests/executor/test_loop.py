"""services.Loop, the master's long-lived threads (intakes, acks, heartbeat, visibility)."""
from __future__ import annotations

import threading

from executor.services import Loop


def test_a_loop_that_has_stopped_can_be_asked_whether_it_is_alive_and_joined():
    """Loop kept its stop event in `_stop`, the name of a method Thread calls once the thread
    has ended: is_alive() and join() on an ended Loop raised TypeError ('Event' object is not
    callable), which killed the master's drain as soon as it looked at a finished thread."""
    stop = threading.Event()
    turns = []

    def step() -> float:
        turns.append(1)
        stop.set()
        return 0

    loop = Loop("test-loop", step, stop)
    loop.start()
    loop.join(timeout=10)
    assert not loop.is_alive() and turns == [1]
