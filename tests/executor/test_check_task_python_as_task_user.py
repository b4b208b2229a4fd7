"""`datahub-executor check` runs the task Python as the user that will build with it. uv makes
each virtualenv as the task user (DATAHUB_EXECUTOR_TASK_USER), so an interpreter the executor can
run but that user cannot (one under /root/.pyenv, /root being 0700) passed the check when it
was probed as the executor, and then failed every build. The interpreter here is a symlink to
this test's own Python inside a 0700 directory: the kernel checks every directory on the way,
so only root gets through (and a process still holding root's capabilities, as setpriv does up
to its own exec: a probe of `setpriv ... -- python` passes it, which this test also catches)."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from tests.sandbox.conftest import TASK_PYTHON

from .test_check_local_resources import check_lines, environment

TASK_UIDS = "3000000-3000015"  # no account or group has these (resolve_task_user refuses a range that does)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to a task uid takes root")


@pytest.fixture
def root_only_python():
    """Outside pytest's tmp_path, which is itself 0700: the directory made here is the only
    thing in the task uid's way."""
    with tempfile.TemporaryDirectory(prefix="check-root-only-") as top:
        os.chmod(top, 0o755)
        hidden = Path(top) / "root-only"
        hidden.mkdir(mode=0o700)
        python = hidden / "python3"
        python.symlink_to(sys.executable)
        yield python


def test_a_python_the_task_uids_cannot_reach_fails_the_check_saying_so_and_how_to_fix_it(tmp_path, root_only_python):
    python = check_lines(environment(tmp_path, DATAHUB_EXECUTOR_TASK_USER=TASK_UIDS,
                                     DATAHUB_EXECUTOR_TASK_PYTHON=str(root_only_python)))["task python"]
    assert python.startswith(f"FAIL  task python: {root_only_python} runs as the executor's user, but the task user "
                             "(uid 3000000, gid 3000000) cannot run it ("), python
    assert "Permission denied" in python, python
    assert f"{os.path.realpath(sys.executable)} (what it links to)" in python, python
    assert python.endswith("and every directory above them readable and executable by that uid, or set "
                           "DATAHUB_EXECUTOR_TASK_PYTHON to a Python 3 interpreter it can run"), python


def test_the_same_python_passes_when_tasks_run_as_the_executors_own_user(tmp_path, root_only_python):
    python = check_lines(environment(tmp_path, DATAHUB_EXECUTOR_TASK_USER="none",
                                     DATAHUB_EXECUTOR_TASK_PYTHON=str(root_only_python)))["task python"]
    assert python.startswith(f"PASS  task python: {root_only_python} runs (Python 3."), python


def test_a_python_the_task_uids_can_run_passes_naming_the_user_it_ran_as(tmp_path):
    if TASK_PYTHON is None:
        pytest.skip("no Python interpreter here that an unprivileged task user may run")
    python = check_lines(environment(tmp_path, DATAHUB_EXECUTOR_TASK_USER=TASK_UIDS,
                                     DATAHUB_EXECUTOR_TASK_PYTHON=TASK_PYTHON))["task python"]
    assert python.startswith(f"PASS  task python: {TASK_PYTHON} runs (Python 3."), python
    assert python.endswith("as the executor's user and as the task user (uid 3000000, gid 3000000)"), python
