"""A control plane that refuses the executor at start (a wrong or revoked token, a pool that
does not exist) is a setting to fix, not an outage: the start says so in one line and exits 2,
as every other wrong setting does (docs/operations.md), where it ended with exit 1 and a
SystemExit message that named no setting apart from the log."""
from __future__ import annotations

from controlplane.testing import running_controlplane
from executor.testing import ExecutorProcess

from .test_check_local_resources import environment


def _start(env: dict[str, str]) -> tuple[int, list[str]]:
    executor = ExecutorProcess(env)
    try:
        status = executor.process.wait(timeout=60)
    finally:
        if executor.process.poll() is None:
            executor.kill9()
    return status, list(executor.lines)


def test_a_refused_token_exits_2_with_one_line(tmp_path):
    with running_controlplane(tmp_path / "cp") as cp:
        cp.create_pool("remote", default=True)
        status, lines = _start(environment(tmp_path, DATAHUB_GMS_URL=cp.gms_url,
                                           DATAHUB_GMS_TOKEN="not-a-token-this-control-plane-issued"))
    refusals = [line for line in lines if "refused by the control plane" in line]
    assert status == 2, "\n".join(lines[-10:])
    assert len(refusals) == 1 and "401" in refusals[0], "\n".join(lines[-10:])
    assert not any("Traceback" in line for line in lines), "\n".join(lines)


def test_a_pool_the_control_plane_does_not_know_exits_2(tmp_path):
    with running_controlplane(tmp_path / "cp") as cp:
        status, lines = _start(environment(tmp_path, DATAHUB_GMS_URL=cp.gms_url,
                                           DATAHUB_GMS_TOKEN=cp.create_executor_token(None),
                                           DATAHUB_EXECUTOR_POOL_ID="no-such-pool"))
    assert status == 2, "\n".join(lines[-10:])
    assert any("no-such-pool" in line and "refused by the control plane" in line for line in lines), "\n".join(lines)
