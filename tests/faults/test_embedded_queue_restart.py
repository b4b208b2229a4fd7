"""A control-plane process restarted while a run is RUNNING on an executor. The embedded SQS
server keeps its messages in the process's memory, so the run's message dies with it (decision
68): the run goes on on its live executor without a message, and runs again on another
executor if its executor then crashes, as on SQS, where the crashed holder's message comes back
after its visibility timeout (decision 6)."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from executor.testing import free_port, remove_cgroup_roots, stop_all_without_draining
from tests.e2e.conftest import System, custom_env, custom_recipe

POOL = "remote"
VISIBILITY_TIMEOUT_S = 4
# Executors judged STALE after 9 s of silence and OFFLINE after 18: a crashed holder's run is
# taken over in between, with room for a loaded machine.
HEARTBEAT_S = "3"


class ControlPlaneProcess:
    """`datahub-executor-admin serve` (embedded SQS) as its own process, so that a restart loses
    what the process held in memory; its ports are the state dir's, the same after a restart."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.http = requests.Session()

    @property
    def gms_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/gms"

    def start(self) -> None:
        admin = Path(sys.executable).parent / "datahub-executor-admin"
        self.process = subprocess.Popen([str(admin), "serve", "--state-dir", str(self.state_dir), "--port", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, "the control plane did not start"
            time.sleep(0.1)
        self.http.headers["Authorization"] = f"Bearer {(self.state_dir / 'admin-token').read_text().strip()}"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        answer = self.http.post(f"{self.gms_url}/api/graphql", json={"query": query, "variables": variables},
                                timeout=30).json()
        assert not answer.get("errors"), answer
        return answer["data"]

    def create_executor_token(self, pools: list[str]) -> str:
        answer = self.http.post(f"{self.gms_url}/admin/v1/tokens", json={"kind": "executor", "pools": pools}, timeout=30)
        answer.raise_for_status()
        return answer.json()["token"]

    def run_sleepy(self, name: str, out_file: Path, seconds: int, **config: Any) -> str:
        recipe = custom_recipe("SleepySource", out_file, seconds=seconds, **config)
        source = self.graphql("mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }",
                              i={"name": name, "type": "e2e_test_sources.SleepySource",
                                 "config": {"recipe": recipe, "executorId": POOL, "extraArgs": [
                                     {"key": "extra_env_vars", "value": json.dumps(custom_env())}]}})
        urn = self.graphql("mutation($u: String!) { createIngestionExecutionRequest(input: {ingestionSourceUrn: $u}) }",
                           u=source["createIngestionSource"])["createIngestionExecutionRequest"]
        return urn.rsplit(":", 1)[1]

    # the control plane's own records, read from its database ----------------------------------
    def _one(self, sql: str, params: tuple) -> dict[str, Any] | None:
        db = sqlite3.connect(f"file:{self.state_dir / 'controlplane.sqlite3'}?mode=ro", uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            row = db.execute(sql, params).fetchone()
            return dict(row) if row else None
        finally:
            db.close()

    def execution(self, execution_id: str) -> dict[str, Any]:
        return self._one("SELECT * FROM executions WHERE id=?", (execution_id,))

    def wait_for(self, execution_id: str, statuses: set[str], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (row := self.execution(execution_id))["status"] not in statuses:
            assert time.monotonic() < deadline, f"execution is {row['status']}, not one of {sorted(statuses)}"
            time.sleep(0.2)
        return row

    def last_heartbeat(self, executor_id: str) -> float:
        row = self._one("SELECT last_seen FROM executor_instances WHERE executor_id=?", (executor_id,))
        return row["last_seen"] if row else 0.0

    def queue_url(self) -> str:
        return self._one("SELECT ingestion_queue_url FROM pool_queues WHERE pool_id=?", (POOL,))["ingestion_queue_url"]


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[tuple[ControlPlaneProcess, System]]:
    """A control-plane process with pool POOL (a 4 s visibility timeout), and the e2e harness's
    executors on it."""
    (tmp_path / "secrets").mkdir()
    cp = ControlPlaneProcess(tmp_path / "controlplane")
    cp.start()
    system = System(cp, tmp_path)  # type: ignore[arg-type]  (it uses gms_url and create_executor_token)
    try:
        cp.graphql("mutation($i: CreateRemoteExecutorPoolInput!) { createRemoteExecutorPool(input: $i) }",
                   i={"executorPoolId": POOL, "isDefault": True})
        cp.http.put(f"{cp.gms_url}/admin/v1/pools/{POOL}/queues",
                    json={"visibility_timeout_s": VISIBILITY_TIMEOUT_S}, timeout=30).raise_for_status()
        yield cp, system
    finally:
        stop_all_without_draining(system.executors)
        left = remove_cgroup_roots(system.cgroup_roots)
        cp.kill()
    assert not left, f"executors left task cgroups behind: {left}"


def restart_while_running(cp: ControlPlaneProcess, executor_id: str) -> None:
    """Kill the control plane's process and start it again, then wait until EXECUTOR_ID has
    heartbeated to the new one."""
    cp.kill()
    cp.start()
    restarted = time.time()
    deadline = time.monotonic() + 60
    while cp.last_heartbeat(executor_id) < restarted:
        assert time.monotonic() < deadline, f"{executor_id} never heartbeated to the restarted control plane"
        time.sleep(0.2)


def starts(system: System, execution_id: str, executor_index: int) -> int:
    return sum("started: RUN_INGEST" in line and execution_id in line for line in system.executors[executor_index].lines)


def wait_for_start(system: System, cp: ControlPlaneProcess, execution_id: str) -> None:
    deadline = time.monotonic() + 180
    while not starts(system, execution_id, 0) or cp.execution(execution_id)["status"] != "RUNNING":
        assert time.monotonic() < deadline, "the task never started:\n" + "\n".join(system.executors[0].lines[-30:])
        time.sleep(0.2)


def running_through_a_restart(cp: ControlPlaneProcess, system: System, name: str, recipe_path, seconds: float,
                              **config: Any):
    """executor-a runs a sleepy run through a control-plane restart, then executor-b joins the
    pool: (executor-a, the run's id)."""
    holder = system.start_executor("executor-a", DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL=HEARTBEAT_S)
    run = cp.run_sleepy(name, recipe_path, seconds=seconds, **config)
    wait_for_start(system, cp, run)
    restart_while_running(cp, "executor-a")
    system.start_executor("executor-b", DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL=HEARTBEAT_S)
    return holder, run


def test_a_run_whose_executor_crashes_after_a_control_plane_restart_runs_again_on_another(restartable, tmp_path):
    """The restart took the run's message with the embedded SQS server's memory: when its
    executor then crashed, nothing was left to deliver, and the sweep ended it ABORTED
    (EXECUTOR_LOST) instead of another executor running it."""
    cp, system = restartable
    release = tmp_path / "release"  # executor-b's run of it ends once started, not 30 s later
    holder, run = running_through_a_restart(cp, system, "crashes", tmp_path / "a.json", seconds=30,
                                            until_exists=str(release))
    assert cp.execution(run)["status"] == "RUNNING"
    holder.kill9()
    # The crash leaves its task's (empty) cgroup for the executor's next start to sweep; there is none.
    crashed_root = holder.env["DATAHUB_EXECUTOR_CGROUP_ROOT"]
    system.cgroup_roots.discard(crashed_root)
    remove_cgroup_roots({crashed_root})
    release.touch()
    done = cp.wait_for(run, {"SUCCESS", "FAILURE", "ABORTED", "CANCELLED"}, timeout_s=240)
    assert (done["status"], done["reason"]) == ("SUCCESS", None), "its message was lost: nobody ran it again"
    assert done["executor_id"] == "executor-b"
    assert starts(system, run, 1) == 1


def test_a_run_on_a_live_executor_through_a_control_plane_restart_runs_once_and_leaves_no_message(restartable, tmp_path):
    """The live holder's extensions and final delete name a receipt the new queue server never
    issued: refused, said once, and the run ends as it would have. Nothing is sent again while
    its executor heartbeats, so an idle executor beside it never runs it a second time."""
    cp, system = restartable
    holder, run = running_through_a_restart(cp, system, "survives", tmp_path / "a.json", seconds=25)
    done = cp.wait_for(run, {"SUCCESS", "FAILURE", "ABORTED", "CANCELLED"}, timeout_s=240)
    assert (done["status"], done["executor_id"]) == ("SUCCESS", "executor-a")
    assert starts(system, run, 0) == 1 and starts(system, run, 1) == 0
    refused = [line for line in holder.lines if "visibility not extended" in line and run in line]
    assert len(refused) == 1, refused  # warned once, not at every extension of a long task
    assert not any("Traceback" in line for line in holder.lines)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.queue_url().rsplit("/", 2)[0],
                       aws_access_key_id="local", aws_secret_access_key="local")
    attributes = sqs.get_queue_attributes(QueueUrl=cp.queue_url(), AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")
