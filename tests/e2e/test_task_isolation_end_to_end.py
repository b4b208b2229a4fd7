"""A task, and the code its virtualenv build runs, against the executor, for real: the executor
runs as root (as the systemd unit does), tasks as an unprivileged user (here `nobody`) with a
private /tmp. A stand-in `datahub` command (tests/e2e/probes/fake_datahub.py) tries what a
hostile recipe would; a requirement built at install time records who built it."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest

from .conftest import ROOT, ExecutorProcess
from .probe_packages import PackageServer

NOBODY = 65534


@pytest.fixture
def isolated(system, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("tasks can run as another user only when the executor runs as root")
    work = Path(f"/tmp/dhx-isolation-{uuid.uuid4().hex[:8]}")
    venvs = ROOT / ".cache" / f"isolation-venvs-{uuid.uuid4().hex[:8]}"
    work.mkdir(mode=0o711)
    os.chmod(work, 0o711)
    server = PackageServer(tmp_path / "packages")
    env = system.executor_env("isolated-1", DATAHUB_EXECUTOR_TASK_USER="nobody", DATAHUB_EXECUTOR_TASK_PRIVATE_TMP="true",
                              DATAHUB_EXECUTOR_TASK_PYTHON="/usr/bin/python3", DATAHUB_EXECUTOR_WORK_DIR=str(work),
                              DATAHUB_EXECUTOR_VENV_CACHE_DIR=str(venvs))
    executor = ExecutorProcess(env)
    system.executors.append(executor)
    executor.wait_for_line("Starting datahub executor worker", timeout_s=60)
    try:
        yield executor, server, venvs, env
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(venvs, ignore_errors=True)


def test_a_task_and_its_build_run_as_the_task_user_and_cannot_reach_the_executor(system, isolated):
    executor, server, venvs, env = isolated
    executor.wait_for_line("isolation: tasks run as uid 65534")
    source = system.cp.create_source("probe", "source:\n  type: datahub-mock-data\n  config: {}\n",
                                     version=server.url(server.wheel), extra_pip=[f"dhxprobe @ {server.url(server.sdist)}"])
    execution = system.cp.run_source(source["id"])
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)
    log = system.cp.logs(execution["id"])["log"]
    assert done["status"] == "SUCCESS", log[-3000:]
    probe = json.loads(next(line for line in log.splitlines() if line.startswith("PROBE "))[6:])
    assert (probe["uid"], probe["euid"], probe["gid"], probe["groups"]) == (NOBODY, NOBODY, NOBODY, [])
    assert probe["no_new_privs"] == "1" and int(probe["cap_eff"], 16) == 0
    assert probe["read_master_environ"] in ("EACCES", "EPERM"), "the executor's token stays out of reach"
    assert probe["join_master_cgroups"] in ("EACCES", "EPERM", "EROFS"), "it cannot leave its cgroups"
    assert probe["other_runs_seen"] in ("EACCES", []), "other runs' directories are not its business"
    assert (probe["workdir_mode"], probe["workdir_owner"]) == ("0o700", NOBODY)
    assert probe["leave_a_file_in_tmp"] == "allowed"
    assert not os.path.exists("/tmp/dhx-probe-left-behind"), "its /tmp died with it"
    executor_token = env["DATAHUB_GMS_TOKEN"]
    assert probe["token_sha256"] != hashlib.sha256(executor_token.encode()).hexdigest()[:16], "its own token, not ours"
    assert not [name for name in probe["env_names"] if name.startswith(("AWS_", "DATAHUB_EXECUTOR_"))]
    (venv,) = [d for d in venvs.iterdir() if d.is_dir()]
    built = json.loads((venv / "build-probe.json").read_text())
    assert built["uid"] == built["euid"] == NOBODY, "install-time code ran as the task user"
    assert "DATAHUB_GMS_TOKEN" not in built["env_names"] and not [n for n in built["env_names"] if n.startswith("AWS_")]
    assert "task-venv-build" in built["cgroups"], "confined like a task"
    info = venv.stat()
    assert info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), "sealed once built"
    writable = [p for p in venv.rglob("*")
                if p.lstat().st_uid != 0 or (not p.is_symlink() and p.lstat().st_mode & (stat.S_IWGRP | stat.S_IWOTH))]
    assert writable == [], "no task can change what later tasks run"
    assert executor_token not in log and executor_token not in "\n".join(executor.lines)
