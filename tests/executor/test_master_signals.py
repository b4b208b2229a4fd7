"""How the master counts stop requests: a stop asked for from inside (another process took over
the executor id) and an operator's SIGTERM are two different things, not two signals."""
from __future__ import annotations

import signal

from tests.executor.test_master_offer import a_master


def test_a_stop_requested_from_inside_then_one_sigterm_drains_instead_of_killing(tmp_path):
    """request_stop() wrote max(signals, 1) into the handler's counter: a SIGTERM after it
    counted as a second signal and killed the running tasks at once, skipping the drain (and a
    SIGTERM landing between its read and write was lost)."""
    master = a_master(tmp_path)
    master.request_stop()
    master._on_signal(signal.SIGTERM, None)
    master._wait_and_drain()  # nothing runs: it drains and returns at once
    assert master.stopping.is_set() and not master.kill_now.is_set()
    master._on_signal(signal.SIGTERM, None)
    assert master._signals == 2, "a second SIGTERM still kills at once"
