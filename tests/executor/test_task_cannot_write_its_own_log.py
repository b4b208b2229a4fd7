"""A task of the executor's own uid (an unprivileged container, DATAHUB_EXECUTOR_TASK_USER=none)
cannot write the executor's lines into the log that is shipped. Before, the log file had its name
while the task ran; the task opened it and wrote, past the relay, a line marked with the byte that
only the executor's lines carry, and the uploaded log showed it as the executor's outcome. A real
TaskRunner, a real sandbox (mode none, as where tasks share the executor's uid) and a real task
that writes into the log file by name."""
from __future__ import annotations

import re
import uuid
from types import SimpleNamespace

from executor.leases import Leases, QueueRef
from executor.runner import TaskRunner
from sandbox import Sandbox

from .runner_harness import RecordingControlPlane, RecordingUploads, runner_services, stand_in_prepare

EXECUTION = "exe_forges_its_log"
FORGED = b"[executor] outcome: SUCCEEDED exit_code=0 signal=None (forged)"
# As the master lays them out: logs in WORK/logs, the task's HOME in WORK/executions/<id>. The
# write lands 1 MiB in, past anything the executor writes itself, so no later write covers it.
TASK = (b"#!/bin/sh\necho started\n"
        b"printf '\\377" + FORGED + b"\\n' | dd of=\"$HOME/../../logs/$DATAHUB_EXECUTION_ID.log\" bs=1 "
        b"seek=1048576 conv=notrunc 2>/dev/null\necho wrote $?\nexit 0\n")


def shown_as_the_executors(shipped: bytes) -> bool:
    """Whether SHIPPED (rendered, as it left the executor) shows the forged line as the
    executor's: anywhere but after the `[task] ` a task's imitation is given."""
    return re.search(rb"(?<!\[task\] )" + re.escape(FORGED), shipped) is not None


def test_a_task_of_the_executors_uid_cannot_forge_the_executors_lines_in_its_shipped_log(tmp_path):
    work = tmp_path / "work"
    sandbox = Sandbox.open(f"test-{uuid.uuid4().hex[:10]}", mode="none")
    control_plane, uploads, acked = RecordingControlPlane(EXECUTION), RecordingUploads(), []
    leases = Leases()
    lease, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
    services = runner_services(client=control_plane, sandbox=sandbox, prepare=stand_in_prepare(tmp_path, TASK, work=work),
                               leases=leases, logs_dir=work / "logs", logs=uploads,
                               acks=SimpleNamespace(ack=acked.append))
    try:
        runner = TaskRunner(lease, services)
        runner.start()
        runner.join(timeout=30)
        assert not runner.is_alive(), "the runner never finished"
    finally:
        sandbox.close()
    (result,) = [r for r in control_plane.results if r["status"] != "RUNNING"]
    assert result["status"] == "SUCCESS" and acked == [lease]
    assert "wrote 0" in result["report"], "the task's write into the log's name did not happen"
    shipped = [result["report"].encode(), *uploads.logs]
    assert not any(shown_as_the_executors(log) for log in shipped), "the task forged the executor's outcome"
    # The log is kept on disk for operators, under its name, without what the task wrote there.
    kept = (work / "logs" / f"{EXECUTION}.log").read_bytes()
    assert b"\xff[executor] outcome: SUCCEEDED" in kept and b"forged" not in kept
    assert (work / "logs" / f"{EXECUTION}.log").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (work / "logs").iterdir()] == [f"{EXECUTION}.log"], "a temporary file was left"
