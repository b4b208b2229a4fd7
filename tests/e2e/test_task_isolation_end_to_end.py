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
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import ROOT, ExecutorProcess
from .probe_packages import PackageServer

NOBODY = 65534


TASK_UIDS = (3_000_000, 3_000_015)  # far above any account a test machine has; 14 + 2: each class keeps its ledger's size


@contextmanager
def isolated_executor(system, tmp_path, task_user: str, executor_id: str):
    """A root executor whose tasks run as TASK_USER with a private /tmp; yields (executor, package
    server, venv cache, its environment) and removes its work and venv directories after."""
    if os.geteuid() != 0:
        pytest.skip("tasks can run as another user only when the executor runs as root")
    work = ROOT / ".cache" / f"isolation-work-{uuid.uuid4().hex[:8]}"  # not below /tmp, which each task has its own of
    venvs = ROOT / ".cache" / f"isolation-venvs-{uuid.uuid4().hex[:8]}"
    work.mkdir(mode=0o711)
    os.chmod(work, 0o711)
    server = PackageServer(tmp_path / "packages")
    env = system.executor_env(executor_id, DATAHUB_EXECUTOR_TASK_USER=task_user, DATAHUB_EXECUTOR_TASK_PRIVATE_TMP="true",
                              DATAHUB_EXECUTOR_TASK_PYTHON="/usr/bin/python3", DATAHUB_EXECUTOR_WORK_DIR=str(work),
                              DATAHUB_EXECUTOR_VENV_CACHE_DIR=str(venvs))
    try:
        executor = ExecutorProcess(env)
        system.executors.append(executor)
        executor.wait_for_line("Starting datahub executor worker", timeout_s=60)
        yield executor, server, venvs, env
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(venvs, ignore_errors=True)


@pytest.fixture
def isolated(system, tmp_path):
    with isolated_executor(system, tmp_path, "nobody", "isolated-1") as started:
        yield started


@pytest.fixture
def uid_per_task(system, tmp_path):
    with isolated_executor(system, tmp_path, "%d-%d" % TASK_UIDS, "isolated-2") as started:
        yield started


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


def test_with_a_uid_range_two_running_tasks_cannot_reach_each_other(system, uid_per_task):
    """One shared task user makes every running task the same uid: a task could read another's
    token and secrets from /proc/<pid>/environ, signal it, and list its work directory. With
    DATAHUB_EXECUTOR_TASK_USER=FIRST-LAST each running task has a uid of its own."""
    executor, server, _, _ = uid_per_task
    executor.wait_for_line("isolation: each task runs as a uid of its own from 3000000-3000015")
    probe_source = dict(version=server.url(server.wheel), extra_pip=[f"dhxprobe @ {server.url(server.sdist)}"])
    recipe = "source:\n  type: datahub-mock-data\n  config: {}\n"
    lingering = system.cp.create_source("lingering", recipe, **probe_source,
                                        extra_env={"DHX_PROBE_ROLE": "linger", "EXECUTOR_TASK_WEIGHT": "0.5"})
    visiting = system.cp.create_source("visiting", recipe, **probe_source,
                                       extra_env={"DHX_PROBE_ROLE": "neighbour", "EXECUTOR_TASK_WEIGHT": "0.5"})
    first = system.cp.run_source(lingering["id"])
    deadline = time.monotonic() + 300
    while "PROBE " not in system.cp.logs(first["id"])["log"]:
        assert time.monotonic() < deadline, "the lingering probe never started"
        time.sleep(0.2)
    second = system.cp.run_source(visiting["id"])
    runs = [system.cp.wait_for_status(e["id"], {"SUCCESS", "FAILURE"}, timeout_s=120) for e in (second, first)]
    probes = []
    for execution, done in zip((second, first), runs):
        log = system.cp.logs(execution["id"])["log"]
        assert done["status"] == "SUCCESS", log[-3000:]
        probes.append(json.loads(next(line for line in log.splitlines() if line.startswith("PROBE "))[6:]))
    visitor, lingerer = probes
    neighbour = visitor["neighbour"]
    assert neighbour is not None, "the two tasks ran at the same time"
    assert {visitor["uid"], lingerer["uid"]} <= set(range(TASK_UIDS[0], TASK_UIDS[1] + 1))
    assert visitor["uid"] != lingerer["uid"] == neighbour["uid"], "a uid of its own, not its neighbour's"
    assert visitor["gid"] == visitor["uid"] and visitor["groups"] == []
    assert neighbour["read_environ"] in ("EACCES", "EPERM"), "its neighbour's token and secrets stay out of reach"
    assert neighbour["signal"] == "EPERM"
    # EACCES: its directory is 0700 and another uid's; ENOENT where the checkout (and so the work
    # root) lies under /tmp, which the visitor's private tmpfs hides but for its own directory.
    assert neighbour["list_workdir"] in ("EACCES", "ENOENT")
    plain = system.cp.create_source("plain", recipe, **probe_source)
    third = system.cp.run_source(plain["id"])
    done = system.cp.wait_for_status(third["id"], {"SUCCESS", "FAILURE"}, timeout_s=120)
    assert done["status"] == "SUCCESS"
    again = json.loads(next(line for line in system.cp.logs(third["id"])["log"].splitlines()
                            if line.startswith("PROBE "))[6:])
    assert again["uid"] not in (visitor["uid"], lingerer["uid"]), "a released uid goes to the back of the line"


@pytest.fixture
def two_uids(system, tmp_path):
    with isolated_executor(system, tmp_path, "3000000-3000001", "isolated-3") as started:
        yield started


def test_ingestion_holding_task_uids_does_not_keep_a_monitor_waiting(system, two_uids):
    """Issue 13: monitors are never starved by ingestion. Two uids, and two ingestion runs of
    weight 0.5 that stay a minute: with the range shared as one pool they held both uids, so a
    monitor check, whose own ledger stood empty, waited that minute. Each class now keeps a uid:
    the second ingestion run waits for one, the monitor runs at once."""
    executor, server, _, _ = two_uids
    executor.wait_for_line("isolation: each task runs as a uid of its own from 3000000-3000001 (group of the same "
                           "number; 1 kept for ingestion, 1 kept for monitors)")
    probe_source = dict(version=server.url(server.wheel), extra_pip=[f"dhxprobe @ {server.url(server.sdist)}"])
    recipe = "source:\n  type: datahub-mock-data\n  config: {}\n"
    lingering = [system.cp.run_source(system.cp.create_source(
        f"lingering-{n}", recipe, **probe_source, extra_env={"DHX_PROBE_ROLE": "linger", "EXECUTOR_TASK_WEIGHT": "0.5"})["id"])
        for n in (1, 2)]
    deadline = time.monotonic() + 300
    while not any("PROBE " in system.cp.logs(e["id"])["log"] for e in lingering):
        assert time.monotonic() < deadline, "no lingering probe ever started"
        time.sleep(0.2)
    executor.wait_for_line("is free for the next ingestion task: waiting for one to end", timeout_s=60)
    checking = system.cp.create_source("checking", recipe, **probe_source, extra_env={"DHX_PROBE_ROLE": "neighbour"})
    monitor = system.cp.run_source(checking["id"], "RUN_MONITOR")
    done = system.cp.wait_for_status(monitor["id"], {"SUCCESS", "FAILURE"}, timeout_s=40)
    log = system.cp.logs(monitor["id"])["log"]
    assert done["status"] == "SUCCESS", log[-3000:]
    probe = json.loads(next(line for line in log.splitlines() if line.startswith("PROBE "))[6:])
    assert probe["neighbour"] is not None, "it ran while an ingestion run held the other uid"
    assert probe["uid"] in (3_000_000, 3_000_001)
    for execution in lingering:  # the one that got the freed uid would stay its minute
        system.cp.cancel(execution["id"])
    for execution in lingering:
        system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE", "CANCELLED"}, timeout_s=60)
