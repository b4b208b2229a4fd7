"""The task log's file is read back by name when the log is shipped. Where the executor cannot
switch users (an unprivileged container: tasks run as its own uid), a task can reach its log's
name in the 0700 logs directory, which is its own uid's too; what the executor ships must still
be the file it wrote, never what the task put in its place."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# The executor, in a process of its own whose environment (as /proc shows it) holds its token:
# a task of the same uid swaps its log for a link to /proc/self/environ, which the executor, when
# it reads the log to ship it, resolves to its own environment.
EXECUTOR = r"""
import os, subprocess, sys
from executor.runtime.masking import Masker
from executor.runtime.task_log import TaskLog

path = sys.argv[1]
log = TaskLog(path, Masker([]))
task = subprocess.Popen([sys.executable, "-c",
                         "import os, sys\n"
                         "print('ingesting', flush=True)\n"
                         "os.unlink(sys.argv[1])\n"
                         "os.symlink('/proc/self/environ', sys.argv[1])\n", path], stdout=subprocess.PIPE)
log.pump(task.stdout).join(timeout=30)
assert task.wait(timeout=10) == 0
log.write_line("[executor] outcome: SUCCEEDED exit_code=0")
log.close()
shipped = log.full_log()
print("token shipped" if os.environ["DATAHUB_GMS_TOKEN"].encode() in shipped else "token kept")
print("output shipped" if b"ingesting\n[executor] outcome: SUCCEEDED" in shipped else "output lost")
"""


def test_a_task_that_swaps_its_log_for_a_link_never_gets_the_executors_environment_shipped(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
           "DATAHUB_GMS_TOKEN": "executor-own-token-fake-7f3a"}
    done = subprocess.run([sys.executable, "-c", EXECUTOR, str(logs / "exe_1.log")], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["token", "kept", "output", "shipped"]
