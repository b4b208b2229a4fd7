"""The held wrapper runs on dash where its spawner keeps two descriptors below 10 for its pipes,
and on bash otherwise; either way the command gets only the descriptors it was given, and a
wrapper that dies before it is ready is seen at once.

The dash cases run in a fresh interpreter: one with nothing open but 0, 1 and 2, as the
executor's master is when it opens its sandbox. pytest's worker has its low numbers taken.
"""
from __future__ import annotations

import json
import os
import subprocess

from .conftest import PYTHON

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FRESH_PROCESS = r"""
import json, os, signal, subprocess, sys, time
from sandbox.errors import SandboxError
from sandbox.spawn import await_ready, release, spawn_held
from sandbox.spawner import Spawner

if sys.argv[1:] == ["crowded"]:  # every number below 10 taken before the spawner is made
    crowd = [os.open(os.devnull, os.O_RDONLY) for _ in range(10)]
spawner = Spawner("wrapper-shell-test")
low = spawner.low
result = {"low": None if low is None else [low.release, low.ready]}

def spawn(argv, kill=False):
    def fork(s):
        held = spawn_held(argv, env={"PATH": "/usr/bin:/bin"}, cwd="/", umask=0o022,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None, low=s.low)
        if kill:  # at once, on the forking thread: the shell takes far longer to start than this
            os.kill(held[0].pid, signal.SIGKILL)
        return held
    return spawner.run(fork, dispose=lambda held: None)

popen, release_fd, ready = spawn(["/bin/ls", "-1", "/proc/self/fd"])
await_ready(popen, ready, "listing")
result["held_shell"] = os.readlink(f"/proc/{popen.pid}/exe")
result["parked"] = [os.readlink(f"/proc/self/fd/{n}") for n in (low.release, low.ready)] if low else None
release(release_fd)
result["command_fds"] = sorted(int(n) for n in popen.stdout.read().decode().split())
result["exit"] = popen.wait()

# Killed before it says it is ready; after, on a loaded machine the forking thread can lose the
# CPU to the child for the millisecond the shell needs (5 tries all lost once): retried.
for attempt in range(50):
    popen, release_fd, ready = spawn(["/bin/true"], kill=True)
    began = time.monotonic()
    try:
        await_ready(popen, ready, "killed")
    except SandboxError as exc:
        result["died_before_ready"] = {"seconds": time.monotonic() - began, "error": str(exc)}
        os.close(release_fd)
        break
    os.close(release_fd)
    popen.wait()
print(json.dumps(result))
"""


def run_fresh(*args: str) -> dict:
    answer = subprocess.run([PYTHON, "-c", FRESH_PROCESS, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)


def test_a_fresh_process_keeps_its_wrappers_pipes_below_10_and_holds_the_child_on_dash():
    result = run_fresh()
    assert result["low"] is not None and max(result["low"]) < 10, result
    assert os.path.basename(result["held_shell"]) == "dash", result
    # Between forks the kept numbers hold /dev/null: the parent keeps no end of the child's pipes.
    assert result["parked"] == [os.devnull, os.devnull], result
    # ls sees its three and the directory it is listing (3): the wrapper closed both pipes.
    assert result["command_fds"] == [0, 1, 2, 3], result
    assert result["exit"] == 0


def test_a_wrapper_killed_before_it_is_ready_is_seen_at_once_not_after_the_ready_timeout():
    """Were the parent still holding the ready pipe's write end on its kept number, no EOF would
    come, and start() would wait 30 s to say the command never ran."""
    died = run_fresh()["died_before_ready"]
    assert died["seconds"] < 10, died
    assert "never ran" in died["error"] and "ended" in died["error"], died


def test_without_low_descriptors_the_wrapper_runs_on_bash_and_the_command_still_gets_only_its_own():
    result = run_fresh("crowded")
    assert result["low"] is None, result
    assert os.path.basename(result["held_shell"]) == "bash", result
    assert result["command_fds"] == [0, 1, 2, 3], result
    assert result["exit"] == 0
    assert result["died_before_ready"]["seconds"] < 10, result
