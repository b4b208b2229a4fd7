"""private_tmp: each task gets a mount namespace of its own with fresh tmpfs on /tmp, /var/tmp
and /dev/shm (charged to its memory cgroup) and a read-only cgroup filesystem; all of it
disappears with the task."""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from sandbox import Limits, SandboxError, Status, TaskUser

from .conftest import PYTHON

MIB = 1 << 20


@pytest.fixture
def namespaces(sandbox):
    support = sandbox.isolation_support()["private_tmp"]
    if not support.startswith("available"):
        pytest.skip(f"no mount namespaces here: {support}")
    return sandbox


def namespace_holders(namespace: str) -> list[int]:
    """Pids of every process whose mount namespace is NAMESPACE ("mnt:[...]")."""
    holders = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == namespace:
                    holders.append(int(entry))
            except OSError:
                continue
    return holders


def test_a_tasks_tmp_files_are_invisible_to_others_and_die_with_it(namespaces):
    tag = f"sandbox-test-{uuid.uuid4().hex[:8]}"
    writer = namespaces.start(
        ["bash", "-c", f"echo secret > /tmp/{tag}-x && echo secret > /dev/shm/{tag}-y && echo ready && {{ read _ || true; }}"],
        user=TaskUser(61234, 61234), private_tmp=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert writer.stdout.readline() == b"ready\n"
    namespace = os.readlink(f"/proc/{writer.pid}/ns/mnt")
    assert namespace != os.readlink("/proc/self/ns/mnt")
    assert os.path.exists(f"/proc/{writer.pid}/root/tmp/{tag}-x"), "the file is there, inside the task's namespace"

    look = f"for f in /tmp/{tag}-x /dev/shm/{tag}-y; do test -e $f && echo visible || echo absent; done"
    reader = namespaces.start(["bash", "-c", look], user=TaskUser(61234, 61234), private_tmp=True,
                              stdout=subprocess.PIPE)
    assert reader.stdout.read().split() == [b"absent", b"absent"], "a concurrent task sees none of it"
    assert reader.wait(timeout=10).status is Status.SUCCEEDED
    assert not os.path.exists(f"/tmp/{tag}-x") and not os.path.exists(f"/dev/shm/{tag}-y"), "nor does the host"

    writer.stdin.close()
    outcome = writer.wait(timeout=10)
    assert outcome.status is Status.SUCCEEDED
    assert not os.path.exists(f"/tmp/{tag}-x") and not os.path.exists(f"/dev/shm/{tag}-y")
    assert namespace_holders(namespace) == [], "no process keeps the task's namespace, so its tmpfs is gone"
    assert outcome.isolation["private_tmp"].startswith("private mount namespace: fresh tmpfs on /tmp, /var/tmp, /dev/shm")
    assert outcome.isolation["cgroupfs"] == "read-only in the task's mount namespace"


def shm_ids() -> set[str]:
    """The System V shared memory segments this process's IPC namespace holds (ipcs -m's ids)."""
    listing = subprocess.run(["ipcs", "-m"], capture_output=True, text=True, check=True).stdout
    return {fields[1] for fields in (line.split() for line in listing.splitlines()) if fields and fields[0].startswith("0x")}


def test_shared_memory_a_task_makes_dies_with_it_and_it_sees_none_of_the_hosts(namespaces):
    """Without an IPC namespace of its own, a segment a task made (shmget) outlived it, its pages
    charged to no task's cgroup, and a later task, of any uid for a 0666 segment, read it."""
    host = subprocess.run(["ipcmk", "-M", "4096", "-p", "0666"], capture_output=True, text=True, check=True).stdout
    host_id = host.split()[-1]
    try:
        before = shm_ids()
        # Sizes, not ids, tell the segments apart: a namespace numbers its first segment 0, and so
        # does the host for the first one since boot (this test's, on a machine just started).
        script = "ipcmk -M 65536 -p 0666 >/dev/null && ipcs -m | awk '/^0x/ {print $5}'"
        process = namespaces.start(["bash", "-c", script], user=TaskUser(61234, 61234), private_tmp=True,
                                   stdout=subprocess.PIPE, cwd="/")
        seen = process.stdout.read().decode().split()
        outcome = process.wait(timeout=10)
        assert outcome.status is Status.SUCCEEDED
        assert seen == ["65536"], "the task sees its own segment and none of the host's"
        assert shm_ids() == before, "the task's segment outlived it"
        assert "private IPC namespace" in outcome.isolation["private_tmp"]
    finally:
        subprocess.run(["ipcrm", "-m", host_id], check=False)


def test_private_tmp_is_a_fresh_tmpfs_and_the_cgroup_fs_is_read_only_even_for_a_root_task(namespaces):
    own_procs = os.path.join(os.path.dirname(next(iter(_roots(namespaces)))), "cgroup.procs")
    script = (f"findmnt -no FSTYPE,SOURCE /tmp; ls -A /tmp | wc -l; "
              f"echo $$ > {own_procs} 2>/dev/null && echo escaped || echo refused")
    process = namespaces.start(["bash", "-c", script], private_tmp=True, stdout=subprocess.PIPE,
                               cwd="/")  # a working directory under /tmp (a checkout there) would be bound through
    lines = process.stdout.read().decode().split("\n")
    assert process.wait(timeout=10).status is Status.SUCCEEDED
    assert lines[0].split() == ["tmpfs", "sandbox-tmp"]
    assert lines[1] == "0", "nothing of the host's /tmp"
    assert lines[2] == "refused", "read-only: not even root may write cgroup.procs"


def test_the_tasks_tmp_pages_are_charged_to_its_memory_cgroup(namespaces):
    fill = "head -c 64M /dev/zero > /dev/shm/fill && echo filled && { read _ || true; }"
    process = namespaces.start(["bash", "-c", fill], Limits(memory_max_bytes=200 * MIB), private_tmp=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"filled\n"
    assert process.memory_current() >= 60 * MIB
    process.stdin.close()
    assert process.wait(timeout=10).status is Status.SUCCEEDED


def test_filling_the_private_tmp_past_the_memory_limit_is_memory_limit_exceeded(namespaces):
    process = namespaces.start(["bash", "-c", "head -c 300M /dev/zero > /tmp/fill"],
                               Limits(memory_max_bytes=100 * MIB, timeout_s=30), private_tmp=True)
    outcome = process.wait(timeout=30)
    assert outcome.status is Status.MEMORY_LIMIT_EXCEEDED, outcome.to_dict()
    assert outcome.peak_memory_bytes <= 105 * MIB


def test_the_working_directory_under_tmp_stays_reachable(namespaces, tmp_path):
    process = namespaces.start(["sh", "-c", "echo kept > out; ls /tmp"], private_tmp=True, cwd=str(tmp_path),
                               stdout=subprocess.PIPE)
    listing = process.stdout.read().decode().split()
    assert process.wait(timeout=10).status is Status.SUCCEEDED
    assert (tmp_path / "out").read_text() == "kept\n"
    assert listing == [str(tmp_path).split("/")[2]], "only the path to the working directory is in the private /tmp"
    assert "working directory" in process.isolation["private_tmp"]


def test_what_a_private_tmp_would_hide_is_refused_before_forking(namespaces, tmp_path):
    with pytest.raises(SandboxError, match="would be replaced by the task's private tmpfs"):
        namespaces.start(["true"], private_tmp=True, cwd="/tmp")
    loose = f"/tmp/dhx-loose-tool-{uuid.uuid4().hex[:8]}"  # directly in /tmp: binding it back undoes the private /tmp
    with open(loose, "w") as f:
        f.write("#!/bin/sh\ntrue\n")
    os.chmod(loose, 0o755)
    try:
        with pytest.raises(SandboxError, match="lies directly in /tmp"):
            namespaces.start([loose], private_tmp=True, cwd=str(tmp_path))
    finally:
        os.unlink(loose)
    assert namespaces.driver.leftover_names() == []


def test_a_command_installed_under_tmp_keeps_its_tree_read_only(namespaces, tmp_path):
    """A checkout cloned into /tmp keeps its virtualenvs there: the command's install tree (the
    directory above its bin/) is bound back read-only, nothing else of /tmp is."""
    venv = tmp_path / "venvs" / "cli"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib").mkdir()
    (venv / "lib" / "module.txt").write_text("from the tree\n")
    (tmp_path / "unrelated").write_text("not for the task\n")
    tool = venv / "bin" / "tool"
    tool.write_text(f"#!/bin/sh\ncat {venv}/lib/module.txt\n"
                    f"touch {venv}/lib/written 2>/dev/null && echo tree-writable || echo tree-read-only\n"
                    f"test -e {tmp_path}/unrelated && echo unrelated-seen || echo unrelated-hidden\n")
    tool.chmod(0o755)
    workdir = tmp_path / "work"
    workdir.mkdir()
    process = namespaces.start([str(tool)], private_tmp=True, cwd=str(workdir), stdout=subprocess.PIPE)
    out = process.stdout.read().decode().split("\n")
    assert process.wait(timeout=10).status is Status.SUCCEEDED, out
    assert out[:3] == ["from the tree", "tree-read-only", "unrelated-hidden"]
    assert not (venv / "lib" / "written").exists()
    assert f"{venv} bound through read-only" in process.isolation["private_tmp"]


def test_without_privileges_the_task_runs_and_the_outcome_says_private_tmp_was_not_available():
    """Run as nobody (mode none, no CAP_SYS_ADMIN): no namespace can be made; the task still
    runs, and the isolation says so instead of failing."""
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PYTHON, "-m", "sandbox", "run",
         "--mode=none", "--private-tmp", "--json", "--", "true"],
        capture_output=True, text=True, timeout=60, cwd=os.getcwd(), check=False,
    )
    assert result.returncode == 0, result.stderr
    isolation = json.loads(result.stdout)["isolation"]
    assert isolation["private_tmp"].startswith("not available: unshare(CLONE_NEWNS | CLONE_NEWIPC) failed"), isolation
    assert "CAP_SYS_ADMIN" in isolation["private_tmp"]
    assert isolation["cgroupfs"] != "read-only in the task's mount namespace"


def _roots(sandbox) -> list[str]:
    driver = sandbox.driver
    return list(driver.roots.values()) if hasattr(driver, "roots") else [driver.root]
