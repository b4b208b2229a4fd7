"""${NAME} in a recipe as a real `datahub ingest` run (the executor's own environment's CLI)
sees it: the executor resolves names from its secret stores, and the CLI expands them.

DataHub's executor (datahub.secret.secret_common.resolve_recipe) and `datahub ingest` both read
the variable of a shell-style form such as ${NAME:-default} first; the default is only for a
name that no store has."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from executor.runtime.secrets import ChainedSecretStore, EnvSecretStore, FileSecretStore
from executor.runtime.tasks import prepare_task
from executor.runtime.venvs import VenvCache

DATASET = "urn:li:dataset:(urn:li:dataPlatform:hive,sales.orders,PROD)"


def run_ingest(tmp_path: Path, recipe: str,
               secrets: dict[str, str]) -> tuple[subprocess.CompletedProcess, str, list[str]]:
    """RUN_INGEST of RECIPE with SECRETS in a secrets directory, run to its end as the executor
    would start it (argv, environment, stdin); the run, its output (masked) and the names of the
    secrets the task was handed."""
    if not (Path(sys.executable).parent / "datahub").exists():
        pytest.skip("acryl-datahub is not installed in this environment")
    store = tmp_path / "secrets"
    store.mkdir()
    for name, value in secrets.items():
        (store / name).write_text(value)
    prepared = prepare_task("RUN_INGEST", {"recipe": recipe, "version": "native"}, execution_id="exe_refs",
                            secrets=ChainedSecretStore([FileSecretStore(str(store), 1 << 20)]),
                            venvs=VenvCache(str(tmp_path / "venvs")), work_root=str(tmp_path / "work"),
                            default_version="native", gms_url="http://127.0.0.1:9/gms", ingest_token="dhx_refs")
    handed = sorted(json.loads(prepared.stdin_bytes)["__secrets__"])
    try:
        done = subprocess.run(prepared.argv, input=prepared.stdin_bytes, env=prepared.env, cwd=prepared.workdir,
                              capture_output=True, timeout=300)
    finally:
        prepared.cleanup()
    output = prepared.masker.mask((done.stdout + done.stderr).decode("utf-8", "replace"))
    return done, output, handed


def test_a_secret_named_with_a_default_is_the_secret_not_the_default(tmp_path):
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps([{"entityType": "dataset", "entityUrn": DATASET, "changeType": "UPSERT",
                                     "aspectName": "status", "aspect": {"json": {"removed": False}}}]))
    written = tmp_path / "written.json"
    recipe = ("source:\n  type: file\n  config:\n    path: ${METADATA_FILE:-/nonexistent/metadata.json}\n"
              f"sink:\n  type: file\n  config:\n    filename: {written}\n")
    done, output, _ = run_ingest(tmp_path, recipe, {"METADATA_FILE": str(metadata)})
    assert done.returncode == 0, output[-3000:]
    assert DATASET in written.read_text(), "the source read the file the secret names"


def test_a_name_with_a_default_that_no_store_has_takes_the_default(tmp_path):
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps([{"entityType": "dataset", "entityUrn": DATASET, "changeType": "UPSERT",
                                     "aspectName": "status", "aspect": {"json": {"removed": False}}}]))
    written = tmp_path / "written.json"
    recipe = (f"source:\n  type: file\n  config:\n    path: ${{NO_SUCH_SECRET:-{metadata}}}\n"
              f"sink:\n  type: file\n  config:\n    filename: {written}\n")
    done, output, _ = run_ingest(tmp_path, recipe, {})
    assert done.returncode == 0, output[-3000:]
    assert DATASET in written.read_text()


def test_the_executors_own_settings_named_with_a_default_are_the_tasks_own(tmp_path):
    """${DATAHUB_GMS_URL:-...} in a sink: the task's own GMS address and ingest token (its
    environment), never the executor's, and never a refusal as ${DATAHUB_GMS_TOKEN} gets."""
    recipe = ("source:\n  type: file\n  config: {path: /nonexistent}\nsink:\n  type: datahub-rest\n  config:\n"
              "    server: ${DATAHUB_GMS_URL:-http://localhost:8080}\n    token: ${DATAHUB_GMS_TOKEN:-}\n")
    executor_environ = {"DATAHUB_GMS_URL": "http://executor-own:8080", "DATAHUB_GMS_TOKEN": "executor-own-token-fake"}
    prepared = prepare_task("RUN_INGEST", {"recipe": recipe, "version": "native"}, execution_id="exe_own",
                            secrets=ChainedSecretStore([EnvSecretStore(executor_environ, set(executor_environ))]),
                            venvs=VenvCache(str(tmp_path / "venvs")), work_root=str(tmp_path / "work"),
                            default_version="native", gms_url="http://127.0.0.1:9/gms", ingest_token="dhx_own")
    try:
        assert json.loads(prepared.stdin_bytes)["__secrets__"] == {}
        own = (prepared.env["DATAHUB_GMS_URL"], prepared.env["DATAHUB_GMS_TOKEN"])
        assert own == ("http://127.0.0.1:9/gms", "dhx_own")
    finally:
        prepared.cleanup()
