"""A venv cache on a disk that fills up, for real: a tmpfs with few blocks or few inodes, mounted
in a mount namespace of a child process's own (so nothing outside it sees the mount, and it goes
with the child), and builds by a stand-in builder (no package index needed).

Eviction runs only inside a build. A cache whose inodes the venvs had used up could not even
create a new venv's lock files: every new combination failed with a bare OSError before its build,
so the month-old venvs that eviction would have removed stayed, and the cache stayed full until an
operator stepped in. A disk that filled up at the ready marker failed the run as an executor
error (OSError) instead of VENV_INSTALL_FAILED, and left the marker behind."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs in the child, in its own mount namespace: mounts a tmpfs at MOUNTPOINT with OPTIONS, runs
# SCENARIO and prints what it saw as one JSON line.
CHILD = r'''
import errno, json, os, subprocess, sys, time
from pathlib import Path

from executor.runtime.rejection import TaskRejected
from executor.runtime.venvs import VenvCache

mountpoint, options, scenario = sys.argv[1:4]
subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", mountpoint], check=True)
cache_dir = Path(mountpoint) / "venvs"


def fill(path, chunk=b"x" * 4096):
    """Write PATH until the disk is full; the disk is full after."""
    try:
        with open(path, "wb", buffering=0) as out:
            while True:
                out.write(chunk)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc


def use_up_inodes(directory):
    directory.mkdir(exist_ok=True)
    n = 0
    while True:
        try:
            (directory / f"f{n}").touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            return
        n += 1


def standin(fill_disk, files=40):
    """A build: `uv venv` makes bin/, `uv pip install` a datahub command and FILES files (an
    installed package's); with FILL_DISK the install then takes the disk's last byte."""
    def build(step):
        target = Path(step.cwd)
        if step.argv[1] == "venv":
            (target / "bin").mkdir(exist_ok=True)
            return 0, ""
        cli = target / "bin" / "datahub"
        cli.write_text("#!/bin/sh\n")
        cli.chmod(0o755)
        for n in range(files):
            (target / f"module{n}.py").touch()
        if fill_disk:
            fill(target / "wheel-data")
        return 0, ""
    return build


def ask(cache, version):
    try:
        return {"cli": cache.datahub_cli(version, [], [])}
    except TaskRejected as exc:
        return {"rejected": exc.reason, "message": str(exc)}
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


seen = {}
if scenario == "inodes":
    cache = VenvCache(str(cache_dir), builder=standin(False, files=80))  # an older, bigger release
    old = cache.datahub_cli("1.0.0", [], [])
    cache.builder = standin(False)
    cache.release(old)
    marker = Path(old).parents[1].with_name(Path(old).parents[1].name + ".ready")
    month_ago = time.time() - 40 * 86400
    os.utime(marker, (month_ago, month_ago))  # nobody used it for 40 days
    use_up_inodes(Path(mountpoint) / "other")
    seen["new"] = ask(cache, "1.2.0")
    seen["old_still_there"] = Path(old).parents[1].exists()
elif scenario == "blocks":
    cache = VenvCache(str(cache_dir), builder=standin(True))
    target = cache.venv_dir("1.2.0", [], [])
    seen["full"] = ask(cache, "1.2.0")
    seen["venv_left"] = target.exists()
    seen["marker_left"] = target.with_name(target.name + ".ready").exists()
    cache.builder = standin(False)  # space again: what the failed build wrote is gone
    seen["again"] = ask(cache, "1.2.0")
print(json.dumps(seen))
'''


def _in_own_mount_namespace(tmp_path: Path, options: str, scenario: str) -> dict:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs takes root")
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("no unshare(1) or mount(8) here")
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", CHILD,
                           str(mountpoint), options, scenario], env=env, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"no mount namespace of our own here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert not any(mountpoint.iterdir()), "the tmpfs was mounted outside the child's mount namespace"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cache_out_of_inodes_evicts_what_nobody_used_for_a_month_and_builds_the_new_venv(tmp_path):
    seen = _in_own_mount_namespace(tmp_path, "size=64m,nr_inodes=200", "inodes")
    assert "cli" in seen["new"], f"a full cache was never cleaned: the new venv failed with {seen['new']}"
    assert not seen["old_still_there"], "the venv unused for 40 days is still in the full cache"


def test_a_disk_that_fills_up_at_the_ready_marker_fails_the_build_clearly_and_leaves_nothing(tmp_path):
    seen = _in_own_mount_namespace(tmp_path, "size=512k,nr_inodes=4096", "blocks")
    assert seen["full"].get("rejected") == "VENV_INSTALL_FAILED", \
        f"a full disk is not reported as a failed install: {seen['full']}"
    assert "No space left on device" in seen["full"]["message"], seen["full"]
    assert not seen["venv_left"], "the failed build's venv stayed on the full disk"
    assert not seen["marker_left"], "the failed build's ready marker stayed"
    assert "cli" in seen["again"], f"the next build failed: {seen['again']}"
