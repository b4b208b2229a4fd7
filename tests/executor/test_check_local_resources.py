"""What `run` needs of its own host, checked by `datahub-executor check` before the start: the
work and virtualenv cache directories can be created and written, the task Python runs, and the
health address can be bound. Each passed unchecked, and `run` then stopped with a traceback (work
directory, health address) or failed every task (cache directory, interpreter). `run` itself now
refuses an unusable work directory or health address in one line, exit 2, as a settings error;
and a default CLI version no build could install is a settings error."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

EXECUTOR = str(Path(sys.executable).parent / "datahub-executor")


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """An executor's environment needing nothing outside this host (DataHub is unreachable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUB_", "AWS_")) and "proxy" not in k.lower()}
    env.update({
        "DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "tok-not-used-here",
        "DATAHUB_EXECUTOR_POOL_ID": "remote", "PIP_INDEX_URL": "http://127.0.0.1:9/simple/",
        "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(tmp_path / "absent"), "DATAHUB_EXECUTOR_SANDBOX_MODE": "none",
        "DATAHUB_EXECUTOR_CGROUP_ROOT": f"test-check-{uuid.uuid4().hex[:8]}", "DATAHUB_EXECUTOR_TASK_USER": "none",
        "DATAHUB_EXECUTOR_TASK_PRIVATE_TMP": "false", "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0",
        "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path / "work"), "DATAHUB_EXECUTOR_VENV_CACHE_DIR": str(tmp_path / "venvs"),
    })
    env.update(settings)
    return env


def check_lines(env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run([EXECUTOR, "check"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, "DataHub is unreachable here, so check always fails overall"
    assert "Traceback" not in done.stderr, done.stderr
    return {line[6:].split(":")[0]: line for line in done.stdout.splitlines()}


@pytest.fixture
def taken_port():
    """A port something else listens on (a first executor's health server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file: no directory can be created below it, whoever asks (these tests run as root)."""
    path = tmp_path / "a-file"
    path.write_text("")
    return path


def test_check_fails_naming_the_setting_and_fix_for_each_local_resource_run_cannot_use(tmp_path, a_file, taken_port):
    lines = check_lines(environment(
        tmp_path, DATAHUB_EXECUTOR_WORK_DIR=str(a_file / "work"), DATAHUB_EXECUTOR_VENV_CACHE_DIR=str(a_file / "venvs"),
        DATAHUB_EXECUTOR_TASK_PYTHON=str(tmp_path / "no-such-python"),
        DATAHUB_EXECUTOR_HEALTH_ADDRESS=f"127.0.0.1:{taken_port}"))
    directories = lines["directories"]
    assert directories.startswith("FAIL  "), directories
    assert f"DATAHUB_EXECUTOR_WORK_DIR {a_file / 'work'} cannot be created or written" in directories
    assert f"DATAHUB_EXECUTOR_VENV_CACHE_DIR {a_file / 'venvs'} cannot be created or written" in directories
    assert "set DATAHUB_EXECUTOR_VENV_CACHE_DIR to a directory that is" in directories
    python = lines["task python"]
    assert python.startswith(f"FAIL  task python: {tmp_path / 'no-such-python'} cannot be run"), python
    assert "set DATAHUB_EXECUTOR_TASK_PYTHON to a Python 3 interpreter" in python
    health = lines["health address"]
    assert health.startswith(f"FAIL  health address: 127.0.0.1:{taken_port} is in use"), health
    assert "DATAHUB_EXECUTOR_HEALTH_ADDRESS" in health


def test_check_passes_what_run_can_use_and_leaves_the_directories_it_made_none(tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    venvs = tmp_path / "cache" / "datahub-executor" / "venvs"
    lines = check_lines(environment(tmp_path, DATAHUB_EXECUTOR_VENV_CACHE_DIR=str(venvs),
                                    DATAHUB_EXECUTOR_TASK_PYTHON=sys.executable,
                                    DATAHUB_EXECUTOR_HEALTH_ADDRESS=f"127.0.0.1:{port}"))
    assert lines["directories"] == (f"PASS  directories: {tmp_path / 'work'} writable (created at start); "
                                    f"{venvs} writable (created at start)")
    assert lines["task python"].startswith(f"PASS  task python: {sys.executable} runs (Python 3."), lines["task python"]
    assert lines["health address"] == f"PASS  health address: 127.0.0.1:{port} free for /health and /metrics"
    assert not (tmp_path / "work").exists() and not (tmp_path / "cache").exists(), "check changes nothing"


def run_refused(env: dict[str, str], timeout_s: float = 60) -> str:
    done = subprocess.run([EXECUTOR, "run"], env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    (refusal,) = [line for line in done.stderr.splitlines() if "cannot start" in line]
    return refusal


def test_run_refuses_a_work_dir_it_cannot_create_in_one_line_exit_2(tmp_path, a_file):
    refusal = run_refused(environment(tmp_path, DATAHUB_EXECUTOR_WORK_DIR=str(a_file / "work")))
    assert f"DATAHUB_EXECUTOR_WORK_DIR {a_file / 'work'} cannot be created or written" in refusal


def test_run_refuses_a_health_address_in_use_in_one_line_exit_2(tmp_path, taken_port):
    """A second executor on the host, at the first one's (default) address."""
    refusal = run_refused(environment(tmp_path, DATAHUB_EXECUTOR_HEALTH_ADDRESS=f"127.0.0.1:{taken_port}"))
    assert f"DATAHUB_EXECUTOR_HEALTH_ADDRESS 127.0.0.1:{taken_port} is in use" in refusal


def an_unopenable_sandbox_mode() -> tuple[str, str]:
    """A cgroup mode this host cannot give the executor, and why (opened and closed in a child, as
    the executor would); skipped on a host that can give both."""
    for mode in ("cgroup-v2", "cgroup-v1"):
        probe = subprocess.run([sys.executable, "-c", "import sys; from sandbox import Sandbox; "
                                f"Sandbox.open(sys.argv[1], mode={mode!r}).close()", f"test-probe-{uuid.uuid4().hex[:8]}"],
                               capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
        if probe.returncode != 0:
            return mode, probe.stderr.strip().splitlines()[-1]
    pytest.skip("this host can open both cgroup modes: no forced mode fails here")


def test_run_refuses_a_sandbox_mode_this_host_cannot_give_in_one_line_exit_2(tmp_path):
    """A forced mode the host lacks (cgroup-v2 where the memory controller is not delegated) ended
    `run` in the sandbox's traceback, exit 1."""
    mode, _ = an_unopenable_sandbox_mode()
    refusal = run_refused(environment(tmp_path, DATAHUB_EXECUTOR_SANDBOX_MODE=mode))
    assert f"DATAHUB_EXECUTOR_SANDBOX_MODE={mode}" in refusal and "auto" in refusal, refusal


@pytest.mark.parametrize("task_user,says", [("no-such-user", "user 'no-such-user' does not exist"),
                                            ("7-3", "use FIRST-LAST")])
def test_run_refuses_a_task_user_it_cannot_use_in_one_line_exit_2(tmp_path, task_user, says):
    """The line was right, the status was 1: a settings error exits 2 (docs/operations.md)."""
    refusal = run_refused(environment(tmp_path, DATAHUB_EXECUTOR_TASK_USER=task_user))
    assert "DATAHUB_EXECUTOR_TASK_USER" in refusal and says in refusal, refusal


def test_run_refuses_the_secrets_manager_store_without_an_aws_region_before_it_connects(tmp_path):
    """The store was made after the pool lookup, and boto3's NoRegionError ended `run` in a
    traceback, exit 1; the region is a setting of this host, judged before any connection (this
    control plane, at 127.0.0.1:9, never answers)."""
    refusal = run_refused(environment(tmp_path, DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER="true",
                                      AWS_CONFIG_FILE=str(tmp_path / "absent"),
                                      AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "absent")), timeout_s=30)
    assert "DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER" in refusal and "AWS_REGION" in refusal, refusal


@pytest.mark.parametrize("name,value", [("DATAHUB_GMS_URL", "http://127.0.0.1:99999/gms"),
                                        ("DATAHUB_GMS_URL", "http://user@/gms"),
                                        ("DATAHUB_EXECUTOR_SQS_ENDPOINT_URL", "sqs.internal:4566")])
def test_run_refuses_a_url_it_could_not_connect_to_as_a_settings_error(tmp_path, name, value):
    """Each passed validation and ended `run` in a traceback (the HTTP client's, boto3's), exit 1."""
    done = subprocess.run([EXECUTOR, "run"], env=environment(tmp_path, **{name: value}), capture_output=True,
                          text=True, timeout=30)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2 and output.startswith(f"datahub-executor: {name} is invalid: ") \
        and len(output.splitlines()) == 1, output


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_default_cli_version_no_build_could_install_is_a_settings_error(tmp_path, command):
    done = subprocess.run([EXECUTOR, command], env=environment(tmp_path, DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION="banana"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert (done.stdout + done.stderr).strip() == (
        "datahub-executor: DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION is invalid: version 'banana' is not latest, native, "
        "a version such as 1.2.0.4, or a wheel URL")


@pytest.mark.parametrize("version", ["native", "latest", "1.2.0.4", " 1.2.0.4 "])
def test_a_default_cli_version_a_build_can_install_is_accepted(version):
    from executor.settings import load_settings

    settings = load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "tok",
                              "DATAHUB_EXECUTOR_POOL_ID": "remote", "DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION": version})
    assert settings.default_cli_version == version.strip()


def test_check_beside_a_running_executor_passes_its_health_address(tmp_path):
    """`docker exec ... check`, as the docs have it, runs beside the executor: its health address
    is in use by that executor, which answers /health/live; the line said `run` would stop."""
    from executor.operability import ExecutorMetrics, HealthServer

    running = HealthServer("127.0.0.1", 0, ExecutorMetrics(), lambda: (True, "ACTIVE"), lambda: (True, "ACTIVE"))
    running.start()
    try:
        lines = check_lines(environment(tmp_path, DATAHUB_EXECUTOR_HEALTH_ADDRESS=f"127.0.0.1:{running.port}"))
    finally:
        running.stop()
    assert lines["health address"].startswith(f"PASS  health address: 127.0.0.1:{running.port} answers as a running "
                                              "executor (ACTIVE)"), lines["health address"]


def test_check_warns_when_the_executor_cannot_lower_its_oom_score_and_fails_nothing_for_it(tmp_path):
    """Root here has no CAP_SYS_RESOURCE, the case of an unprivileged pod: the executor runs on
    with its score unlowered, and an out-of-memory outside the task cgroups may take it. `check`
    said nothing of it; now one WARN line names the cause and the fix, and the exit status is
    decided by the other lines alone."""
    with open("/proc/self/oom_score_adj") as own:
        before = own.read().strip()
    try:
        with open("/proc/self/oom_score_adj", "w") as own:
            own.write("-900")
        pytest.skip("this process may lower its oom_score_adj (CAP_SYS_RESOURCE): the warning cannot show here")
    except PermissionError:
        pass
    finally:
        with open("/proc/self/oom_score_adj", "w") as own:
            own.write(before)
    line = check_lines(environment(tmp_path))["OOM protection"]
    assert line.startswith("WARN  OOM protection: the executor cannot lower its oom_score_adj to -900"), line
    assert "CAP_SYS_RESOURCE" in line and "OOMScoreAdjust=-900" in line and "--oom-score-adj=-900" in line
