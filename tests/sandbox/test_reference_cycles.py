"""A finished task's objects are freed by reference counting alone. The master runs thousands
of tasks; garbage that only the collector's rare full passes free grows its RSS task by task
(a bound method of the ConfinedProcess handed to its ExitWatch made such a cycle: ~0.4 KB a task)."""
from __future__ import annotations

import gc
import time
import weakref

from sandbox import Status


def test_a_finished_task_is_freed_without_the_garbage_collector(sandbox):
    gc.collect()
    gc.disable()
    try:
        process = sandbox.start(["/bin/true"])
        assert process.wait(timeout=20).status is Status.SUCCEEDED
        gone = weakref.ref(process)
        deadline = time.monotonic() + 10
        while process._reaper.is_alive() and time.monotonic() < deadline:  # the reaper lets go when its thread ends
            time.sleep(0.01)
        del process
        assert gone() is None, "only the garbage collector would free it: a reference cycle"
    finally:
        gc.enable()
