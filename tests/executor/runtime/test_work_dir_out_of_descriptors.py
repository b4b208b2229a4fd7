"""A task's work directory goes when the executor is out of file descriptors: rmtree needs one
per level and removed nothing, so the directory of a task that never ran (EMFILE, which failed
its log or its start, fails its cleanup too) stayed for good, its tmp with it. Run for real in a
child whose descriptors are all taken, so this test process keeps its own."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CLEAN_UP_WITHOUT_DESCRIPTORS = r"""
import json, os, resource, sys
from executor.runtime.masking import Masker
from executor.runtime.tasks import PreparedTask
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
never_ran, ran = sys.argv[1], sys.argv[2]
for workdir in (never_ran, ran):
    os.makedirs(os.path.join(workdir, "tmp"), mode=0o700)
with open(os.path.join(ran, "tmp", "left.txt"), "w") as f:
    f.write("the task's")
tasks = [PreparedTask(argv=[], env={}, stdin_bytes=b"", workdir=w, masker=Masker([]),
                      report_path=os.path.join(w, "ingestion_report.json"), memory_limit_bytes=None)
         for w in (never_ran, ran)]
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError as exc:
    assert exc.errno == 24, exc  # EMFILE: every descriptor taken
for task in tasks:
    task.cleanup()
for fd in held:
    os.close(fd)
print(json.dumps({"never_ran": os.path.lexists(never_ran), "ran": os.path.lexists(ran)}))
"""


def test_out_of_descriptors_the_directory_of_a_task_that_never_ran_still_goes(tmp_path):
    never_ran, ran = tmp_path / "executions" / "exe_never_ran", tmp_path / "executions" / "exe_ran"
    done = subprocess.run([sys.executable, "-c", CLEAN_UP_WITHOUT_DESCRIPTORS, str(never_ran), str(ran)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    left = json.loads(done.stdout.strip().splitlines()[-1])
    assert left == {"never_ran": False, "ran": True}, left
    assert "work directory" in done.stderr and str(ran) in done.stderr and "Too many open files" in done.stderr, \
        "what could not go is said"
    assert not any(str(never_ran) in line for line in done.stderr.splitlines()), "what went is not"
