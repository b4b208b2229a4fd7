"""A start() that fails half-way leaves nothing behind: before the child is released the command
never runs; after, it is killed and reaped, and start() raises SandboxError either way."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from sandbox import SandboxError, Status
from sandbox import confined, reused_threads
from sandbox import sandbox as sandbox_module

from .conftest import pid_alive

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_failure_before_the_release_never_runs_the_command(sandbox, monkeypatch, tmp_path):
    ran = tmp_path / "ran"

    def no_descriptors_left(popen, **_):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(confined, "ExitWatch", no_descriptors_left)
    with pytest.raises(SandboxError, match="Too many open files"):
        sandbox.start(["touch", str(ran)])
    monkeypatch.undo()
    time.sleep(0.2)
    assert not ran.exists()
    assert sandbox._spawner.live == 0, "the held child was not reaped"
    assert sandbox.driver.leftover_names() == []


def test_a_failure_after_the_release_kills_and_reaps_the_command(sandbox, monkeypatch, tmp_path):
    pid_file = tmp_path / "pid"
    real_start = reused_threads.start

    def no_thread_for_the_reaper(target, *args, name):
        if name.startswith("sandbox-reaper-"):
            raise RuntimeError("can't start new thread")
        return real_start(target, *args, name=name)

    monkeypatch.setattr(reused_threads, "start", no_thread_for_the_reaper)
    name = uuid.uuid4().hex[:10]
    with pytest.raises(SandboxError, match="can't start new thread"):
        sandbox.start(["bash", "-c", f"echo $$ > {pid_file}; exec sleep 300"], name=name)
    monkeypatch.undo()
    assert sandbox._spawner.live == 0, "the command was left unreaped"
    assert sandbox.driver.leftover_names() == []
    if pid_file.exists() and pid_file.read_text().strip():
        assert not pid_alive(int(pid_file.read_text())), "the command outlived the failed start"
    again = sandbox.start(["true"], name=name)
    assert again.wait(timeout=10).status is Status.SUCCEEDED, "the task name was released"


def test_a_wrapper_that_fails_before_its_release_is_a_start_error_saying_the_command_never_ran():
    """setpriv cannot switch to a uid its user namespace does not map (a rootless container, a
    task-user range beyond the mapping) and exits before the wrapper waits for its release. The
    release then met a closed pipe and start() said the task "was started ... it was killed"
    (it never ran), or, when the release came first, the run was FAILED with setpriv's exit
    code, as if the command had failed. Either way depended on who was faster."""
    in_user_namespace = ["unshare", "--user", "--map-root-user"]
    probe = subprocess.run([*in_user_namespace, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a user namespace here: {probe.stderr.decode().strip()}")
    result = subprocess.run([*in_user_namespace, sys.executable, "-m", "sandbox", "run",
                             f"--root-name=test-start-{uuid.uuid4().hex[:8]}", "--user", "61234", "--", "true"],
                            capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "never ran" in error and "was started" not in error, result.stderr


def _pipe_descriptors() -> set[int]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                found.add(int(fd))
        except OSError:
            continue
    return found


def test_a_failure_while_held_closes_the_pipes_made_for_the_tasks_stdio(sandbox, monkeypatch):
    """The caller never gets the Popen of a start that failed, so nothing else can close them:
    three pipes a failed start stayed open, until the spawner's next start dropped the object."""
    before = _pipe_descriptors()

    def refused(pid: int) -> None:
        raise SandboxError("cannot raise oom_score_adj (injected)")

    monkeypatch.setattr(sandbox_module, "prepare_child", refused)
    with pytest.raises(SandboxError, match="injected"):
        sandbox.start(["true"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    monkeypatch.undo()
    assert sandbox._spawner.live == 0, "the held child was not reaped"
    assert _pipe_descriptors() - before == set(), "pipes of the failed start were left open"


# Run apart, with a descriptor limit of its own: FREE descriptors left, a start of `true`; prints
# what start() raised and how many descriptors it left open.
OUT_OF_DESCRIPTORS = r"""
import json, os, resource, subprocess, sys, uuid
from sandbox import Sandbox
sandbox = Sandbox.open(f"test-emfile-{uuid.uuid4().hex[:8]}", mode="none")
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
results = []
for free in (1, 2, 3):
    before = set(os.listdir("/proc/self/fd"))  # listdir's own descriptor is closed again
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    for _ in range(free):
        os.close(held.pop())
    try:
        sandbox.start(["true"], stdin=subprocess.DEVNULL).wait(timeout=10)
        raised = None
    except Exception as exc:
        raised = type(exc).__name__
    for fd in held:
        os.close(fd)
    left = len(set(os.listdir("/proc/self/fd")) - before)
    results.append({"free": free, "raised": raised, "left": left})
sandbox.close()
print(json.dumps(results))
"""


def test_out_of_descriptors_a_start_fails_as_a_start_error_and_leaks_none():
    """With one to three descriptors free, the pipes that hold and release the child could not
    be made: a raw OSError escaped start(), which callers (the executor's runner) do not catch,
    and the first pipe's two descriptors were left open each time."""
    result = subprocess.run([sys.executable, "-c", OUT_OF_DESCRIPTORS], capture_output=True, text=True, timeout=120,
                            check=True, cwd=REPO)
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r for r in results if r["raised"] not in (None, "SandboxError")] == [], results
    assert [r for r in results if r["left"] > 0] == [], results
    assert any(r["raised"] == "SandboxError" for r in results), results
