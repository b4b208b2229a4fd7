"""What the tests of a real TaskRunner around a stand-in `datahub` CLI share: the CLI installed
by a stand-in venv build, the task prepared as the master prepares it, a control plane that
hands out one run and keeps its results, and the runner's services with the master's wiring."""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from executor.controlplane_client import Claimed
from executor.leases import Leases
from executor.ledger import Ledger
from executor.operability import ExecutorMetrics
from executor.runner import RunnerServices
from executor.runtime.secrets import ChainedSecretStore
from executor.runtime.task_log import TaskLogDirectory
from executor.runtime.tasks import PreparedTask, prepare_task
from executor.runtime.venvs import VenvCache
from executor.task_users import TaskUsers

RECIPE_ARGS = {"recipe": "source:\n  type: mysql\n", "version": "1.2.0"}


def stand_in_prepare(tmp_path: Path, cli: str | bytes, *, work: Path | None = None,
                     network: dict[str, str] | None = None) -> Callable[[Claimed, Any, Any], PreparedTask]:
    """prepare_task as the master calls it, its venv build replaced by one that installs CLI (a
    script) as the venv's `datahub`; work directories under WORK (TMP_PATH/work); NETWORK as
    network_env.for_tasks gives it (none by default)."""
    def build(step) -> tuple[int, str]:
        target = Path(step.cwd)
        (target / "bin").mkdir(exist_ok=True)
        if step.argv[1] != "venv":
            (target / "bin" / "datahub").write_bytes(cli.encode() if isinstance(cli, str) else cli)
            (target / "bin" / "datahub").chmod(0o755)
        return 0, ""

    venvs = VenvCache(str(tmp_path / "venvs"), builder=build)
    work_root = str(work or tmp_path / "work")
    return lambda claimed, user, stop=None: prepare_task(
        claimed.task, claimed.args, execution_id=claimed.execution_id, secrets=ChainedSecretStore([]), venvs=venvs,
        work_root=work_root, default_version="native", gms_url="http://127.0.0.1:9", ingest_token="t", user=user,
        network=dict(network or {}), stop=stop)


class RecordingControlPlane:
    """Hands out one run of EXECUTION under LEASE and keeps every result it is given."""

    def __init__(self, execution_id: str, lease: str = "lease") -> None:
        self.execution_id, self.lease = execution_id, lease
        self.results: list[dict] = []

    def claim(self, execution_id: str, **_) -> Claimed:
        return Claimed(execution_id=self.execution_id, lease=self.lease, task="RUN_INGEST", pool_id="pool",
                       args=dict(RECIPE_ARGS), ingest_token="t")

    def report(self, execution_id: str, lease: str, result: dict) -> None:
        self.results.append(result)

    def cancel_requested(self, execution_id: str) -> bool:
        return False


class RecordingUploads:
    """The log uploader to the control plane (no S3 bucket), keeping each full log it is given:
    what left the executor."""
    bucket = None

    def __init__(self) -> None:
        self.logs: list[bytes] = []

    def upload(self, execution_id: str, lease: str, data: bytes, *, accepted=(), quick: bool = False) -> str:
        self.logs.append(data)
        return "control plane"

    def destination(self, execution_id: str) -> str:
        return "control plane"


def runner_services(*, client: Any, sandbox: Any, prepare: Callable, leases: Leases, logs_dir: Path,
                    logs: Any = None, consumers: dict | None = None, acks: Any = None,
                    progress_interval_s: float = 0.2) -> RunnerServices:
    """RunnerServices as the master wires them, for tasks run as the executor's own user."""
    return RunnerServices(
        settings=SimpleNamespace(executor_id="executor-1", pool_id="pool", cancel_grace_s=1, task_pids_max=512,
                                 task_timeout_s=60, progress_interval_s=progress_interval_s),
        client=client, consumers=consumers or {"ingestion": None},
        acks=acks or SimpleNamespace(ack=lambda lease: None),
        ledgers={"ingestion": Ledger("ingestion", 2), "monitors": Ledger("monitors", 2)}, leases=leases,
        sandbox=sandbox, prepare=prepare, logs=logs or SimpleNamespace(bucket=None),
        task_logs=TaskLogDirectory(str(logs_dir), held=leases.claimed_ids), metrics=ExecutorMetrics(),
        instance_id="instance-1", task_users=TaskUsers.shared(None), private_tmp=False,
        stopping=threading.Event(), kill_now=threading.Event())
