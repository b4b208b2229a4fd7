"""A reaper that cannot read the task's cgroup (its process out of descriptors: a task can make
the master run out) must not take the cgroup for empty. It did: read failures were "no pids",
so a process the task left behind kept running in a cgroup nobody killed, and its uid was given
to the next task, whose token and secrets it could read. Real cgroups, a real task that leaves
a process behind, and this process really out of descriptors when the task's main process ends."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, os, resource, subprocess, sys, time, uuid
from sandbox import Limits, Sandbox
sandbox = Sandbox.open(f"test-nofds-{uuid.uuid4().hex[:8]}")
if sandbox.mode == "none":
    print(json.dumps({"skip": "no writable cgroups"})); sys.exit(0)
go = sys.argv[1]
# The task leaves a process behind, then its main process waits for GO and exits.
task = sandbox.start(["sh", "-c", f"sleep 60 & echo $! > {go}.left; while [ ! -e {go} ]; do sleep 0.01; done"],
                     Limits(timeout_s=60), stdin=subprocess.DEVNULL)
while not os.path.exists(go + ".left") or not open(go + ".left").read().strip():
    time.sleep(0.01)
left = int(open(go + ".left").read())
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
os.close(held.pop())  # one descriptor, to make GO; then taken again, so the reaper has none
with open(go, "w"):
    pass
held.append(os.open("/dev/null", os.O_RDONLY))
outcome = task.wait()
for fd in held:
    os.close(fd)
alive = os.path.exists(f"/proc/{left}") and open(f"/proc/{left}/stat").read().split(") ")[1][0] != "Z"
print(json.dumps({"tree_left": outcome.tree_left, "left_alive": alive}))
swept = sandbox.sweep()  # descriptors back: the sweep ends what was left
alive_after = os.path.exists(f"/proc/{left}") and open(f"/proc/{left}/stat").read().split(") ")[1][0] != "Z"
sandbox.close()
print(json.dumps({"swept": len(swept), "left_alive_after_sweep": alive_after}))
"""


def test_a_task_cgroup_the_reaper_cannot_read_is_not_taken_for_empty(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "go")], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    if "skip" in lines[0]:
        pytest.skip(lines[0]["skip"])
    first, second = lines
    assert first["tree_left"] is True, "a cgroup that could not be read was taken for empty"
    assert second == {"swept": 1, "left_alive_after_sweep": False}
