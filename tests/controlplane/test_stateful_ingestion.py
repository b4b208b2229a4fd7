"""Stateful ingestion as DataHub's own CLI does it against the control plane: a recipe with a
pipeline_name keeps a checkpoint (the timeseries aspect datahubIngestionCheckpoint of a dataJob)
and reads the last one back through getTimeseriesAspectValues, so what a run no longer sees is
soft-deleted. And that action itself, as DataHub's client calls it and GMS answers it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from datahub.emitter.mcp import MetadataChangeProposalWrapper
import datahub.metadata.schema_classes as model

from controlplane.metadata.registry import MetadataInvalid, Registry
from controlplane.metadata.timeseries_filter import document, matches, parse_filter, timeseries_fields

from .conftest import RECIPE

DATAHUB_CLI = str(Path(sys.executable).parent / "datahub")
PIPELINE = "urn:li:dataHubIngestionSource:orders-files"
# Where DataHub's checkpointing provider keeps the pipeline's checkpoints.
CHECKPOINT_URN = f"urn:li:dataJob:(urn:li:dataFlow:(datahub,{PIPELINE},prod),default_stale_entity_removal)"


def dataset(i: int) -> str:
    return f"urn:li:dataset:(urn:li:dataPlatform:hive,db.t{i},PROD)"


def datahub_ingest(cp, tmp_path: Path, datasets: int, token: str) -> subprocess.CompletedProcess:
    """`datahub ingest run` of a file of DATASETS datasets, stateful, into the control plane."""
    events = tmp_path / "events.json"
    events.write_text(json.dumps([MetadataChangeProposalWrapper(entityUrn=dataset(i), aspect=model.StatusClass(
        removed=False)).to_obj() for i in range(datasets)]))
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({
        "pipeline_name": PIPELINE,
        "source": {"type": "file", "config": {"path": str(events),
                                              "stateful_ingestion": {"enabled": True, "remove_stale_metadata": True}}},
        "sink": {"type": "datahub-rest", "config": {"server": cp.gms_url, "token": "${SINK_TOKEN}"}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}
    env.update({"SINK_TOKEN": token, "DATAHUB_TELEMETRY_ENABLED": "false", "DATAHUB_SKIP_CONFIG": "true"})
    return subprocess.run([DATAHUB_CLI, "ingest", "run", "-c", str(recipe), "--no-spinner", "--no-default-report"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_a_stateful_run_finds_the_last_runs_checkpoint_and_soft_deletes_what_went_missing(cp, graph, executor_double,
                                                                                        tmp_path):
    """Two managed runs of one pipeline, each with the ingest token its claim handed out (what
    a task's sink uses): the first sees two datasets, the second one; the second reads the
    first's checkpoint and soft-deletes the other."""
    cp.create_pool("remote", default=True)
    executor = executor_double("remote", "e1", interval_s=60)  # not judged lost while the CLI runs
    executor.heartbeat()
    source = cp.create_source("orders-files", RECIPE)
    for datasets in (2, 1):
        claimed = executor.claim(cp.run_source(source["id"])["id"])
        done = datahub_ingest(cp, tmp_path, datasets, claimed.ingest_token)
        output = done.stdout + done.stderr
        assert done.returncode == 0 and "Pipeline finished successfully" in output, output[-3000:]
        executor.finish(claimed)
    assert "Successfully constructed last checkpoint state" in output, output[-3000:]
    assert graph.get_aspect(dataset(1), model.StatusClass).removed is True, "soft-deleted as stale"
    assert graph.get_aspect(dataset(0), model.StatusClass).removed is False
    checkpoint = graph.get_latest_timeseries_value(CHECKPOINT_URN, model.DatahubIngestionCheckpointClass,
                                                   {"pipelineName": PIPELINE})
    assert checkpoint is not None and checkpoint.pipelineName == PIPELINE


def checkpoint(at_ms: int, pipeline: str = PIPELINE) -> MetadataChangeProposalWrapper:
    return MetadataChangeProposalWrapper(entityUrn=CHECKPOINT_URN, aspect=model.DatahubIngestionCheckpointClass(
        timestampMillis=at_ms, pipelineName=pipeline, platformInstanceId="", config="", state=model.IngestionCheckpointStateClass(
            formatVersion="1.0", serde="base85-bz2-json"), runId=f"run-{at_ms}"))


def values(cp, token: str, **body) -> requests.Response:
    return requests.post(f"{cp.gms_url}/aspects?action=getTimeseriesAspectValues", timeout=10,
                         json={"urn": CHECKPOINT_URN, "entity": "dataJob", "aspect": "datahubIngestionCheckpoint", **body},
                         headers={"Authorization": f"Bearer {token}"})


def times(answer: requests.Response) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [json.loads(v["aspect"]["value"])["timestampMillis"] for v in answer.json()["value"]["values"]]


def test_timeseries_values_answer_as_gms_does_newest_first_filtered_and_limited(cp, graph):
    for at_ms, pipeline in ((1000, PIPELINE), (2000, PIPELINE), (3000, "another")):
        graph.emit_mcp(checkpoint(at_ms, pipeline))
    latest = graph.get_latest_timeseries_value(CHECKPOINT_URN, model.DatahubIngestionCheckpointClass,
                                               {"pipelineName": PIPELINE})
    assert latest is not None and (latest.timestampMillis, latest.runId) == (2000, "run-2000")
    assert graph.get_latest_timeseries_value(CHECKPOINT_URN, model.DatahubIngestionCheckpointClass,
                                             {"pipelineName": "never-ran"}) is None
    assert [v.timestampMillis for v in graph.get_timeseries_values(
        CHECKPOINT_URN, model.DatahubIngestionCheckpointClass, filter={}, limit=10)] == [3000, 2000, 1000]

    answer = values(cp, cp.admin_token, limit=2)
    assert times(answer) == [3000, 2000]
    shape = answer.json()["value"]
    assert (shape["entityName"], shape["aspectName"], shape["limit"]) == ("dataJob", "datahubIngestionCheckpoint", 2)
    assert shape["values"][0]["aspect"]["contentType"] == "application/json"
    assert "lastObserved" in shape["values"][0]["systemMetadata"]
    assert times(values(cp, cp.admin_token, startTimeMillis=1500, endTimeMillis=3000)) == [3000, 2000], "bounds included"
    assert times(values(cp, cp.admin_token, latestValue=True)) == [3000]
    assert times(values(cp, cp.admin_token, sort={"field": "timestampMillis", "order": "ASCENDING"})) == [1000, 2000, 3000]
    deprecated_criteria = {"criteria": [{"field": "runId", "value": "run-1000", "condition": "EQUAL"}]}
    assert times(values(cp, cp.admin_token, filter=deprecated_criteria)) == [1000], "the checkpoint's own runId field"
    negated = {"or": [{"and": [{"field": "pipelineName", "values": [PIPELINE], "negated": True}]}]}
    assert times(values(cp, cp.admin_token, filter=negated)) == [3000]
    assert times(values(cp, cp.admin_token, urn=CHECKPOINT_URN.replace("default_stale", "other_stale"))) == []


def test_timeseries_values_are_read_as_the_urn_is_read_and_bad_requests_are_refused(cp, graph, executor_double):
    graph.emit_mcp(checkpoint(1000))
    cp.create_pool("remote", default=True)
    executor = executor_double("remote", "e1", interval_s=60)
    executor.heartbeat()
    claimed = executor.claim(cp.run_source(cp.create_source("s", RECIPE)["id"])["id"])
    assert times(values(cp, claimed.ingest_token)) == [1000], "a run reads checkpoints (decision 30)"
    assert values(cp, executor.token).status_code == 403, "an executor token reads no metadata"
    assert values(cp, "dhx_not-a-token").status_code == 401
    for body, says in (({"aspect": "status"}, "not a timeseries aspect"),
                       ({"aspect": "datasetProfile"}, "Unknown aspect"),
                       ({"entity": "dataset"}, "is not of entity"),
                       ({"urn": "urn:li:dataJob:x"}, "Invalid urn"),
                       ({"limit": 10_001}, "limit"),
                       ({"startTimeMillis": "yesterday"}, "startTimeMillis"),
                       ({"sort": {"field": "pipelineName", "order": "ASCENDING"}}, "by their time only"),
                       ({"filter": {"or": [{"and": [{"field": "urn", "values": ["x"], "condition": "DESCENDANTS_INCL"}]}]}},
                        "not supported"),
                       ({"filter": {"or": [{"and": [{"values": ["x"]}]}]}}, "with a field")):
        answer = values(cp, cp.admin_token, **body)
        assert answer.status_code == 400 and says in answer.json()["message"], (body, answer.text)
    assert requests.post(f"{cp.gms_url}/aspects?action=getTimeseriesAspectValues", json={"urn": CHECKPOINT_URN},
                         headers={"Authorization": f"Bearer {cp.admin_token}"}, timeout=10).status_code == 400


PROFILE = Registry.load().aspect("dataset", "datasetProfile")


def profile_doc(**fields) -> dict:
    value = {"timestampMillis": 5, "rowCount": 10, "columnCount": 2, "partitionSpec": {"partition": "FULL_TABLE_SNAPSHOT",
                                                                                        "type": "FULL_TABLE"}, **fields}
    return document(timeseries_fields(PROFILE), dataset(0), value, {"runId": "r1"})


@pytest.mark.parametrize("criterion, expected", [
    ({"field": "rowCount", "values": ["10"]}, True),
    ({"field": "rowCount", "values": ["10.0", "11"], "condition": "IN"}, True),
    ({"field": "rowCount", "value": "9", "condition": "GREATER_THAN"}, True),
    ({"field": "rowCount", "values": ["9"], "condition": "LESS_THAN"}, False),
    ({"field": "rowCount", "values": ["10"], "condition": "GREATER_THAN_OR_EQUAL_TO"}, True),
    ({"field": "rowCount", "values": ["ten"]}, False),
    ({"field": "sizeInBytes", "condition": "IS_NULL"}, True),
    ({"field": "columnCount", "condition": "EXISTS"}, True),
    ({"field": "fieldProfiles", "condition": "EXISTS"}, False),  # not a @TimeseriesField: not in GMS's document
    ({"field": "partitionSpec.partition", "values": ["FULL_TABLE"], "condition": "START_WITH"}, True),
    ({"field": "urn", "values": ["db.t0"], "condition": "CONTAIN"}, True),
    ({"field": "runId", "values": ["R1"], "condition": "IEQUAL"}, True),
    ({"field": "runId", "values": ["r1"], "negated": True}, False),
    ({"field": "timestampMillis", "values": ["5"], "condition": "LESS_THAN_OR_EQUAL_TO"}, True),
    ({"field": "rowCount", "values": []}, False),
])
def test_a_criterion_matches_the_fields_of_gms_search_document(criterion, expected):
    assert matches(parse_filter({"or": [{"and": [criterion]}]}), profile_doc()) is expected


def test_a_filter_is_any_of_its_conjunctions_and_no_filter_matches_everything():
    doc = profile_doc()
    yes, no = {"field": "rowCount", "values": ["10"]}, {"field": "rowCount", "values": ["11"]}
    assert matches(parse_filter({"or": [{"and": [yes, no]}, {"and": [yes]}]}), doc)
    assert not matches(parse_filter({"or": [{"and": [yes, no]}]}), doc)
    assert matches(parse_filter({"criteria": [yes]}), doc) and not matches(parse_filter({"criteria": [no]}), doc)
    assert matches(parse_filter(None), doc) and matches(parse_filter({}), doc) and matches(parse_filter({"or": []}), doc)


@pytest.mark.parametrize("raw", [[], {"or": {}}, {"or": [{"and": {}}]}, {"criteria": [{"field": 1}]},
                                 {"criteria": [{"field": "a", "values": [1]}]},
                                 {"criteria": [{"field": "a", "negated": "yes"}]}])
def test_a_malformed_filter_is_refused_saying_what_is_wrong(raw):
    with pytest.raises(MetadataInvalid, match="filter"):
        parse_filter(raw)
