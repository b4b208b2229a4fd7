"""Names a recipe references the way `datahub ingest` expands them (vocabulary.secret_references),
run as the executor runs a task: prepare_task over a file store, then the real CLI. DataHub's own
executor (datahub.secret.secret_common.resolve_recipe) resolves each of these recipes; so must we.
All values are fake."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .test_recipe_references import DATASET, run_ingest


def ingest(tmp_path: Path, path_expression: str,
           stored: dict[str, str]) -> tuple[list[str], subprocess.CompletedProcess, Path]:
    """A file source reading PATH_EXPRESSION, with STORED in a secrets directory: the names the
    task is handed, the run, and the sink's file."""
    written = tmp_path / "written.json"
    recipe = json.dumps({"source": {"type": "file", "config": {"path": path_expression}},
                         "sink": {"type": "file", "config": {"filename": str(written)}}})
    done, _, handed = run_ingest(tmp_path, recipe, stored)
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
