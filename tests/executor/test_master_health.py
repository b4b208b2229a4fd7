"""Master.health with the master's real loop threads: a loop that died fails /health whether the
executor is serving or draining; a loop that ended because it was told to does not."""
from __future__ import annotations

import threading

import pytest

from executor.master import Master
from executor.services import Loop
from executor.settings import load_settings


class Killed(BaseException):
    """What the loops do not catch (they survive every Exception)."""


def ended(loop: Loop) -> Loop:
    loop.start()
    loop.join(timeout=10)
    assert not loop.is_alive()
    return loop


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("state", ["ACTIVE", "DRAINING"])
def test_a_loop_thread_that_died_fails_health_while_serving_and_while_draining(tmp_path, state):
    """Health looked at the threads only while ACTIVE: during a drain (up to the drain timeout)
    a dead visibility extender or acknowledger went unreported, while running tasks' messages
    lapsed or stayed undeleted."""
    master = Master(load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "unused",
                                   "DATAHUB_EXECUTOR_POOL_ID": "pool", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)}))
    master.state = state
    if state == "DRAINING":
        master.stopping.set()
    stop_loops = threading.Event()

    def dies() -> float:
        raise Killed()

    intake = Loop("intake-ingestion", lambda: 0.01, master.stopping)
    master._threads = [intake, ended(Loop("visibility", dies, stop_loops))]
    intake.start()
    if state == "DRAINING":
        intake.join(timeout=10)  # the intakes end at the drain, as told
    ok, reason = master.health()
    stop_loops.set()
    master.stopping.set()
    intake.join(timeout=10)
    assert not ok and "visibility" in reason and "intake" not in reason, reason
