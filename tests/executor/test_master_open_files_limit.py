"""The master raises its soft RLIMIT_NOFILE to the hard one at start (raise_open_files_limit):
systemd starts services with a soft limit of 1024, and a master out of descriptors cannot read a
task's cgroup, start one, or answer a probe. Run in a child started with a low soft limit, as
systemd would start it, so this test process keeps its own."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RAISE_AND_SAY = ("import json, resource\n"
                 "from executor.master import raise_open_files_limit\n"
                 "raise_open_files_limit()\n"
                 "print(json.dumps(resource.getrlimit(resource.RLIMIT_NOFILE)))\n")
HARD = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def limits_after_raising(soft: int, hard: int) -> tuple[int, int]:
    def start_with_these_limits() -> None:  # between fork and exec: lowering needs no privilege
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run([sys.executable, "-c", RAISE_AND_SAY], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, preexec_fn=start_with_these_limits)
    assert done.returncode == 0, done.stderr
    return tuple(json.loads(done.stdout))


def test_a_low_soft_open_files_limit_is_raised_to_the_hard_one():
    assert limits_after_raising(256, HARD) == (HARD, HARD)


def test_a_soft_limit_already_at_the_hard_one_is_left_as_it_is_without_failing():
    assert limits_after_raising(HARD, HARD) == (HARD, HARD)
