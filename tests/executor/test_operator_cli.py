"""`datahub-executor` as operators type it: the global --env-file is taken after the command too."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

EXECUTOR = [sys.executable, "-m", "executor"]


def executor_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUB_", "EXECUTOR_"))}
    return subprocess.run([*EXECUTOR, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["check", "run"])
def test_env_file_after_the_command_is_read_as_before_it(tmp_path, command):
    """`datahub-executor check --env-file F` was refused (`unrecognized arguments`, exit 2) though
    `datahub-executor --env-file F check` worked: the file's settings are read either way."""
    env_file = tmp_path / "executor.env"
    env_file.write_text("DATAHUB_GMS_URL=http://127.0.0.1:9/no-gms-suffix\nDATAHUB_GMS_TOKEN=t\n"
                        "DATAHUB_EXECUTOR_POOL_ID=remote\n")
    before = executor_cli("--env-file", str(env_file), command)
    after = executor_cli(command, "--env-file", str(env_file))
    assert "unrecognized arguments" not in after.stderr
    assert after.returncode == before.returncode == 2
    assert after.stderr == before.stderr
    assert "DATAHUB_GMS_URL is invalid: 'http://127.0.0.1:9/no-gms-suffix' must end in /gms" in after.stderr


def test_env_file_after_healthcheck_names_the_address_it_read(tmp_path):
    env_file = tmp_path / "executor.env"
    env_file.write_text("DATAHUB_EXECUTOR_HEALTH_ADDRESS=127.0.0.1:1\n")
    after = executor_cli("healthcheck", "--env-file", str(env_file))
    assert after.returncode == 1 and "unrecognized arguments" not in after.stderr
    assert "127.0.0.1:1" in after.stderr
