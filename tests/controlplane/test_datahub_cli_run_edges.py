"""`datahub ingest` runs that DataHub's GMS takes and its default reporter books in ways a plain
run does not: a custom source's run id (dots), a hand-set run id used again, and a run whose end
the CLI calls UNKNOWN. Each is driven by DataHub's own CLI, as test_datahub_cli_runs.py drives a
plain one; one control plane serves the whole file, each test on a pipeline of its own."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import datahub.metadata.schema_classes as model
import pytest
from datahub.configuration.common import OperationalError
from datahub.emitter.mce_builder import datahub_guid, make_dataset_urn
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig

from controlplane import admin_cli
from controlplane.pools import DATAHUB_CLI_EXECUTOR_ID
from controlplane.testing import ControlPlaneHandle, running_controlplane

from .test_datahub_cli_runs import DATAHUB_CLI

# A source of the recipe's own: DataHub's CLI imports a source type with dots as a module path,
# and names the run after it (`<type>-<time>-<random>`) when the recipe names no run_id.
EDGE_SOURCE = "edge_sources.tiny.TinySource"
EDGE_SOURCE_CODE = '''
import asyncio

import datahub.metadata.schema_classes as model
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.ingestion.api.source import Source, SourceReport


class TinySource(Source):
    """Datasets named in its config; then, as its config says, a failure, or an end the
    pipeline cannot name when it closes (an asyncio task's cancellation is no Exception)."""

    platform = "hive"

    def __init__(self, ctx, config):
        super().__init__(ctx)
        self.config = config
        self.report = SourceReport()

    @classmethod
    def create(cls, config_dict, ctx):
        return cls(ctx, config_dict)

    def get_workunits_internal(self):
        for urn in self.config["datasets"]:
            yield MetadataChangeProposalWrapper(entityUrn=urn, aspect=model.DatasetPropertiesClass(
                description=self.config.get("description", "from a custom source"))).as_workunit()
        if self.config.get("fail"):
            self.report.failure(title="told to fail", message="this run was told to fail")

    def close(self):
        super().close()
        if self.config.get("cancelled"):
            raise asyncio.CancelledError()

    def get_report(self):
        return self.report
'''


@pytest.fixture(scope="module")
def cp(tmp_path_factory) -> Iterator[ControlPlaneHandle]:
    with running_controlplane(tmp_path_factory.mktemp("cp")) as handle:
        yield handle


@pytest.fixture(scope="module")
def graph(cp) -> Iterator[DataHubGraph]:
    with DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=cp.admin_token)) as client:
        yield client


@pytest.fixture(scope="module")
def edge_sources(tmp_path_factory) -> Path:
    """A directory holding the package of EDGE_SOURCE, for the CLI's PYTHONPATH."""
    root = tmp_path_factory.mktemp("sources")
    (root / "edge_sources").mkdir()
    (root / "edge_sources" / "__init__.py").write_text("")
    (root / "edge_sources" / "tiny.py").write_text(textwrap.dedent(EDGE_SOURCE_CODE))
    return root


def datahub_ingest(cp: ControlPlaneHandle, edge_sources: Path, tmp_path: Path, recipe: dict) -> subprocess.CompletedProcess:
    """`datahub ingest run` of RECIPE (its source and run options) with the datahub-rest sink to
    CP and no option that changes its reporting."""
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({**recipe, "sink": {"type": "datahub-rest",
                                                   "config": {"server": cp.gms_url, "token": "${DH_TOKEN}"}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}
    env.update({"DH_TOKEN": cp.admin_token, "DATAHUB_TELEMETRY_ENABLED": "false", "HOME": str(tmp_path),
                "PYTHONPATH": str(edge_sources)})
    return subprocess.run([DATAHUB_CLI, "ingest", "run", "-c", str(path), "--no-spinner"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)


def edge_recipe(pipeline: str, datasets: list[str], **config) -> dict:
    return {"pipeline_name": pipeline, "source": {"type": EDGE_SOURCE, "config": {"datasets": datasets, **config}}}


def cli_source(pipeline: str) -> str:
    """The reporter's source for a run of EDGE_SOURCE named PIPELINE."""
    return f"urn:li:dataHubIngestionSource:cli-{datahub_guid({'type': EDGE_SOURCE, 'pipeline_name': pipeline})}"


def runs_of(graph: DataHubGraph, source_urn: str) -> dict:
    return graph.execute_graphql(
        "query($u: String!) { ingestionSource(urn: $u) { executions(start: 0, count: 10) { total executionRequests "
        "{ urn id input { executorId requestedAt } result { status startTimeMs } } } } }",
        variables={"u": source_urn})["ingestionSource"]["executions"]


def said(ran: subprocess.CompletedProcess) -> str:
    return f"exit {ran.returncode}\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"


def test_a_custom_source_s_default_run_id_with_dots_is_booked_with_its_metadata(cp, graph, edge_sources, tmp_path):
    datasets = [make_dataset_urn("hive", f"edge.dots{i}") for i in range(2)]
    ran = datahub_ingest(cp, edge_sources, tmp_path, edge_recipe("dots", datasets))
    assert ran.returncode == 0 and "Pipeline finished successfully" in ran.stdout, said(ran)
    assert "Reporting failed" not in ran.stdout + ran.stderr, said(ran)

    for urn in datasets:
        assert graph.get_aspect(urn, model.DatasetPropertiesClass).description == "from a custom source", urn
    runs = runs_of(graph, cli_source("dots"))
    assert runs["total"] == 1, runs
    run = runs["executionRequests"][0]
    assert run["id"].startswith(f"{EDGE_SOURCE}-"), "DataHub's default run id: the source type, then the time"
    assert run["input"]["executorId"] == DATAHUB_CLI_EXECUTOR_ID and run["result"]["status"] == "SUCCESS"
    assert cp.execution(run["id"])["status"] == "SUCCESS"
    assert graph.get_aspect(run["urn"], model.ExecutionRequestResultClass).validate()
    shown = cp.logs(run["id"])
    assert shown["status"] == "SUCCESS" and "Ingestion Report" in shown["log"], "the page's and admin CLI's log of it"

    elsewhere = MetadataChangeProposalWrapper(entityUrn=f"urn:li:dataHubExecutionRequest:{EDGE_SOURCE}-1",
                                              aspect=model.ExecutionRequestInputClass(
                                                  task="RUN_INGEST", args={}, executorId="elsewhere", requestedAt=1,
                                                  source=model.ExecutionRequestSourceClass(type="MANUAL_INGESTION_SOURCE")))
    with pytest.raises(OperationalError, match="execution id .* is refused"):
        graph.emit_mcp(elsewhere)  # a run an executor takes keeps the rule its paths and files need


def test_a_hand_set_run_id_used_again_books_each_run_anew_under_the_same_urn(cp, graph, edge_sources, tmp_path):
    datasets = [make_dataset_urn("hive", "edge.rerun")]
    recipe = {**edge_recipe("rerun", datasets), "run_id": "edge-rerun"}
    first = datahub_ingest(cp, edge_sources, tmp_path, recipe)
    assert first.returncode == 0, said(first)
    run = "urn:li:dataHubExecutionRequest:edge-rerun"
    booked = graph.get_aspect(run, model.ExecutionRequestInputClass)
    assert graph.get_aspect(run, model.ExecutionRequestResultClass).status == "SUCCESS"

    second = datahub_ingest(cp, edge_sources, tmp_path, edge_recipe("rerun", datasets, fail=True,
                                                                    description="the second run") | {"run_id": "edge-rerun"})
    assert second.returncode == 1 and "Reporting failed" not in second.stdout + second.stderr, said(second)
    assert graph.get_aspect(datasets[0], model.DatasetPropertiesClass).description == "the second run"
    again = graph.get_aspect(run, model.ExecutionRequestInputClass)
    assert again.validate() and again.requestedAt > booked.requestedAt, "the second run's start"
    result = graph.get_aspect(run, model.ExecutionRequestResultClass)
    assert result.validate() and result.status == "FAILURE" and result.startTimeMs >= again.requestedAt - 60_000
    assert "told to fail" in result.report
    assert cp.execution("edge-rerun")["status"] == "FAILURE"
    runs = runs_of(graph, cli_source("rerun"))
    assert runs["total"] == 1 and runs["executionRequests"][0]["result"]["status"] == "FAILURE", runs


def cli_input(source_urn: str, requested_at: int) -> model.ExecutionRequestInputClass:
    """The input DataHub's reporter writes at a run's start (its on_start)."""
    return model.ExecutionRequestInputClass(
        task="CLI Ingestion", args={"recipe": "", "version": "1.7.0"}, executorId=DATAHUB_CLI_EXECUTOR_ID,
        requestedAt=requested_at, source=model.ExecutionRequestSourceClass(type="CLI_INGESTION_SOURCE",
                                                                          ingestionSource=source_urn))


def test_a_cli_run_booked_again_before_its_end_starts_anew_and_others_keep_their_input(cp, graph):
    """A CLI killed before its end left its run PENDING; the next run of the recipe's run id
    books itself on it all the same. A run an executor takes keeps the input it was made with."""
    killed = "urn:li:dataHubExecutionRequest:edge-killed"
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=killed, aspect=cli_input(cli_source("killed"), 1)))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=killed, aspect=cli_input(cli_source("killed"), 2)))
    assert graph.get_aspect(killed, model.ExecutionRequestInputClass).requestedAt == 2
    assert graph.get_aspect(killed, model.ExecutionRequestResultClass).status == "PENDING"
    ended = model.ExecutionRequestResultClass(status="SUCCESS", startTimeMs=2, durationMs=1)
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=killed, aspect=ended))
    assert graph.get_aspect(killed, model.ExecutionRequestResultClass) == ended
    assert cp.execution("edge-killed")["status"] == "SUCCESS"

    elsewhere = "urn:li:dataHubExecutionRequest:edge-elsewhere"
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=elsewhere, aspect=model.ExecutionRequestInputClass(
        task="RUN_INGEST", args={}, executorId="elsewhere", requestedAt=1,
        source=model.ExecutionRequestSourceClass(type="MANUAL_INGESTION_SOURCE"))))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=elsewhere, aspect=ended))
    with pytest.raises(OperationalError, match="its input cannot change"):
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=elsewhere, aspect=cli_input(cli_source("killed"), 3)))
    assert cp.execution("edge-elsewhere")["status"] == "SUCCESS"


def test_a_run_the_cli_ends_unknown_is_stored_and_shown_unknown(cp, graph, edge_sources, tmp_path):
    """The pipeline stopped on a BaseException it cannot name (an asyncio task's cancellation,
    as its source closed): DataHub's reporter books the run's end as UNKNOWN, in the batch of the
    run's metadata."""
    datasets = [make_dataset_urn("hive", "edge.unknown")]
    ran = datahub_ingest(cp, edge_sources, tmp_path, {**edge_recipe("unknown", datasets, cancelled=True),
                                                      "run_id": "edge-unknown"})
    assert ran.returncode != 0 and "CancelledError" in ran.stdout + ran.stderr, said(ran)
    assert "Reporting failed" not in ran.stdout + ran.stderr, said(ran)
    assert graph.get_aspect(datasets[0], model.DatasetPropertiesClass) is not None, "the run's metadata is kept"
    run = "urn:li:dataHubExecutionRequest:edge-unknown"
    result = graph.get_aspect(run, model.ExecutionRequestResultClass)
    assert result.validate() and result.status == "UNKNOWN", "stored as the CLI wrote it, as GMS stores it"
    assert "Ingestion Report" in result.report
    assert cp.execution("edge-unknown")["status"] == "UNKNOWN" and cp.execution("edge-unknown")["finished_at"]

    assert runs_of(graph, cli_source("unknown"))["executionRequests"][0]["result"]["status"] == "UNKNOWN"
    listed = graph.execute_graphql("query($i: ListExecutionRequestsInput!) { listExecutionRequests(input: $i) "
                                   "{ total executionRequests { id result { status } } } }",
                                   variables={"i": {"start": 0, "count": 10,
                                                    "filters": [{"field": "status", "values": ["UNKNOWN"]}]}})
    assert listed["listExecutionRequests"] == {"total": 1, "executionRequests": [
        {"id": "edge-unknown", "result": {"status": "UNKNOWN"}}]}
    admin = admin_cli.run(admin_cli.build_parser().parse_args([
        "--url", cp.base_url, "--token-file", str(cp.server.admin_token_path), "executions", "list", "--status", "UNKNOWN"]))
    assert [(row["id"], row["status"]) for row in admin] == [("edge-unknown", "UNKNOWN")]

    graph.delete_entity(run, hard=True)  # an ended run, as any final one
    assert not graph.exists(run)


@pytest.mark.parametrize("run_id", ["nightly 2026-11-28T02:00:00Z", "team/hive:orders"])
def test_a_hand_set_run_id_with_spaces_colons_or_slashes_is_booked_with_its_metadata(cp, graph, edge_sources, tmp_path,
                                                                                    run_id):
    """GMS takes any run id a recipe sets, and people stamp theirs with a time or a path. We
    refused these, and with the reporter's write every write of its batch: the run's metadata
    was lost."""
    pipeline = f"marked-{len(run_id)}"
    datasets = [make_dataset_urn("hive", f"edge.{pipeline}.{i}") for i in range(2)]
    ran = datahub_ingest(cp, edge_sources, tmp_path, {**edge_recipe(pipeline, datasets), "run_id": run_id})
    assert ran.returncode == 0 and "Pipeline finished successfully" in ran.stdout, said(ran)
    assert "Reporting failed" not in ran.stdout + ran.stderr, said(ran)
    for urn in datasets:
        assert graph.get_aspect(urn, model.DatasetPropertiesClass).description == "from a custom source", urn
    runs = runs_of(graph, cli_source(pipeline))
    assert [(r["id"], r["result"]["status"]) for r in runs["executionRequests"]] == [(run_id, "SUCCESS")], runs
    assert graph.get_aspect(runs["executionRequests"][0]["urn"], model.ExecutionRequestResultClass).validate()
    shown = cp.logs(run_id)
    assert shown["status"] == "SUCCESS" and "Ingestion Report" in shown["log"], "the page's and admin CLI's log of it"
