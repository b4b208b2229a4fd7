"""The CLI from outside, as an operator runs it."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from sandbox import privileges

from .conftest import leak_script

CLI = [sys.executable, "-m", "sandbox", "run"]
CAP_SYS_RESOURCE = 24  # capability(7)


def run_cli(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if user == "nobody" else []
    root = f"--root-name=test-cli-{os.getpid()}"
    return subprocess.run([*prefix, *CLI, root, *args], capture_output=True, text=True, timeout=120, check=False,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_json_outcome_and_exit_code_mirror_the_child():
    result = run_cli("--json", "--", "sh", "-c", "exit 7")
    assert result.returncode == 7
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "FAILED"
    assert outcome["exit_code"] == 7
    assert outcome["mode"] in ("cgroup-v1", "cgroup-v2")
    assert set(outcome) >= {"status", "exit_code", "signal", "oom_kills", "peak_memory_bytes", "duration_s", "mode", "limits_enforced"}


def test_a_leak_through_the_cli_is_memory_limit_exceeded_with_exit_137():
    result = run_cli("--memory-limit", "100M", "--json", "--", *leak_script())
    assert result.returncode == 137
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "MEMORY_LIMIT_EXCEEDED"
    assert outcome["oom_kills"] >= 1
    assert outcome["signal_name"] == "SIGKILL"


def test_without_writable_cgroups_auto_mode_falls_back_to_none_and_says_so():
    result = run_cli("--json", "--", "true", user="nobody")
    assert result.returncode == 0
    assert json.loads(result.stdout)["mode"] == "none"
    assert "best effort (mode none)" in result.stderr


def test_a_timeout_longer_than_one_poll_can_wait_through_the_cli():
    result = run_cli("--timeout", "2147484", "--json", "--", "sleep", "0.2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "SUCCEEDED"


def test_timeout_through_the_cli():
    result = run_cli("--timeout", "0.5", "--json", "--", "sleep", "30")
    assert result.returncode == 137
    assert json.loads(result.stdout)["status"] == "TIMED_OUT"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--memory-limit", "12Q", "--", "true"], "invalid size '12Q'"),
        (["--memory-limit=-5M", "--", "true"], "invalid size"),
        (["--pids-limit=-1", "--", "true"], "greater than zero"),
        (["--cpu-limit", "0.001", "--", "true"], "below what the kernel accepts"),
        (["--cpu-limit", "inf", "--", "true"], "finite"),
        (["--timeout", "inf", "--", "true"], "finite"),
        (["--timeout", "nan", "--", "true"], "finite"),
        (["--memory-limit", "9" * 400, "--", "true"], "too large"),
        (["--cpu-limit", "1e308", "--", "true"], "cpu"),
        (["--memory-limit", "1M", "--", "true"], "below"),
        (["--", "no-such-command-anywhere"], "command not found"),
        ([], "no command given"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_never_a_traceback(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_permission_to_create_cgroups_names_the_fix():
    mode = json.loads(run_cli("--json", "--", "true").stdout)["mode"]
    result = run_cli(f"--mode={mode}", "--", "true", user="nobody")
    assert result.returncode == 2, result.stderr
    assert "no permission" in result.stderr
    assert "run as root" in result.stderr and "delegated cgroup" in result.stderr
    assert "Traceback" not in result.stderr


def test_user_option_runs_the_task_as_that_user_and_the_outcome_says_so():
    result = run_cli("--user", "61234:61235", "--json", "--", "sh", "-c", 'test "$(id -u):$(id -g)" = 61234:61235')
    assert result.returncode == 0, result.stderr
    isolation = json.loads(result.stdout)["isolation"]
    assert isolation["user"] == "uid 61234, gid 61235, no supplementary groups"
    assert isolation["private_tmp"] == "not asked"


def test_a_root_user_option_is_refused_as_bad_input():
    result = run_cli("--user", "0", "--", "true")
    assert result.returncode == 2
    assert "must be unprivileged" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def memory_cgroup_of(listing: str) -> str:
    """The task's cgroup path from a /proc/self/cgroup listing (the memory line, or v2's)."""
    lines = listing.splitlines()
    memory = [line for line in lines if ":memory:" in line] or [line for line in lines if line.startswith("0::")]
    return memory[0].split(":", 2)[2]


def test_concurrent_runs_without_a_root_name_each_get_a_root_of_their_own(tmp_path):
    """Two operators' runs at once: with one shared default root, the first to finish removed it
    (or failed to, busy) while the other created its task there."""
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    with open(tmp_path / "stderr", "w+") as long_stderr:
        long_run = subprocess.Popen([*CLI, "--", "bash", "-c", "cat /proc/self/cgroup; echo; sleep 1.5"],
                                    stdout=subprocess.PIPE, stderr=long_stderr, text=True, cwd=cwd)
        try:
            long_listing = "".join(iter(long_run.stdout.readline, "\n"))
            short_run = subprocess.run([*CLI, "--", "cat", "/proc/self/cgroup"], capture_output=True, text=True,
                                       timeout=60, check=False, cwd=cwd)
            long_run.wait(timeout=60)
        finally:
            if long_run.poll() is None:
                long_run.kill()
                long_run.wait()
            long_run.stdout.close()
        long_stderr.seek(0)
        stderr = short_run.stderr + long_stderr.read()
    assert short_run.returncode == 0 and long_run.returncode == 0, stderr
    assert "cannot remove" not in stderr
    assert os.path.dirname(memory_cgroup_of(long_listing)) != os.path.dirname(memory_cgroup_of(short_run.stdout))


def test_a_task_ended_by_a_real_time_signal_is_reported_with_its_name():
    result = run_cli("--json", "--", "bash", "-c", "kill -s 40 $$")
    assert result.returncode == 128 + 40, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["signal"] == 40
    assert outcome["signal_name"] == f"SIGRTMIN+{40 - signal.SIGRTMIN}"


@pytest.mark.parametrize("user", [None, "61234"])
def test_an_address_space_limit_above_the_hard_rlimit_is_refused_before_the_task_starts(user):
    """The wrapper's `ulimit -v` sets the hard RLIMIT_AS too, and cannot raise it above the one
    it inherits without CAP_SYS_RESOURCE (a task user never has it). It exited 112 while still
    held, and whether the run then said "started but cannot be watched; it was killed" or
    FAILED with exit 112 was a race (both wrong). Refused before forking, in one line."""
    if user is None and privileges.effective_capabilities() & (1 << CAP_SYS_RESOURCE):
        pytest.skip("with CAP_SYS_RESOURCE the wrapper may raise the hard limit")
    hard = 4 << 30

    def lower_the_hard_limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))

    options = ["--user", user] if user else []
    result = subprocess.run([*CLI, f"--root-name=test-cli-{os.getpid()}", *options, "--address-space-limit", "8G",
                             "--", "true"], capture_output=True, text=True, timeout=120, check=False,
                            preexec_fn=lower_the_hard_limit)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "RLIMIT_AS" in lines[0] and str(hard) in lines[0], result.stderr


@pytest.mark.parametrize("stop", [signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM])
def test_a_stop_signal_to_the_cli_ends_the_tasks_whole_tree(tmp_path, stop):
    """Its terminal closed (SIGHUP) or Ctrl-\\ (SIGQUIT), the CLI died by the default action: the
    task's main process got the parent-death SIGKILL, but what it had started lived on in the
    task's cgroup, past its timeout, and no outcome was given."""
    marker, out = tmp_path / "child.pid", tmp_path / "outcome.json"
    root = f"test-cli-{os.getpid()}-{int(stop)}"
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    with open(out, "w") as written:
        cli = subprocess.Popen([*CLI, f"--root-name={root}", "--timeout", "60", "--json", "--",
                                "sh", "-c", f"sleep 300 & echo $! > {marker}; wait"],
                               stdout=written, stderr=subprocess.DEVNULL, cwd=cwd)
    child = None
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text().strip()):
            assert time.monotonic() < deadline and cli.poll() is None
            time.sleep(0.02)
        child = int(marker.read_text())
        cli.send_signal(stop)
        cli.wait(timeout=30)
        gone = not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split(") ")[1][0] == "Z"
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        if child is not None and os.path.exists(f"/proc/{child}"):
            os.kill(child, signal.SIGKILL)  # ours: the sleep this test's task started
        subprocess.run([sys.executable, "-m", "sandbox", "sweep", "--root-name", root], cwd=cwd,
                       capture_output=True, timeout=60)  # what a failed run left
    assert gone, "the task's child outlived the CLI"
    assert cli.returncode == 137 and json.loads(out.read_text())["status"] == "KILLED"
