"""prepare_task: the command, environment and stdin of a task, and every refusal."""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from executor.runtime.rejection import TaskRejected
from executor.runtime.secrets import ChainedSecretStore, EnvSecretStore
from executor.runtime.masking import Masker
from executor.runtime.tasks import REPORT_MAX_VALUES, REPORT_READ_MAX_BYTES, PreparedTask, prepare_task
from vocabulary.tasks import task_class
from executor.runtime.venvs import VenvCache, plugins_for

INGEST_TOKEN = "dhx_ingest-only-token-for-exe_1"
RECIPE = "source:\n  type: mysql\n  config: {password: '${DB_PASSWORD}'}\nsink:\n  type: file\n  config: {filename: /tmp/o.json}\n"


class NativeCli(VenvCache):
    """A venv cache that answers with a fixed CLI path: these tests check the task, not the install."""

    def datahub_cli(self, version, plugins, extra_requirements, user=None, stop=None):
        self.asked = (version, plugins, extra_requirements)
        return "/opt/venvs/x/bin/datahub"


def prepare(tmp_path: Path, task: str = "RUN_INGEST", **args):
    secrets = ChainedSecretStore([EnvSecretStore({"DB_PASSWORD": "pw-123456"})])
    venvs = NativeCli(str(tmp_path / "venvs"))
    base = {"recipe": RECIPE, "version": "1.7.0.17", "extra_env_vars": {}}
    prepared = prepare_task(task, {**base, **args}, execution_id="exe_1", secrets=secrets, venvs=venvs,
                            work_root=str(tmp_path), default_version="native", gms_url="http://127.0.0.1:9/gms",
                            ingest_token=INGEST_TOKEN)
    return prepared, venvs


def test_the_recipe_and_secrets_travel_on_stdin_never_in_argv_or_env(tmp_path):
    prepared, venvs = prepare(tmp_path, extra_env_vars={"EXECUTOR_TASK_MEMORY_LIMIT": "512M", "MY_FLAG": "1"})
    envelope = json.loads(prepared.stdin_bytes)
    assert envelope["__secrets__"] == {"DB_PASSWORD": "pw-123456"}
    assert "${DB_PASSWORD}" in envelope["__recipe_yaml__"] and "run_id: exe_1" in envelope["__recipe_yaml__"]
    assert prepared.argv[:5] == ["/opt/venvs/x/bin/datahub", "ingest", "run", "-c", "-"]
    assert "pw-123456" not in " ".join(prepared.argv) + json.dumps(prepared.env)
    assert prepared.memory_limit_bytes == 512 << 20
    assert prepared.env["MY_FLAG"] == "1" and "EXECUTOR_TASK_MEMORY_LIMIT" not in prepared.env
    assert prepared.masker.mask("x pw-123456 y") == "x ******** y"
    assert venvs.asked == ("1.7.0.17", ["mysql"], [])
    assert os.listdir(prepared.workdir) == ["tmp"], "nothing with a secret is written to disk"
    prepared.cleanup()
    assert not os.path.exists(prepared.workdir)


def test_the_child_environment_never_inherits_the_executors_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAHUB_GMS_TOKEN", "executor-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "executor-aws-key")
    prepared, _ = prepare(tmp_path)
    assert "executor-token" not in json.dumps(prepared.env) and "AWS_SECRET_ACCESS_KEY" not in prepared.env
    assert prepared.env["DATAHUB_GMS_TOKEN"] == INGEST_TOKEN, "the run's own ingest-only token, for its default sink"
    assert prepared.env["DATAHUB_GMS_URL"] == "http://127.0.0.1:9/gms"
    assert prepared.masker.mask(f"token {INGEST_TOKEN}") == "token ********"
    for reserved in ("DATAHUB_GMS_TOKEN", "DATAHUB_GMS_URL", "DATAHUB_EXECUTOR_POOL_ID", "LD_PRELOAD"):
        with pytest.raises(TaskRejected) as err:
            prepare(tmp_path, extra_env_vars={reserved: "x"})
        assert err.value.reason == "INVALID_ARGUMENTS"
        assert os.listdir(tmp_path / "executions") == [], "the refused task's work directory was left behind"


@pytest.mark.parametrize("execution_id", ["../../tmp/x", "exe/1", "..", ""])
def test_an_execution_id_never_names_a_path_outside_the_work_directory(tmp_path, execution_id):
    secrets = ChainedSecretStore([EnvSecretStore({"DB_PASSWORD": "pw-123456"})])
    with pytest.raises(TaskRejected) as err:
        prepare_task("RUN_INGEST", {"recipe": RECIPE}, execution_id=execution_id, secrets=secrets,
                     venvs=NativeCli(str(tmp_path / "venvs")), work_root=str(tmp_path / "work"), default_version="native",
                     gms_url="http://127.0.0.1:9/gms", ingest_token=INGEST_TOKEN)
    assert err.value.reason == "INVALID_ARGUMENTS"
    assert not (tmp_path / "tmp").exists() and list(tmp_path.iterdir()) == []


def test_debug_mode_false_as_datahub_writes_it_is_false(tmp_path):
    assert "--debug" not in prepare(tmp_path, debug_mode="false")[0].argv
    assert "--debug" in prepare(tmp_path, debug_mode="true")[0].argv


@pytest.mark.parametrize(
    "task,args,reason",
    [
        ("RUN_INGEST", {"recipe": "source: [unclosed"}, "INVALID_RECIPE"),
        ("RUN_INGEST", {"recipe": "just text"}, "INVALID_RECIPE"),
        ("RUN_INGEST", {"recipe": RECIPE.replace("DB_PASSWORD", "NOT_SET")}, "SECRET_NOT_FOUND"),
        ("RUN_INGEST", {"extra_env_vars": {"EXECUTOR_TASK_MEMORY_LIMIT": "lots"}}, "INVALID_MEMORY_LIMIT"),
        ("RUN_INGEST", {"extra_env_vars": "not json"}, "INVALID_ARGUMENTS"),
        ("DANCE", {}, "UNKNOWN_TASK"),
    ],
)
def test_bad_tasks_are_rejected_with_a_reason(tmp_path, task, args, reason):
    with pytest.raises(TaskRejected) as err:
        prepare(tmp_path, task, **args)
    assert err.value.reason == reason


def test_unknown_versions_are_rejected_before_any_install(tmp_path):
    cache = VenvCache(str(tmp_path))
    for version in ("banana", "1", "ftp://x/y.whl"):
        with pytest.raises(TaskRejected) as err:
            cache.datahub_cli(version, [], [])
        assert err.value.reason == "UNKNOWN_VERSION"
    assert not list(tmp_path.iterdir())


def test_native_needs_the_cli_in_the_executors_environment(tmp_path):
    cli = Path(sys.executable).parent / "datahub"
    if cli.exists():
        assert VenvCache(str(tmp_path)).datahub_cli("native", [], []) == str(cli)
    else:
        with pytest.raises(TaskRejected, match="not installed in the executor's environment"):
            VenvCache(str(tmp_path)).datahub_cli("native", [], [])


def test_task_classes_and_plugins():
    assert task_class("RUN_INGEST") == "ingestion" and task_class("TEST_CONNECTION") == "ingestion"
    assert task_class("RUN_MONITOR") == "monitors"
    assert plugins_for({"source": {"type": "snowflake"}, "sink": {"type": "datahub-rest"}}) == ["snowflake"]
    assert plugins_for({"source": {"type": "snowflake"}, "sink": {"type": "datahub-kafka"}}) == ["datahub-kafka", "snowflake"]
    assert plugins_for({"source": {"type": "my.module.Source"}, "sink": {"type": "file"}}) == []


def test_connection_tests_and_monitor_checks_get_their_flags(tmp_path):
    assert "--test-source-connection" in prepare(tmp_path, "TEST_CONNECTION")[0].argv
    monitor = prepare(tmp_path, "RUN_MONITOR")[0].argv
    assert "--dry-run" in monitor and "--preview" in monitor


def _prepared_with_report(path) -> PreparedTask:
    return PreparedTask(argv=[], env={}, stdin_bytes=b"", workdir=str(path.parent), masker=Masker([]),
                        report_path=str(path), memory_limit_bytes=None)


def _read_within(prepared: PreparedTask, seconds: float):
    """structured_report() on a thread, so a read that blocks fails the test instead of hanging it."""
    got = []
    reader = threading.Thread(target=lambda: got.append(prepared.structured_report()), daemon=True)
    reader.start()
    reader.join(seconds)
    assert not reader.is_alive(), "reading the report blocked"
    return got[0]


def test_the_report_file_a_task_swapped_for_a_link_fifo_or_device_is_not_read(tmp_path):
    """The task owns its work directory, and the executor reads the report as root: a link to a
    file only root may read would ship that file to DataHub; a FIFO would block the runner; a
    link to /dev/zero would read until the executor's memory ran out."""
    private = tmp_path / "root-only.json"
    private.write_text(json.dumps({"token": "root-only-value"}))
    os.chmod(private, 0o600)
    report = tmp_path / "ingestion_report.json"
    prepared = _prepared_with_report(report)

    report.symlink_to(private)
    assert _read_within(prepared, 5) is None
    report.unlink()
    os.link(private, report)
    assert _read_within(prepared, 5) is None, "a hard link to another file is not the task's own report"
    report.unlink()
    os.mkfifo(report)
    assert _read_within(prepared, 5) is None
    report.unlink()
    report.symlink_to("/dev/zero")
    assert _read_within(prepared, 5) is None
    report.unlink()
    report.write_bytes(b" " * (REPORT_READ_MAX_BYTES + 1))
    assert _read_within(prepared, 5) is None
    report.unlink()
    # Small on disk, huge in memory: 16 MiB of it took ~800 MiB of the master's and 20 s.
    report.write_bytes(b"[" + b"[]," * (REPORT_MAX_VALUES + 1) + b"[]]")
    assert _read_within(prepared, 5) is None
    report.unlink()
    report.write_text(json.dumps({"source": {"report": {"events_produced": 3}}}))
    assert _read_within(prepared, 5) == {"source": {"report": {"events_produced": 3}}}


@pytest.mark.parametrize("env", [{"GOOD": "a\0b"}, {"A=B": "1"}, {"": "1"}, {"NUL\0": "1"}])
def test_extra_env_a_process_cannot_carry_fails_the_execution_as_invalid_arguments(env):
    """Before, such a name or value reached the spawner after the claim, which raised ValueError:
    the runner failed "unexpectedly" and released the execution, so it bounced between executors
    for ever instead of ending FAILURE."""
    from executor.runtime.tasks import extra_env_of

    with pytest.raises(TaskRejected) as refused:
        extra_env_of({"extra_env_vars": env})
    assert refused.value.reason == "INVALID_ARGUMENTS"


@pytest.mark.parametrize("recipe", [
    "source: {type: mysql}\nsink: [1, 2]\n",
    "source: {type: mysql}\nsink: file\n",
    "source: {type: {a: 1}}\n",
    "source: {type: mysql}\nsink: {type: [file]}\n",
    "source: {type: ~}\n",
])
def test_a_recipe_whose_sink_or_types_have_the_wrong_shape_is_an_invalid_recipe(tmp_path, recipe):
    """A sink that is not a mapping raised AttributeError while the plugins were chosen: the
    runner failed "unexpectedly" and released the execution, which came back for ever; a type
    that is not a string became a pip extra ("acryl-datahub[{'a': 1}]") and failed the build."""
    with pytest.raises(TaskRejected) as refused:
        prepare(tmp_path, recipe=recipe)
    assert refused.value.reason == "INVALID_RECIPE"


@pytest.mark.parametrize("entries", [
    ["--python", "/usr/bin/python3", "six"],  # install into the executor's own interpreter
    ["--target=/", "six"],  # write anywhere the build may
    ["six", "--index-url=http://127.0.0.1:9/evil"],  # fetch from anywhere
    ["-r", "/etc/shadow"],
    [" -e /srv/checkout"],
    ["git+https://127.0.0.1:9/x.git"],  # not PEP 508: a direct reference names its package
    ["six --hash=sha256:00"],
])
def test_extra_pip_requirements_that_are_pip_options_are_refused_before_any_build(tmp_path, entries):
    """They follow the executor's own options on `uv pip install`'s command line: an option there
    turned the build, run as root where tasks run as root, against the machine."""
    with pytest.raises(TaskRejected) as refused:
        prepare(tmp_path, extra_pip_requirements=json.dumps(entries))
    assert refused.value.reason == "INVALID_ARGUMENTS"
    assert "extra pip requirement" in str(refused.value)


def test_extra_pip_requirements_take_every_form_of_pep_508(tmp_path):
    entries = ["acryl-datahub-cloud[mysql]>=0.3,<1", "six @ https://127.0.0.1:9/six-1.16.0-py2.py3-none-any.whl",
               "probe @ git+https://127.0.0.1:9/probe.git@v1", 'tomli>=2; python_version < "3.11"']
    prepared, venvs = prepare(tmp_path, extra_pip_requirements=entries)
    assert venvs.asked[2] == entries
    prepared.cleanup()


@pytest.mark.parametrize("argument", ["extra_env_vars", "extra_pip_requirements"])
def test_extra_arguments_nested_past_the_recursion_limit_are_invalid_arguments(tmp_path, argument):
    """json.loads raised RecursionError, past the runner's `except ValueError`: the runner failed
    after its claim and gave the execution back, to break the next executor the same way."""
    with pytest.raises(TaskRejected) as refused:
        prepare(tmp_path, **{argument: "[" * 5000 + "]" * 5000})
    assert refused.value.reason == "INVALID_ARGUMENTS"


def test_a_prepared_task_holds_its_venv_until_its_cleanup_however_often_that_runs(tmp_path):
    prepared, venvs = prepare(tmp_path)
    released = []
    venvs.release = released.append
    prepared.cleanup()
    prepared.cleanup()
    assert released == ["/opt/venvs/x/bin/datahub"]
