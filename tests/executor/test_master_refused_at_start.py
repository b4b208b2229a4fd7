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


def _start_on_a_pool(tmp_path, **settings: str) -> tuple[int, list[str]]:
    """An executor started with SETTINGS, and otherwise everything right: a control plane with
    the pool and a token for it."""
    with running_controlplane(tmp_path / "cp") as cp:
        cp.create_pool("remote", default=True)
        return _start(environment(tmp_path, DATAHUB_GMS_URL=cp.gms_url,
                                  DATAHUB_GMS_TOKEN=cp.create_executor_token(["remote"]), **settings))


def test_a_refused_token_exits_2_with_one_line(tmp_path):
    with running_controlplane(tmp_path / "cp") as cp:
        cp.create_pool("remote", default=True)
        status, lines = _start(environment(tmp_path, DATAHUB_GMS_URL=cp.gms_url,
                                           DATAHUB_GMS_TOKEN="not-a-token-this-control-plane-issued"))
    refusals = [line for line in lines if "refused by the control plane" in line]
    assert status == 2, "\n".join(lines[-10:])
    assert len(refusals) == 1 and "401" in refusals[0], "\n".join(lines[-10:])
    assert "set DATAHUB_GMS_TOKEN" in refusals[0], f"the line says what to do, as check does: {refusals[0]}"
    assert not any("Traceback" in line for line in lines), "\n".join(lines)


def test_a_pool_the_control_plane_does_not_know_exits_2(tmp_path):
    with running_controlplane(tmp_path / "cp") as cp:
        status, lines = _start(environment(tmp_path, DATAHUB_GMS_URL=cp.gms_url,
                                           DATAHUB_GMS_TOKEN=cp.create_executor_token(None),
                                           DATAHUB_EXECUTOR_POOL_ID="no-such-pool"))
    assert status == 2, "\n".join(lines[-10:])
    refusals = [line for line in lines if "no-such-pool" in line and "refused by the control plane" in line]
    assert refusals, "\n".join(lines)
    assert "create it, or fix DATAHUB_EXECUTOR_POOL_ID" in refusals[0], refusals[0]


def test_a_pids_limit_over_what_the_kernel_takes_exits_2_naming_it(tmp_path):
    """pids.max takes at most PID_MAX_LIMIT (4194304 on 64-bit kernels). A larger
    DATAHUB_EXECUTOR_TASK_PIDS_MAX ("no limit to speak of") was accepted, the executor started and
    went ONLINE, and then every task it took failed SANDBOX_ERROR ("the kernel refused ... for
    pids.max"). It is refused at start instead, in one line naming the setting and the most it
    takes; that most is what the kernel takes."""
    from sandbox import Limits, Sandbox, Status
    from executor.settings import MAX_TASK_PIDS

    status, lines = _start_on_a_pool(tmp_path, DATAHUB_EXECUTOR_SANDBOX_MODE="auto",
                                     DATAHUB_EXECUTOR_TASK_PIDS_MAX=str(MAX_TASK_PIDS + 1))
    assert status == 2, "\n".join(lines[-10:])
    assert lines == [f"datahub-executor: DATAHUB_EXECUTOR_TASK_PIDS_MAX is invalid: {MAX_TASK_PIDS + 1} is over "
                     f"{MAX_TASK_PIDS}, the most a cgroup's pids.max takes"], "\n".join(lines)
    sandbox = Sandbox.open(f"test-pids-{tmp_path.name[-8:]}")
    try:
        if sandbox.mode == "none":
            return  # no pids.max here to take it
        outcome = sandbox.start(["true"], Limits(pids_max=MAX_TASK_PIDS)).wait(timeout=30)
        assert outcome.status is Status.SUCCEEDED, outcome
    finally:
        sandbox.sweep()
        sandbox.close()


def test_a_progress_interval_longer_than_any_wait_exits_2_naming_it(tmp_path):
    """A number of seconds past threading.TIMEOUT_MAX (about 292 years) passed the settings, and
    the first wait on it raised OverflowError: with DATAHUB_EXECUTOR_PROGRESS_INTERVAL=1e10 the
    executor went ONLINE, its cancels loop died at its first turn, and /health and /health/live
    answered 503 "thread(s) gone: cancels" for good (a restart loop under a liveness probe or the
    systemd watchdog). It is refused at start instead, in one line naming the setting."""
    status, lines = _start_on_a_pool(tmp_path, DATAHUB_EXECUTOR_PROGRESS_INTERVAL="1e10")
    assert status == 2, "\n".join(lines[-10:])
    assert len(lines) == 1 and lines[0].startswith(
        "datahub-executor: DATAHUB_EXECUTOR_PROGRESS_INTERVAL is invalid: '1e10' is over "), "\n".join(lines)


def test_a_log_bucket_written_as_a_url_exits_2_naming_it(tmp_path):
    """DATAHUB_EXECUTOR_LOG_S3_BUCKET=s3://my-executor-logs was accepted, and then every task's
    full log was refused by botocore before it left the host (ParamValidationError: invalid
    bucket name), a warning per run, and never reached S3 nor the control plane. It is refused at
    start instead, in one line naming the setting and the form it takes."""
    status, lines = _start_on_a_pool(tmp_path, DATAHUB_EXECUTOR_LOG_S3_BUCKET="s3://my-executor-logs/executor")
    assert status == 2, "\n".join(lines[-10:])
    assert lines == ["datahub-executor: DATAHUB_EXECUTOR_LOG_S3_BUCKET is invalid: 's3://my-executor-logs/executor' is "
                     "not an S3 bucket name: name the bucket alone (e.g. my-executor-logs), without s3:// or a path"], \
        "\n".join(lines)


def test_a_misspelt_setting_is_named_at_start_with_the_setting_it_likely_meant(tmp_path):
    """A name that is no setting was ignored in silence, its setting left at the default (two
    workers asked for, four run): the start now says so, once, and goes on."""
    with running_controlplane(tmp_path / "cp") as cp:
        status, lines = _start(environment(tmp_path, DATAHUB_GMS_URL=cp.gms_url, DATAHUB_GMS_TOKEN="not-a-token",
                                           DATAHUB_EXECUTOR_INGESTION_MAX_WORKER="2"))
    said = [line for line in lines if "DATAHUB_EXECUTOR_INGESTION_MAX_WORKER names no setting" in line]
    assert len(said) == 1 and "did you mean DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS?" in said[0], "\n".join(lines)
    assert status == 2  # the token: this start goes no further
