"""`datahub ingest` against the control plane, as DataHub's CLI runs by default: its default
reporter (DataHub's DatahubIngestionRunSummaryProvider) books each run on a source and an
execution request of executorId `__datahub_cli_`, in the same batches as the run's metadata.
They are stored and shown as GMS stores them, and no pool of ours queues or runs them (decision 26)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import datahub.metadata.schema_classes as model
import pytest
import requests
from datahub.configuration.common import GraphError
from datahub.emitter.mce_builder import datahub_guid, make_dataset_urn
from datahub.emitter.mcp import MetadataChangeProposalWrapper

from controlplane.pools import DATAHUB_CLI_EXECUTOR_ID

from .conftest import RECIPE

DATAHUB_CLI = str(Path(sys.executable).parent / "datahub")
DATASETS = [make_dataset_urn("hive", f"cli.t{i}") for i in range(3)]
# The reporter's source for a recipe of the `file` source with no pipeline_name or platform_instance.
CLI_SOURCE = f"urn:li:dataHubIngestionSource:cli-{datahub_guid({'type': 'file'})}"


def datahub_ingest(cp, tmp_path: Path) -> subprocess.CompletedProcess:
    """`datahub ingest run` of a `file` source holding DATASETS, with the datahub-rest sink to CP
    and no option that changes its reporting."""
    mcps = tmp_path / "mcps.json"
    mcps.write_text(json.dumps([
        MetadataChangeProposalWrapper(entityUrn=urn, aspect=aspect).to_obj()
        for i, urn in enumerate(DATASETS)
        for aspect in (model.DatasetPropertiesClass(name=f"t{i}", description="from the CLI"),
                       model.StatusClass(removed=False))]))
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"source": {"type": "file", "config": {"path": str(mcps)}},
                                  "sink": {"type": "datahub-rest",
                                           "config": {"server": cp.gms_url, "token": "${DH_TOKEN}"}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}
    env.update({"DH_TOKEN": cp.admin_token, "DATAHUB_TELEMETRY_ENABLED": "false", "HOME": str(tmp_path)})
    return subprocess.run([DATAHUB_CLI, "ingest", "run", "-c", str(recipe), "--no-spinner"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)


def pool_messages(cp, pool: dict) -> int:
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                          aws_access_key_id="local", aws_secret_access_key="local")
    counts = client.get_queue_attributes(QueueUrl=pool["queue_url"], AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(n) for n in counts.values())


def test_datahub_ingest_stores_every_dataset_and_its_run_shows_on_a_cli_source_no_pool_runs(cp, graph, tmp_path):
    pool = cp.create_pool("p", default=True)
    ran = datahub_ingest(cp, tmp_path)
    assert ran.returncode == 0 and "Pipeline finished successfully" in ran.stdout, ran.stdout[-3000:] + ran.stderr[-3000:]

    for i, urn in enumerate(DATASETS):
        assert graph.get_aspect(urn, model.DatasetPropertiesClass).name == f"t{i}", urn
    source = graph.get_aspect(CLI_SOURCE, model.DataHubIngestionSourceInfoClass)
    assert source.validate() and (source.name, source.type) == ("[CLI] file", "file")
    assert source.config.executorId == DATAHUB_CLI_EXECUTOR_ID

    shown = graph.execute_graphql(
        "query($u: String!) { ingestionSource(urn: $u) { config { executorId } executions(start: 0, count: 5) "
        "{ total executionRequests { urn id input { task executorId source { type ingestionSource } } "
        "result { status structuredReport { type } } } } } }", variables={"u": CLI_SOURCE})["ingestionSource"]
    assert shown["config"]["executorId"] == DATAHUB_CLI_EXECUTOR_ID and shown["executions"]["total"] == 1
    run = shown["executions"]["executionRequests"][0]
    assert run["input"] == {"task": "CLI Ingestion", "executorId": DATAHUB_CLI_EXECUTOR_ID,
                            "source": {"type": "CLI_INGESTION_SOURCE", "ingestionSource": CLI_SOURCE}}
    assert run["result"] == {"status": "SUCCESS", "structuredReport": {"type": "CLI_INGEST"}}
    inputs = graph.get_aspect(run["urn"], model.ExecutionRequestInputClass)
    result = graph.get_aspect(run["urn"], model.ExecutionRequestResultClass)
    assert inputs.validate() and inputs.executorId == DATAHUB_CLI_EXECUTOR_ID
    assert result.validate() and result.status == "SUCCESS" and "Ingestion Report" in result.report

    assert cp.cp.executions.send_pending() == 0 and pool_messages(cp, pool) == 0, "never sent to a queue of ours"
    assert cp.execution(run["id"])["enqueued_at"] is None
    listed = graph.execute_graphql("{ listRemoteExecutorPools(input: {start: 0, count: 5}) { remoteExecutorPools "
                                   "{ ingestionSources(input: {start: 0, count: 5, hideSystemSources: false}) { total } } } }")
    assert listed["listRemoteExecutorPools"]["remoteExecutorPools"][0]["ingestionSources"]["total"] == 0, \
        "the CLI's source is not the default pool's"


def test_a_cli_run_waits_for_no_executor_of_ours_and_takes_the_results_the_cli_writes(cp, graph):
    """The reporter's writes one by one, as it makes them: the source, the request (PENDING,
    never sent), then its results, stored as written, without a lease, and mirrored in listings."""
    pool = cp.create_pool("p", default=True)
    run = "urn:li:dataHubExecutionRequest:file-2026_01_02-03_04_05-abc123"
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=CLI_SOURCE, aspect=model.DataHubIngestionSourceInfoClass(
        name="[CLI] file", type="file", platform="urn:li:dataPlatform:unknown",
        config=model.DataHubIngestionSourceConfigClass(recipe="", version="1.7.0", executorId=DATAHUB_CLI_EXECUTOR_ID))))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=run, aspect=model.ExecutionRequestInputClass(
        task="CLI Ingestion", args={"recipe": "", "version": "1.7.0"}, executorId=DATAHUB_CLI_EXECUTOR_ID,
        requestedAt=1, source=model.ExecutionRequestSourceClass(type="CLI_INGESTION_SOURCE", ingestionSource=CLI_SOURCE))))
    execution_id = run.rsplit(":", 1)[1]
    assert (cp.execution(execution_id)["status"], cp.execution(execution_id)["pool_id"]) == ("PENDING", DATAHUB_CLI_EXECUTOR_ID)
    cp.cp.sweep()
    assert cp.cp.executions.send_pending() == 0 and pool_messages(cp, pool) == 0

    results = [model.ExecutionRequestResultClass(status="RUNNING", startTimeMs=1000),
               model.ExecutionRequestResultClass(status="FAILURE", startTimeMs=1000, durationMs=20, report="it broke",
                                                 structuredReport=model.StructuredExecutionReportClass(
                                                     type="CLI_INGEST", serializedValue="{}",
                                                     contentType="application/json"))]
    for result in results:
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=run, aspect=result))
        assert graph.get_aspect(run, model.ExecutionRequestResultClass) == result, "stored as written"
        assert cp.execution(execution_id)["status"] == result.status
        cp.cp.sweep()
        assert cp.execution(execution_id)["status"] == result.status, "no sweep judges a run of the CLI's"
    listed = graph.execute_graphql("{ listExecutionRequests(input: {start: 0, count: 10}) { total executionRequests "
                                   "{ id input { executorId } result { status } } } }")["listExecutionRequests"]
    assert listed == {"total": 1, "executionRequests": [
        {"id": execution_id, "input": {"executorId": DATAHUB_CLI_EXECUTOR_ID}, "result": {"status": "FAILURE"}}]}
    graph.execute_graphql("mutation($u: String!) { deleteIngestionSource(urn: $u) }", variables={"u": CLI_SOURCE})
    graph.delete_entity(run, hard=True)
    assert not graph.exists(run)


def test_a_run_of_a_cli_source_is_refused_and_an_executor_id_no_pool_could_have_still_is(cp, graph):
    cp.create_pool("p", default=True)
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=CLI_SOURCE, aspect=model.DataHubIngestionSourceInfoClass(
        name="[CLI] file", type="file", config=model.DataHubIngestionSourceConfigClass(
            recipe=json.dumps({"source": {"type": "file", "config": {"path": "x"}}}), executorId=DATAHUB_CLI_EXECUTOR_ID))))
    with pytest.raises(GraphError, match="datahub ingest"):
        graph.execute_graphql("mutation($u: String!) { createIngestionExecutionRequest(input: {ingestionSourceUrn: $u}) }",
                              variables={"u": CLI_SOURCE})
    assert cp.cp.executions.index() == []

    with pytest.raises(GraphError, match="pool id"):
        graph.execute_graphql("mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }",
                              variables={"i": {"name": "s", "type": "datahub-mock-data",
                                               "config": {"recipe": RECIPE, "executorId": "no/slash"}}})
    typo = MetadataChangeProposalWrapper(entityUrn="urn:li:dataHubIngestionSource:typo",
                                         aspect=model.DataHubIngestionSourceInfoClass(
                                             name="s", type="datahub-mock-data", config=model.DataHubIngestionSourceConfigClass(
                                                 recipe=RECIPE, executorId="__datahub_cli")))
    refused = requests.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": typo.to_obj()},
                            headers={"Authorization": f"Bearer {cp.admin_token}"}, timeout=10)
    assert refused.status_code == 400 and "pool id" in refused.json()["message"]
