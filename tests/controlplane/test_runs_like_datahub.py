"""`datahub ingest list-runs | show | rollback` against the control plane, answered as GMS answers
them from its system-metadata index (BatchIngestionRunResource, RollbackService,
ElasticSearchSystemMetadataService / PostgresSystemMetadataService): each latest aspect belongs
to the run that wrote it last, an entity's first write books its key aspect to that run, and a
status of removed=true marks every row of its entity removed."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import datahub.metadata.schema_classes as model
import pytest
from datahub.emitter.mce_builder import make_dataset_urn
from datahub.emitter.mcp import MetadataChangeProposalWrapper

DATAHUB_CLI = str(Path(sys.executable).parent / "datahub")
D1, D2 = make_dataset_urn("hive", "runs.one"), make_dataset_urn("hive", "runs.two")


def emit(graph, run_id: str | None, observed_ms: int, urn: str, *aspects) -> None:
    """ASPECTS of URN, written as a run of `datahub ingest` writes them (RUN_ID in systemMetadata)."""
    metadata = model.SystemMetadataClass(runId=run_id, lastObserved=observed_ms) if run_id else None
    graph.emit_mcps([MetadataChangeProposalWrapper(entityUrn=urn, aspect=aspect, systemMetadata=metadata)
                     for aspect in aspects])


def runs(graph, action: str, **body) -> dict | list:
    """POST /runs?action=ACTION as DataHub's CLI posts it, through DataHub's client session."""
    answer = graph._session.post(f"{graph.config.server}/runs?action={action}", json=body)
    assert answer.status_code == 200, answer.text[:500]
    return answer.json()["value"]


def cli(cp, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}
    env.update({"DATAHUB_GMS_URL": cp.gms_url, "DATAHUB_GMS_TOKEN": cp.admin_token, "DATAHUB_TELEMETRY_ENABLED": "false",
                "DATAHUB_SKIP_CONFIG": "true", "HOME": str(tmp_path)})
    ran = subprocess.run([DATAHUB_CLI, "ingest", *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    return ran


def props(name: str) -> model.DatasetPropertiesClass:
    return model.DatasetPropertiesClass(name=name, description=f"written as {name}")


@pytest.fixture
def overwritten(graph):
    """`setup` makes D1 and D2; `run-a` then writes their properties, and `run-b` writes them
    again: every row `run-a` had is `run-b`'s now."""
    for urn in (D1, D2):
        emit(graph, "setup", 1_000, urn, model.StatusClass(removed=False))
        emit(graph, "run-a", 2_000, urn, props("a"))
        emit(graph, "run-b", 3_000, urn, props("b"))


def test_a_run_whose_every_row_a_later_run_wrote_again_is_not_listed_and_shows_nothing(cp, graph, tmp_path,
                                                                                      overwritten):
    assert runs(graph, "list", pageOffset=0, pageSize=100, includeSoft=False) == [
        {"runId": "run-b", "rows": 2, "timestamp": 3_000},
        {"runId": "setup", "rows": 4, "timestamp": 1_000}], "each latest aspect and each key row, once"
    assert runs(graph, "list", pageOffset=1, pageSize=1) == [{"runId": "setup", "rows": 4, "timestamp": 1_000}]
    assert runs(graph, "list", pageOffset=2, pageSize=1) == []
    listed = cli(cp, tmp_path, "list-runs").stdout
    assert "run-b" in listed and "setup" in listed and "run-a" not in listed, listed

    assert runs(graph, "describe", runId="run-a", start=0, count=100) == []
    shown = runs(graph, "describe", runId="run-b", start=0, count=100, includeAspect=True)
    assert [(row["urn"], row["aspectName"], row["runId"], row["timestamp"], row["keyAspect"]) for row in shown] == [
        (D1, "datasetProperties", "run-b", 3_000, False), (D2, "datasetProperties", "run-b", 3_000, False)]
    assert all("version" not in row for row in shown), "GMS's index has no version to give"
    for row in shown:
        served = model.DatasetPropertiesClass.from_obj(row["aspect"])
        assert served.validate() and served == props("b")
    setup = runs(graph, "describe", runId="setup", start=1, count=2)
    assert [(row["urn"], row["aspectName"], row["keyAspect"]) for row in setup] == [
        (D1, "status", False), (D2, "datasetKey", True)], "by urn and aspect, paged"
    key = runs(graph, "describe", runId="setup", start=0, count=1, includeAspect=True)[0]
    assert model.DatasetKeyClass.from_obj(key["aspect"]).validate()
    assert "run-a" not in cli(cp, tmp_path, "show", "--run-id", "run-a").stdout


def test_rolling_back_the_newer_run_brings_the_older_runs_values_back_and_the_older_run_undoes_nothing(
        cp, graph, tmp_path, overwritten):
    older = cli(cp, tmp_path, "rollback", "--run-id", "run-a", "-f").stdout
    assert "No entities found" in older and "rolled back 0 aspects" in older, older
    assert graph.get_aspect(D1, model.DatasetPropertiesClass) == props("b"), "run-a's rows were all run-b's"

    newer = cli(cp, tmp_path, "rollback", "--run-id", "run-b", "-f").stdout
    # DataHub's CLI says "deleted" of entitiesAffected: the two entities whose aspects it undid.
    assert "deleted 2 entities and rolled back 2 aspects" in newer, newer
    for urn in (D1, D2):
        restored = graph.get_aspect(urn, model.DatasetPropertiesClass)
        assert restored.validate() and restored == props("a"), "the version before run-b's is the latest again"
    assert runs(graph, "list") == [{"runId": "run-a", "rows": 2, "timestamp": 2_000},
                                   {"runId": "setup", "rows": 4, "timestamp": 1_000}]

    emptied = runs(graph, "rollback", runId="run-a", dryRun=False, safe=True)
    assert (emptied["aspectsReverted"], emptied["entitiesAffected"]) == (2, 2)
    assert graph.get_aspect(D1, model.DatasetPropertiesClass) is None, "nothing before run-a: the aspect goes"
    assert graph.get_aspect(D1, model.StatusClass) == model.StatusClass(removed=False), "setup's is not run-a's"


def test_a_dry_run_reports_as_gms_does_and_names_the_entities_other_runs_wrote_to(cp, graph, tmp_path):
    emit(graph, "maker", 1_000, D1, props("maker"), model.StatusClass(removed=False))
    emit(graph, "maker", 1_000, D2, props("maker"))
    emit(graph, "tagger", 2_000, D1, model.GlobalTagsClass(tags=[model.TagAssociationClass("urn:li:tag:pii")]))

    report = runs(graph, "rollback", runId="maker", dryRun=True, safe=True)
    assert report == {
        "entitiesDeleted": 2, "aspectsReverted": 3, "entitiesAffected": 2, "aspectsAffected": 1,
        "unsafeEntitiesCount": 1, "unsafeEntities": [{"urn": D1}],
        "aspectRowSummaries": [
            {"runId": "maker", "aspectName": "datasetProperties", "urn": D1, "timestamp": 1_000, "keyAspect": False},
            {"runId": "maker", "aspectName": "status", "urn": D1, "timestamp": 1_000, "keyAspect": False},
            {"runId": "maker", "aspectName": "datasetProperties", "urn": D2, "timestamp": 1_000, "keyAspect": False}]}
    nuke = runs(graph, "rollback", runId="maker", dryRun=True, safe=False)
    assert (nuke["aspectsReverted"], len(nuke["aspectRowSummaries"])) == (5, 5), "key rows counted and shown"
    assert graph.get_aspect(D1, model.DatasetPropertiesClass) == props("maker"), "a dry run changes nothing"

    dry = cli(cp, tmp_path, "rollback", "--run-id", "maker", "--dry-run", "--report-dir", str(tmp_path / "reports"))
    assert "will hide 1 aspects related to 1 entities" in dry.stdout, dry.stdout
    (report_dir,) = (tmp_path / "reports").iterdir()
    with open(report_dir / "unsafe_entities.csv") as report_file:
        assert list(csv.reader(report_file)) == [["urn"], [D1]]

    cli(cp, tmp_path, "rollback", "--run-id", "maker", "-f", "--report-dir", str(tmp_path / "reports"))
    assert graph.get_aspect(D1, model.DatasetPropertiesClass) is None
    assert graph.get_aspect(D1, model.StatusClass) == model.StatusClass(removed=True), "soft deleted (--safe)"
    assert graph.get_aspect(D1, model.GlobalTagsClass).tags[0].tag == "urn:li:tag:pii", "another run's, kept"
    assert [run["runId"] for run in runs(graph, "list")] == [], "every row left is of a soft-deleted entity"
    assert {run["runId"] for run in runs(graph, "list", includeSoft=True)} == {"maker", "tagger", "no-run-id-provided"}
    assert runs(graph, "describe", runId="maker", start=0, count=10) == []
    assert [row["aspectName"] for row in runs(graph, "describe", runId="maker", start=0, count=10,
                                              includeSoft=True)] == ["datasetKey", "datasetKey"]

    nuked = runs(graph, "rollback", runId="maker", dryRun=False, safe=False)
    assert nuked["entitiesDeleted"] == 2 and not graph.exists(D1) and not graph.exists(D2), "--nuke: gone"


def test_a_rollback_of_a_run_id_no_row_has_is_an_empty_report_and_the_default_run_id_is_refused(cp, graph, tmp_path):
    emit(graph, "real", 1_000, D1, props("real"))
    for dry in (True, False):
        assert runs(graph, "rollback", runId="never-ran", dryRun=dry, safe=True) == {
            "entitiesDeleted": 0, "aspectsReverted": 0, "entitiesAffected": 0, "aspectsAffected": 0,
            "unsafeEntitiesCount": 0, "unsafeEntities": [], "aspectRowSummaries": []}
    ran = cli(cp, tmp_path, "rollback", "--run-id", "never-ran", "-f").stdout
    assert "No entities found" in ran and "Failed" not in ran, ran
    refused = graph._session.post(f"{graph.config.server}/runs?action=rollback",
                                  json={"runId": "no-run-id-provided", "dryRun": True})
    assert refused.status_code == 400 and "reserved run-id" in refused.json()["message"]
    assert graph.get_aspect(D1, model.DatasetPropertiesClass) == props("real")
