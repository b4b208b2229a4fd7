"""Tasks run as an unprivileged user: its uid and gid, no supplementary groups, no_new_privs,
no capabilities, and still the parent-death signal (which the kernel clears on a uid change)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from sandbox import Sandbox, SandboxError, Status, TaskUser

from .conftest import PYTHON, pid_alive

# No passwd entry for the first; the second is nobody. No system user is created.
USERS = [TaskUser(61234, 61234), TaskUser(65534, 65534)]


def status_fields(text: str) -> dict[str, str]:
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


@pytest.mark.parametrize("user", USERS, ids=str)
def test_a_task_user_runs_without_groups_capabilities_or_new_privileges(sandbox, user):
    process = sandbox.start(["cat", "/proc/self/status"], user=user, stdout=subprocess.PIPE)
    fields = status_fields(process.stdout.read().decode())
    outcome = process.wait(timeout=10)
    assert outcome.status is Status.SUCCEEDED
    assert fields["Uid"].split() == [str(user.uid)] * 4, "real, effective, saved and filesystem uid"
    assert fields["Gid"].split() == [str(user.gid)] * 4
    assert fields["Groups"] == ""
    for capability_set in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[capability_set], 16) == 0, capability_set
    assert fields["NoNewPrivs"] == "1"
    assert outcome.isolation["user"] == f"uid {user.uid}, gid {user.gid}, no supplementary groups"
    assert outcome.isolation["no_new_privs"].startswith("set")
    assert outcome.isolation["capabilities"].startswith("none")
    assert outcome.isolation["parent_death_signal"] == "SIGKILL, armed after the user switch"


def test_a_task_user_is_still_confined_and_oom_adjusted(sandbox, tmp_path):
    process = sandbox.start(["sh", "-c", "cat /proc/self/cgroup; cat /proc/self/oom_score_adj"],
                            user=USERS[0], stdout=subprocess.PIPE)
    lines = process.stdout.read().decode().splitlines()
    assert process.wait(timeout=10).status is Status.SUCCEEDED
    assert lines[-1] == "1000"
    assert any(process.name in line for line in lines if ":memory:" in line or line.startswith("0::"))


def test_without_a_task_user_the_isolation_says_the_task_has_the_sandboxs_privileges(sandbox):
    isolation = sandbox.start(["true"]).wait(timeout=10).isolation
    assert isolation["user"].startswith(f"the sandbox's own (uid {os.geteuid()})")
    assert isolation["no_new_privs"].startswith("not set")
    if os.geteuid() == 0:
        assert "can move itself out of its cgroups" in isolation["cgroupfs"]


MASTER = """
import sys, time
from sandbox import Sandbox, TaskUser
sb = Sandbox.open(sys.argv[1])
p = sb.start(["sleep", "300"], user=TaskUser(61234, 61234))
print(p.pid, flush=True)
time.sleep(300)
"""


def test_a_task_running_as_another_uid_dies_when_its_master_is_sigkilled():
    """The kernel clears the parent-death signal when the euid changes: it must be armed after
    the switch, or this task would outlive its master."""
    root = f"test-pdeath-user-{os.getpid()}"
    master = subprocess.Popen([PYTHON, "-c", MASTER, root], stdout=subprocess.PIPE, cwd=os.getcwd())
    try:
        task_pid = int(master.stdout.readline())
        time.sleep(0.2)
        assert pid_alive(task_pid)
        with open(f"/proc/{task_pid}/status") as f:
            assert status_fields(f.read())["Uid"].split()[1] == "61234"
        os.kill(master.pid, signal.SIGKILL)
        master.wait()
        deadline = time.monotonic() + 5
        while pid_alive(task_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not pid_alive(task_pid), "the task outlived its SIGKILLed master"
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
        leftover = Sandbox.open(root)
        leftover.sweep()
        leftover.close()


def test_isolation_support_says_what_this_host_allows(sandbox):
    support = sandbox.isolation_support()
    assert set(support) == {"task_user", "private_tmp", "parent_death_signal", "tree_kill"}
    if os.geteuid() == 0:
        assert support["task_user"].startswith("available")


@pytest.mark.parametrize(
    "text,expected",
    [("61234", TaskUser(61234, 61234)), ("65534:100", TaskUser(65534, 100))],
)
def test_task_user_parses_uid_and_optional_gid(text, expected):
    assert TaskUser.parse(text) == expected


@pytest.mark.parametrize(
    "text,message",
    [("0", "unprivileged"), ("1000:0", "unprivileged"), ("nobody", "numbers only"), ("-5", "out of range"),
     (str(1 << 32), "out of range")],
)
def test_task_user_refuses_root_names_and_out_of_range_ids(text, message):
    with pytest.raises(SandboxError, match=message):
        TaskUser.parse(text)


def test_a_user_the_sandbox_cannot_switch_to_is_refused_in_one_line():
    """Run as nobody, the sandbox has no CAP_SETUID: asking for a task user fails up front."""
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PYTHON, "-m", "sandbox", "run",
         "--mode=none", "--user", "61234", "--", "true"],
        capture_output=True, text=True, timeout=60, cwd=os.getcwd(), check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot run tasks as user 61234:61234" in result.stderr
    assert "lacks CAP_SETUID" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
