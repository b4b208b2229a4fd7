from pathlib import Path

import pytest

from executor.settings import SETTINGS, SettingsError, load_settings, settings_table

BASE = {
    "DATAHUB_GMS_URL": "https://acme.acryl.io/gms",
    "DATAHUB_GMS_TOKEN": "tok-123456",
    "DATAHUB_EXECUTOR_POOL_ID": "remote",
}


def test_defaults_are_the_seeds():
    s = load_settings(BASE)
    assert s.ingestion_max_workers == 4
    assert s.monitors_max_workers == 10
    assert s.file_secret_basedir == "/mnt/secrets"
    assert s.file_secret_maxlen == 1 << 20
    assert s.health_address == ("127.0.0.1", 9087)
    assert s.executor_id


@pytest.mark.parametrize(
    "env,name",
    [
        ({"DATAHUB_GMS_URL": "https://acme.acryl.io"}, "DATAHUB_GMS_URL"),
        ({"DATAHUB_GMS_URL": "acme.acryl.io/gms"}, "DATAHUB_GMS_URL"),
        # Each passed, and `run` ended in the HTTP client's traceback (exit 1) at its first call.
        ({"DATAHUB_GMS_URL": "http://127.0.0.1:99999/gms"}, "DATAHUB_GMS_URL"),
        ({"DATAHUB_GMS_URL": "http://127.0.0.1:abc/gms"}, "DATAHUB_GMS_URL"),
        ({"DATAHUB_GMS_URL": "http://user@/gms"}, "DATAHUB_GMS_URL"),
        # Passed, and `run` ended in boto3's "Invalid endpoint" traceback once the pool was read.
        ({"DATAHUB_EXECUTOR_SQS_ENDPOINT_URL": "sqs.internal:4566"}, "DATAHUB_EXECUTOR_SQS_ENDPOINT_URL"),
        ({"DATAHUB_EXECUTOR_SQS_ENDPOINT_URL": "https://:4566"}, "DATAHUB_EXECUTOR_SQS_ENDPOINT_URL"),
        ({"DATAHUB_EXECUTOR_SQS_ENDPOINT_URL": "http://sqs.internal:70000"}, "DATAHUB_EXECUTOR_SQS_ENDPOINT_URL"),
        ({"DATAHUB_EXECUTOR_POOL_ID": ""}, "DATAHUB_EXECUTOR_POOL_ID"),
        ({"DATAHUB_EXECUTOR_POOL_ID": "bad pool/id"}, "DATAHUB_EXECUTOR_POOL_ID"),
        ({"DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS": "four"}, "DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS"),
        ({"DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS": "0"}, "DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS"),
        ({"DATAHUB_EXECUTOR_FILE_SECRET_MAXLEN": "1Q"}, "DATAHUB_EXECUTOR_FILE_SECRET_MAXLEN"),
        ({"DATAHUB_EXECUTOR_HEALTH_ADDRESS": "9087"}, "DATAHUB_EXECUTOR_HEALTH_ADDRESS"),
        ({"DATAHUB_EXECUTOR_LOG_JSON": "maybe"}, "DATAHUB_EXECUTOR_LOG_JSON"),
        ({"DATAHUB_EXECUTOR_CANCEL_GRACE": "nan"}, "DATAHUB_EXECUTOR_CANCEL_GRACE"),
        ({"DATAHUB_EXECUTOR_DRAIN_TIMEOUT": "inf"}, "DATAHUB_EXECUTOR_DRAIN_TIMEOUT"),
        ({"DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL": "7200"}, "DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL"),
        # Passed, and every task then failed SANDBOX_ERROR: pids.max takes at most 4194304.
        ({"DATAHUB_EXECUTOR_TASK_PIDS_MAX": "4194305"}, "DATAHUB_EXECUTOR_TASK_PIDS_MAX"),
        # Over SQS's ceiling every receive failed (InvalidParameterValue), taken for SQS being down.
        ({"DATAHUB_EXECUTOR_VISIBILITY_TIMEOUT": "43201"}, "DATAHUB_EXECUTOR_VISIBILITY_TIMEOUT"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(env, name):
    with pytest.raises(SettingsError) as err:
        load_settings({**BASE, **env})
    message = str(err.value)
    assert message.startswith(name)
    assert "\n" not in message


def test_a_missing_required_setting_says_what_it_is_for():
    with pytest.raises(SettingsError, match="DATAHUB_GMS_TOKEN is not set: Remote Executor access token"):
        load_settings({k: v for k, v in BASE.items() if k != "DATAHUB_GMS_TOKEN"})


def test_the_token_never_appears_in_repr_or_errors():
    s = load_settings(BASE)
    assert "tok-123456" not in repr(s)


def test_precedence_overrides_then_environment_then_file(tmp_path: Path):
    env_file = tmp_path / "executor.env"
    env_file.write_text('# comment\nDATAHUB_EXECUTOR_INGESTION_MAX_WORKERS=2\nDATAHUB_EXECUTOR_MONITORS_MAX_WORKERS="7"\n')
    s = load_settings({**BASE, "DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS": "3"}, file=str(env_file),
                      overrides={"DATAHUB_EXECUTOR_MONITORS_MAX_WORKERS": "5"})
    assert s.ingestion_max_workers == 3
    assert s.monitors_max_workers == 5
    assert load_settings(BASE, file=str(env_file)).monitors_max_workers == 7


def test_a_malformed_settings_file_names_the_line(tmp_path: Path):
    env_file = tmp_path / "executor.env"
    env_file.write_text("GOOD=1\nthis is not a setting\n")
    with pytest.raises(SettingsError, match=r"executor.env:2: expected KEY=VALUE"):
        load_settings(BASE, file=str(env_file))


def test_the_committed_settings_table_is_generated_from_the_definition():
    committed = (Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    assert committed == settings_table(), "regenerate: python -m executor.settings --table > docs/settings.md"
    for setting in SETTINGS:
        assert f"`{setting.env}`" in committed


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("token", ["dhx_first-half\ndhx_second-half", "dhx_first-half dhx_second-half"])
def test_a_token_broken_across_lines_is_refused_at_start_without_printing_it(tmp_path: Path, command, token):
    """A token pasted with a line break (or two tokens on one line) used to reach the HTTP
    client, whose refusal of the header (a traceback from `run`, a FAIL line from `check`)
    printed the token."""
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[2]),
           "DATAHUB_GMS_URL": "http://127.0.0.1:9/gms",
           "DATAHUB_GMS_TOKEN": token, "DATAHUB_EXECUTOR_POOL_ID": "remote", "DATAHUB_EXECUTOR_TASK_USER": "none",
           "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path / "work"), "DATAHUB_EXECUTOR_VENV_CACHE_DIR": str(tmp_path / "venvs"),
           "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0"}
    done = subprocess.run([str(Path(sys.executable).parent / "datahub-executor"), command], env=env,
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    shown = "first-half" in output or "second-half" in output
    assert not shown, "the token is printed"
    assert done.returncode == 2 and "Traceback" not in output
    assert output.startswith("datahub-executor: DATAHUB_GMS_TOKEN is invalid:") and len(output.strip().splitlines()) == 1
    assert "line break" in output or "space" in output


@pytest.mark.parametrize("name,value", [
    ("DATAHUB_GMS_URL", "http://127.0.0.1:8080/gms"), ("DATAHUB_GMS_URL", "https://[::1]:8443/gms"),
    ("DATAHUB_GMS_URL", "https://acme.acryl.io/gms/"),
    ("DATAHUB_EXECUTOR_SQS_ENDPOINT_URL", "http://127.0.0.1:4566"),
    ("DATAHUB_EXECUTOR_SQS_ENDPOINT_URL", "https://vpce-0a1b.sqs.us-east-1.vpce.amazonaws.com"),
])
def test_urls_with_a_host_and_a_port_in_range_are_accepted(name, value):
    settings = load_settings({**BASE, name: value})
    assert getattr(settings, next(s.attr for s in SETTINGS if s.env == name)) == value.rstrip("/")
