"""A task tries to leave its confinement, for real: it moves a forked child into the sandbox's
own cgroup and the sandbox root in every mounted hierarchy, allocates past its memory limit
and leaves a daemon behind. Run as a task user, every step fails."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from sandbox import Limits, Status, TaskUser

from .conftest import pid_alive

MIB = 1 << 20

ATTACK = r"""
import errno, json, os, sys, time
targets = json.loads(os.environ["ESCAPE_TARGETS"])
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    os.close(read_end)
    report = {"pid": os.getpid(), "writes": {}}
    for path in targets:
        try:
            with open(path, "w") as f:
                f.write(str(os.getpid()))
            report["writes"][path] = "written"
        except OSError as exc:
            report["writes"][path] = errno.errorcode.get(exc.errno, str(exc.errno))
    with open("/proc/self/cgroup") as f:
        report["cgroups_after"] = f.read()
    daemon = os.fork()
    if daemon == 0:  # try to outlive the task: a new session, and sleep
        os.close(write_end)
        os.setsid()
        time.sleep(300)
        os._exit(0)
    report["daemon"] = daemon
    os.write(write_end, json.dumps(report).encode())
    os.close(write_end)
    hog = [bytearray(10 << 20) for _ in range(40)]  # 400M against a 200M limit
    time.sleep(300)
    os._exit(0)
os.close(write_end)
report = b""
while chunk := os.read(read_end, 65536):
    report += chunk
print(report.decode(), flush=True)
_, status = os.waitpid(child, 0)
sys.exit(1 if status else 0)
"""


def hierarchy_roots(sandbox) -> dict[str, str]:
    """The sandbox root in each hierarchy it uses ("unified" for cgroup2)."""
    driver = sandbox.driver
    return dict(driver.roots) if hasattr(driver, "roots") else {"unified": driver.root}


def escape_targets(sandbox) -> list[str]:
    """cgroup.procs of the sandbox's own cgroup and of its root, in every hierarchy it uses."""
    return [os.path.join(path, "cgroup.procs")
            for root in hierarchy_roots(sandbox).values() for path in (os.path.dirname(root), root)]


def memberships_in_managed_hierarchies(sandbox, proc_cgroup: str) -> dict[str, str]:
    """Hierarchy -> path, from a /proc/PID/cgroup text, for the hierarchies the sandbox uses."""
    managed = set(hierarchy_roots(sandbox))
    found = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in ({"unified"} if controllers == "" else set(controllers.split(","))) & managed:
            found[name] = path
    return found


@pytest.mark.parametrize("private_tmp", [False, True], ids=["task-user", "task-user+private-tmp"])
def test_a_task_user_cannot_leave_its_cgroups_exceed_its_memory_or_outlive_the_task(sandbox, task_python, private_tmp):
    targets = escape_targets(sandbox)
    process = sandbox.start(
        [task_python, "-c", ATTACK], Limits(memory_max_bytes=200 * MIB, timeout_s=30),
        env={"PATH": os.defpath, "ESCAPE_TARGETS": json.dumps(targets)}, user=TaskUser(61234, 61234),
        private_tmp=private_tmp, stdout=subprocess.PIPE,
    )
    report = json.loads(process.stdout.readline())
    outcome = process.wait(timeout=30)

    refused = {"EACCES", "EPERM"} | ({"EROFS"} if private_tmp else set())
    assert sorted(report["writes"]) == sorted(targets)
    assert {path: result for path, result in report["writes"].items() if result not in refused} == {}
    memberships = memberships_in_managed_hierarchies(sandbox, report["cgroups_after"])
    assert set(memberships) == set(hierarchy_roots(sandbox)), "the child is seen in every hierarchy"
    assert {name: path for name, path in memberships.items() if not path.endswith("/" + process.name)} == {}, (
        "the child stayed in its task cgroup in every hierarchy")
    assert outcome.status is Status.MEMORY_LIMIT_EXCEEDED, outcome.to_dict()
    assert outcome.oom_kills >= 1
    assert outcome.peak_memory_bytes <= 205 * MIB
    assert not pid_alive(report["pid"]) and not pid_alive(report["daemon"]), "nothing of the task outlives it"
    assert sandbox.driver.leftover_names() == []
