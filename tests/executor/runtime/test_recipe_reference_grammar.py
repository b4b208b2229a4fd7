"""Names a recipe references the way `datahub ingest` expands them (vocabulary.secret_references),
run as the executor runs a task: prepare_task over a file store, then the real CLI. DataHub's own
executor (datahub.secret.secret_common.resolve_recipe) resolves each of these recipes; so must we.
All values are fake."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from executor.runtime.secrets import ChainedSecretStore, FileSecretStore
from executor.runtime.tasks import prepare_task
from executor.runtime.venvs import VenvCache

DATASET = "urn:li:dataset:(urn:li:dataPlatform:hive,sales.orders,PROD)"


def ingest(tmp_path: Path, path_expression: str, stored: dict[str, str]) -> tuple[dict, subprocess.CompletedProcess,
                                                                                  Path]:
    """A file source reading PATH_EXPRESSION, with STORED in a secrets directory: the names the
    task is handed, the run, and the sink's file."""
    if not (Path(sys.executable).parent / "datahub").exists():
        pytest.skip("acryl-datahub is not installed in this environment")
    store = tmp_path / "secrets"
    store.mkdir()
    for name, value in stored.items():
        (store / name).write_text(value)
    written = tmp_path / "written.json"
    recipe = json.dumps({"source": {"type": "file", "config": {"path": path_expression}},
                         "sink": {"type": "file", "config": {"filename": str(written)}}})
    prepared = prepare_task("RUN_INGEST", {"recipe": recipe, "version": "native"}, execution_id="exe_grammar",
                            secrets=ChainedSecretStore([FileSecretStore(str(store), 1 << 20)]),
                            venvs=VenvCache(str(tmp_path / "venvs")), work_root=str(tmp_path / "work"),
                            default_version="native", gms_url="http://127.0.0.1:9/gms", ingest_token="dhx_grammar")
    try:
        handed = json.loads(prepared.stdin_bytes)["__secrets__"]
        done = subprocess.run(prepared.argv, input=prepared.stdin_bytes, env=prepared.env, cwd=prepared.workdir,
                              capture_output=True, timeout=300)
    finally:
        prepared.cleanup()
    return handed, done, written


@pytest.fixture
def metadata(tmp_path) -> Path:
    path = tmp_path / "meta" / "metadata.json"
    path.parent.mkdir()
    path.write_text(json.dumps([{"entityType": "dataset", "entityUrn": DATASET, "changeType": "UPSERT",
                                 "aspectName": "status", "aspect": {"json": {"removed": False}}}]))
    return path


def test_a_bare_name_beside_a_braced_one_is_a_secret_too(tmp_path, metadata):
    handed, done, written = ingest(tmp_path, "${META_DIR}/$META_FILE",
                                   {"META_DIR": str(metadata.parent), "META_FILE": metadata.name})
    assert sorted(handed) == ["META_DIR", "META_FILE"]
    assert done.returncode == 0 and DATASET in written.read_text(), "the CLI read the file both secrets name"


def test_a_name_in_a_default_is_the_stores_secret(tmp_path, metadata):
    handed, done, written = ingest(tmp_path, "${META_PATH:-$FALLBACK_META_PATH}", {"FALLBACK_META_PATH": str(metadata)})
    assert sorted(handed) == ["FALLBACK_META_PATH"]
    assert done.returncode == 0 and DATASET in written.read_text()


def test_a_name_only_in_an_unused_default_is_not_required(tmp_path, metadata):
    handed, done, written = ingest(tmp_path, "${META_PATH:-${OLD_META_PATH}}", {"META_PATH": str(metadata)})
    assert sorted(handed) == ["META_PATH"]
    assert done.returncode == 0 and DATASET in written.read_text()
