"""A task running as root that moves its main process out of its cgroups: the sandbox cannot stop
the move (docs/sandbox.md, "What a task cannot do"), but the main process is its own child, so
the kill still reaches it and the outcome says how it ended."""
from __future__ import annotations

import os
import signal
import subprocess

from sandbox import Limits, Status
from tests.sandbox.conftest import PYTHON, pid_alive

LEAVE_AND_SLEEP = """
import os, sys, time
for procs in sys.argv[1:]:
    with open(procs, "w") as f:
        f.write(str(os.getpid()))
print("left", flush=True)
time.sleep(300)
"""


def sandbox_roots(sandbox) -> list[str]:
    """The sandbox's root cgroup in every hierarchy it uses: somewhere a task running as root may write."""
    driver = sandbox.driver
    roots = driver.roots.values() if hasattr(driver, "roots") else [driver.root]
    return [os.path.join(root, "cgroup.procs") for root in roots]


def test_a_main_process_that_moved_out_of_its_cgroups_is_still_killed_at_its_timeout(sandbox):
    process = sandbox.start([PYTHON, "-c", LEAVE_AND_SLEEP, *sandbox_roots(sandbox)],
                            Limits(timeout_s=1.0), stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"left\n"
        outcome = process.wait(timeout=60)
        assert outcome.status is Status.TIMED_OUT
        assert outcome.signal == signal.SIGKILL, f"the main process was never killed: {outcome}"
        assert outcome.unkillable_pids == [] and not outcome.tree_left
        assert not pid_alive(process.pid)
    finally:
        if pid_alive(process.pid):
            os.kill(process.pid, signal.SIGKILL)  # our own child (old code left it running)
        process.stdout.close()
