"""Input no process can be started with is refused as SandboxError, naming what is wrong,
before anything is forked or any cgroup is made: never a ValueError, TypeError or
OverflowError from deep inside (the executor reports SandboxError as bad input)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from sandbox import Limits, SandboxError

PATH = {"PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize(
    "argv,kwargs,words",
    [
        (["echo", "a\x00b"], {}, "NUL"),
        (["echo", 7], {}, "argument"),
        (["echo"], {"env": {**PATH, "X": "a\x00b"}}, "NUL"),
        (["echo"], {"env": {**PATH, "A=B": "x"}}, "'='"),
        (["echo"], {"env": {**PATH, "": "x"}}, "empty"),
        (["echo"], {"env": {**PATH, "X": 1}}, "X"),
        (["echo"], {"env": {**PATH, 3: "x"}}, "name"),
        (["echo"], {"cwd": "/tmp\x00x"}, "NUL"),
        (["true"], {"limits": Limits(cpu_max=float("inf"))}, "cpu_max"),
        (["true"], {"limits": Limits(cpu_max=1e308)}, "cpu"),
    ],
    ids=["nul-in-argument", "int-argument", "nul-in-env-value", "equals-in-env-key", "empty-env-key",
         "int-env-value", "int-env-key", "nul-in-cwd", "cpu-inf", "cpu-huge"],
)
def test_bad_input_is_a_sandbox_error_before_anything_starts(sandbox, argv, kwargs, words):
    limits = kwargs.pop("limits", Limits())
    with pytest.raises(SandboxError, match=words) as refused:
        sandbox.start(argv, limits, **kwargs)
    assert "a\x00b" not in str(refused.value), "values are not quoted: environments carry secrets"
    assert sandbox.driver.leftover_names() == []
    assert sandbox._spawner.live == 0, "a child was forked for input that could never run"


@pytest.mark.parametrize("grace_s", [float("nan"), float("inf"), -1.0])
def test_a_grace_that_is_no_time_is_refused_and_the_task_runs_on(sandbox, grace_s):
    """NaN made the reaper raise inside its wait (logged, then an immediate kill); a negative
    grace killed at once, as a kill(), though a terminate() was asked for."""
    process = sandbox.start(["sleep", "30"])
    try:
        with pytest.raises(SandboxError, match="grace_s"):
            process.terminate(grace_s=grace_s)
        time.sleep(0.2)
        assert process.poll() is None, "the task was ended by a refused request"
    finally:
        process.kill()
        process.wait(timeout=20)


@pytest.mark.parametrize("command", [b"/bin/echo", Path("/bin/echo"), b"echo"],
                         ids=["bytes-path", "pathlib-path", "bytes-name"])
def test_a_command_named_by_bytes_or_a_path_runs_as_its_other_arguments_do(sandbox, command):
    """Arguments may be bytes or paths, the command's name too: its lookup raised TypeError."""
    process = sandbox.start([command, "named"], env=PATH, stdout=subprocess.PIPE)
    assert process.stdout.read() == b"named\n"
    assert process.wait(timeout=20).exit_code == 0
