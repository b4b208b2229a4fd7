"""A start() that fails half-way leaves nothing behind: before the child is released the command
never runs; after, it is killed and reaped, and start() raises SandboxError either way."""
from __future__ import annotations

import errno
import threading
import time
import uuid

import pytest

from sandbox import SandboxError, Status
from sandbox import confined

from .conftest import pid_alive


def test_a_failure_before_the_release_never_runs_the_command(sandbox, monkeypatch, tmp_path):
    ran = tmp_path / "ran"

    def no_descriptors_left(popen):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(confined, "ExitWatch", no_descriptors_left)
    with pytest.raises(SandboxError, match="Too many open files"):
        sandbox.start(["touch", str(ran)])
    monkeypatch.undo()
    time.sleep(0.2)
    assert not ran.exists()
    assert sandbox._spawner._live == 0, "the held child was not reaped"
    assert sandbox.driver.leftover_names() == []


def test_a_failure_after_the_release_kills_and_reaps_the_command(sandbox, monkeypatch, tmp_path):
    pid_file = tmp_path / "pid"
    real_start = threading.Thread.start

    def no_thread_for_the_reaper(thread):
        if thread.name.startswith("sandbox-reaper-"):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", no_thread_for_the_reaper)
    name = uuid.uuid4().hex[:10]
    with pytest.raises(SandboxError, match="can't start new thread"):
        sandbox.start(["bash", "-c", f"echo $$ > {pid_file}; exec sleep 300"], name=name)
    monkeypatch.undo()
    assert sandbox._spawner._live == 0, "the command was left unreaped"
    assert sandbox.driver.leftover_names() == []
    if pid_file.exists() and pid_file.read_text().strip():
        assert not pid_alive(int(pid_file.read_text())), "the command outlived the failed start"
    again = sandbox.start(["true"], name=name)
    assert again.wait(timeout=10).status is Status.SUCCEEDED, "the task name was released"
