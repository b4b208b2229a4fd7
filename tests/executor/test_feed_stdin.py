"""A task's stdin: a recipe that fits the pipe is written at once, on the runner's thread; a
larger input reaches the task whole from a thread of its own; a task that never reads costs
nothing."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

from executor.runner import feed_stdin

DIGEST_OF_STDIN = "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"


def run_fed(data: bytes, code: str = DIGEST_OF_STDIN) -> tuple[str, list[str]]:
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    feed_stdin(child.stdin, data, name="stdin-test")
    feeders = [t.name for t in threading.enumerate() if t.name == "stdin-test"]
    out = child.stdout.read()
    assert child.wait(timeout=60) == 0
    return out.decode().strip(), feeders


def test_a_recipe_that_fits_the_pipe_is_written_at_once_without_a_thread():
    recipe = b'{"recipe": {"source": {"type": "datahub-mock-data"}}}' * 100
    digest, feeders = run_fed(recipe)
    assert digest == hashlib.sha256(recipe).hexdigest()
    assert feeders == []


def test_an_input_larger_than_the_pipe_reaches_the_task_whole():
    data = bytes(range(256)) * (20 << 12)  # 20 MiB: far over any pipe's capacity
    digest, feeders = run_fed(data, "import time; time.sleep(0.3); " + DIGEST_OF_STDIN)
    assert digest == hashlib.sha256(data).hexdigest()
    assert feeders == ["stdin-test"], "the rest is written by a thread while the task reads"


def test_a_task_that_exits_without_reading_breaks_nothing():
    child = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE)
    child.wait(timeout=30)
    feed_stdin(child.stdin, b"x" * (4 << 20), name="stdin-gone")
    for thread in threading.enumerate():
        if thread.name == "stdin-gone":
            thread.join(timeout=10)
    assert child.stdin.closed
