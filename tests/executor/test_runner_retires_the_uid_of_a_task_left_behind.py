"""A task whose processes would not die keeps its uid: the runner retires it (TaskUsers.retire)
instead of giving it back, so no later task, given that uid, can signal those processes or read
what they hold. A real TaskRunner runs a real task as a uid of a range, in a real sandbox; the
task leaves a process behind, which this test freezes (cgroup v1 freezer): a frozen process
stays in the kernel's refrigerator through SIGKILL, as one stuck in D state does, so the
sandbox's kill cannot end it and the outcome names it in unkillable_pids. The same task with
nothing frozen ends whole, and its uid goes back."""
from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

import sandbox.driver
from executor.controlplane_client import Claimed
from executor.leases import Leases, QueueRef, State
from executor.ledger import Ledger
from executor.operability import ExecutorMetrics
from executor.runner import RunnerServices, TaskRunner
from executor.runtime.masking import Masker
from executor.runtime.task_log import TaskLogDirectory
from executor.runtime.tasks import PreparedTask
from executor.task_users import Cancelled, TaskUsers
from sandbox import Outcome, TaskUser
from sandbox.detect import read_hierarchies, v1_hierarchy
from tests.sandbox.conftest import _open_or_skip

EXECUTION = "exe_left_behind"
TASK_UID = 3000000  # no account or group has it
# The task leaves `sleep` behind, says its pid, and ends once told to (the test freezes it first).
# The sleep's output goes elsewhere: holding the task's, it would keep the log pump waiting.
TASK = ("sleep 300 >/dev/null 2>&1 & echo $! > left.tmp && mv left.tmp left.pid; "
        "while [ ! -e go ]; do sleep 0.01; done")


@dataclass
class ControlPlane:
    claimed: Claimed = field(default_factory=lambda: Claimed(
        execution_id=EXECUTION, lease="lease", task="RUN_INGEST", pool_id="pool", args={}, ingest_token="t"))
    results: list[dict] = field(default_factory=list)

    def claim(self, execution_id: str, **_) -> Claimed:
        return self.claimed

    def report(self, execution_id: str, lease: str, result: dict) -> None:
        self.results.append(result)

    def cancel_requested(self, execution_id: str) -> bool:
        return False


class Acks:
    def ack(self, lease) -> None:
        pass


class Freezer:
    """A frozen cgroup v1 freezer cgroup below this process's own; thawed and removed at the end."""

    def __init__(self) -> None:
        hierarchy = v1_hierarchy(read_hierarchies(), "freezer")
        if hierarchy is None or not hierarchy.writable:
            pytest.skip("no writable cgroup v1 freezer hierarchy here")
        self.path = os.path.join(hierarchy.own_dir, f"test-frozen-{uuid.uuid4().hex[:10]}")
        os.mkdir(self.path)

    def freeze(self, pid: int) -> None:
        Path(self.path, "cgroup.procs").write_text(str(pid))
        Path(self.path, "freezer.state").write_text("FROZEN")
        deadline = time.monotonic() + 10
        while Path(self.path, "freezer.state").read_text().strip() != "FROZEN":
            assert time.monotonic() < deadline, "the freezer did not freeze the task's process"
            time.sleep(0.01)

    def thaw_and_remove(self) -> None:
        Path(self.path, "freezer.state").write_text("THAWED")  # what was SIGKILLed dies now
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(self.path)
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


@pytest.fixture
def task_sandbox():
    box = _open_or_skip()
    if box.mode != "cgroup-v1":
        box.close()
        pytest.skip(f"the v1 freezer holds a process through SIGKILL; this sandbox is {box.mode}")
    yield box
    box.sweep()  # the cgroup kept for the process that would not die
    box.close()


@pytest.fixture
def freezer():
    made = Freezer()
    yield made
    made.thaw_and_remove()


@pytest.fixture(autouse=True)
def short_kill_budget(monkeypatch):
    """How long the sandbox keeps killing before it names what would not die: 1 s, not 10."""
    monkeypatch.setattr(sandbox.driver, "KILL_BUDGET_S", 1.0)


@dataclass
class Ran:
    """What run_task saw: the task's outcome, the control plane it reported to, the ingestion
    ledger it was admitted to, and the task user it was prepared for."""
    outcome: Outcome
    control_plane: ControlPlane
    ledger: Ledger
    user: TaskUser | None


def run_task(tmp_path: Path, box, users: TaskUsers, freeze=None) -> Ran:
    """One task run by a real TaskRunner as the task user USERS gives (the executor's own, for
    TaskUsers.shared(None)); FREEZE(pid), if given, is done to the process the task leaves
    behind before the task is let end."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    started, prepared_for = [], []

    class StartedHere:
        def start(self, *args, **kwargs):
            process = box.start(*args, **kwargs)
            started.append(process)
            deadline = time.monotonic() + 30
            while not (workdir / "left.pid").exists():
                assert time.monotonic() < deadline and process.poll() is None, "the task did not start its child"
                time.sleep(0.01)
            if freeze is not None:
                freeze(int((workdir / "left.pid").read_text()))
            (workdir / "go").touch()
            return process

    def prepare(claimed: Claimed, user: TaskUser | None, stop=None) -> PreparedTask:
        prepared_for.append(user)
        if user is not None:
            os.chown(workdir, user.uid, user.gid)  # the task's own, as prepare_task makes it
        return PreparedTask(argv=["/bin/sh", "-c", TASK], env={"PATH": os.defpath}, stdin_bytes=b"",
                            workdir=str(workdir), masker=Masker([]), report_path=str(workdir / "report.json"),
                            memory_limit_bytes=None)

    control_plane = ControlPlane()
    leases = Leases()
    lease, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
    ledger = Ledger("ingestion", 2)
    services = RunnerServices(
        settings=SimpleNamespace(executor_id="executor-1", pool_id="pool", cancel_grace_s=1, task_pids_max=512,
                                 task_timeout_s=60, progress_interval_s=5),
        client=control_plane, consumers={"ingestion": None}, acks=Acks(),
        ledgers={"ingestion": ledger, "monitors": Ledger("monitors", 2)}, leases=leases,
        sandbox=StartedHere(), prepare=prepare, logs=SimpleNamespace(bucket=None),
        task_logs=TaskLogDirectory(str(tmp_path / "logs"), held=lambda: set()), metrics=ExecutorMetrics(),
        instance_id="instance-1", task_users=users, private_tmp=False, stopping=threading.Event(),
        kill_now=threading.Event())
    runner = TaskRunner(lease, services)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert lease.state is State.REPORTING and len(started) == 1 and len(prepared_for) == 1
    return Ran(started[0].wait(timeout=10), control_plane, ledger, prepared_for[0])


def next_task_gets(users: TaskUsers) -> TaskUser | None:
    """The uid the next task is given; None when there is none to give (acquire would wait)."""
    refuse_to_wait = threading.Event()
    refuse_to_wait.set()
    try:
        return users.acquire("exe_next", "ingestion", refuse_to_wait)
    except Cancelled:
        return None


def test_the_uid_of_a_task_whose_process_would_not_die_is_not_given_to_the_next_task(tmp_path, task_sandbox,
                                                                                     freezer):
    users = TaskUsers.uid_range(TASK_UID, TASK_UID)
    ran = run_task(tmp_path, task_sandbox, users, freeze=freezer.freeze)
    assert ran.user == TaskUser(TASK_UID, TASK_UID)
    assert ran.outcome.unkillable_pids and ran.outcome.tree_left, ran.outcome
    assert ran.control_plane.results and ran.control_plane.results[-1]["status"] == "SUCCESS", "the task itself ran"
    assert users.held() == {f"retired:{EXECUTION}": TaskUser(TASK_UID, TASK_UID)}
    assert next_task_gets(users) is None, "the uid of a process still alive was handed to another task"


def test_the_uid_of_a_task_that_ended_whole_goes_back(tmp_path, task_sandbox):
    users = TaskUsers.uid_range(TASK_UID, TASK_UID)
    ran = run_task(tmp_path, task_sandbox, users)
    assert ran.user == TaskUser(TASK_UID, TASK_UID)
    assert not ran.outcome.unkillable_pids and not ran.outcome.tree_left, ran.outcome
    assert users.held() == {}
    assert next_task_gets(users) == TaskUser(TASK_UID, TASK_UID)
