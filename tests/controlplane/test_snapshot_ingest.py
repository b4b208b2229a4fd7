"""Snapshot-style metadata (MetadataChangeEvents) as DataHub's own emitter and CLI send it:
POST /entities?action=ingest (and batchIngest), split into one UPSERT per aspect as GMS and
DataHub's mcps_from_mce split it, and stored all or nothing through the ingest path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import datahub.emitter.mce_builder as builder
from datahub.configuration.common import OperationalError
from datahub.emitter.mcp_builder import mcps_from_mce
from datahub.emitter.rest_emitter import DatahubRestEmitter
from datahub.emitter.serialization_helper import pre_json_transform
import datahub.metadata.schema_classes as model

from controlplane.metadata.registry import MetadataInvalid, Registry
from controlplane.metadata.snapshots import proposals

from .conftest import RECIPE

DATAHUB_CLI = str(Path(sys.executable).parent / "datahub")
ORDERS = builder.make_dataset_urn("hive", "db.orders")
SNAPSHOT = "com.linkedin.metadata.snapshot.DatasetSnapshot"


def orders_mce(*aspects) -> model.MetadataChangeEventClass:
    return model.MetadataChangeEventClass(proposedSnapshot=model.DatasetSnapshotClass(urn=ORDERS, aspects=list(aspects)))


def post(cp, action: str, body: dict, token: str | None = None) -> requests.Response:
    return requests.post(f"{cp.gms_url}/entities?action={action}", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {token or cp.admin_token}"})


def entity(urn: str, *aspects: dict) -> dict:
    return {"value": {SNAPSHOT: {"urn": urn, "aspects": list(aspects)}}}


def test_datahubs_emitter_emits_snapshots_whose_aspects_read_back_one_by_one(cp, graph):
    emitter = DatahubRestEmitter(cp.gms_url, token=cp.admin_token)
    emitter.emit_mce(builder.make_lineage_mce([builder.make_dataset_urn("hive", "db.raw")], ORDERS))
    owners = model.OwnershipClass(owners=[model.OwnerClass(owner="urn:li:corpuser:alice",
                                                           type=model.OwnershipTypeClass.TECHNICAL_OWNER)])
    emitter.emit_mce(orders_mce(model.DatasetPropertiesClass(description="orders", customProperties={"team": "sales"}),
                                model.StatusClass(removed=False), owners,
                                model.GlobalTagsClass(tags=[model.TagAssociationClass(tag="urn:li:tag:pii")])))
    lineage = graph.get_aspect(ORDERS, model.UpstreamLineageClass)
    assert [u.dataset for u in lineage.upstreams] == [builder.make_dataset_urn("hive", "db.raw")]
    assert graph.get_aspect(ORDERS, model.DatasetPropertiesClass).customProperties == {"team": "sales"}
    assert graph.get_aspect(ORDERS, model.StatusClass).removed is False
    assert graph.get_aspect(ORDERS, model.OwnershipClass).owners[0].owner == "urn:li:corpuser:alice"
    assert graph.get_aspect(ORDERS, model.GlobalTagsClass).tags[0].tag == "urn:li:tag:pii"
    system = graph.get_entity_raw(ORDERS, ["status"])["aspects"]["status"]["systemMetadata"]
    assert system["properties"]["clientId"] == "acryl-datahub", "the snapshot's system metadata, on each aspect"


def test_the_answer_is_gms_void_and_batch_ingest_takes_a_system_metadata_per_snapshot(cp, graph):
    answer = post(cp, "ingest", {"entity": entity(ORDERS, {"com.linkedin.common.Status": {"removed": True}})})
    assert (answer.status_code, answer.content) == (200, b"")
    other = builder.make_dataset_urn("hive", "db.other")
    answer = post(cp, "batchIngest", {"entities": [entity(ORDERS, {"com.linkedin.common.Status": {"removed": False}}),
                                                   entity(other, {"com.linkedin.common.Status": {"removed": True}})],
                                      "systemMetadata": [{"runId": "first"}, {"runId": "second"}]})
    assert (answer.status_code, answer.content) == (200, b"")
    assert graph.get_aspect(ORDERS, model.StatusClass).removed is False
    assert graph.get_aspect(other, model.StatusClass).removed is True
    assert graph.get_entity_raw(other, ["status"])["aspects"]["status"]["systemMetadata"]["runId"] == "second"
    assert post(cp, "batchIngest", {"entities": [entity(ORDERS)]}).status_code == 200, "systemMetadata may be left out"
    mismatch = post(cp, "batchIngest", {"entities": [entity(ORDERS)], "systemMetadata": [{}, {}]})
    assert mismatch.status_code == 400 and "length must match" in mismatch.json()["message"]


@pytest.mark.parametrize("mode", ["SYNC", "ASYNC"])
def test_datahub_ingest_of_an_mce_file_writes_its_metadata(cp, graph, tmp_path, mode):
    """The datahub-rest sink posts MCEs to /entities?action=ingest in these modes; in SYNC mode
    the CLI even reported success while every MCE was refused."""
    urns = [builder.make_dataset_urn("hive", f"mce.t{i}") for i in range(2)]
    events = tmp_path / "mces.json"
    events.write_text(json.dumps([model.MetadataChangeEventClass(proposedSnapshot=model.DatasetSnapshotClass(
        urn=urn, aspects=[model.DatasetPropertiesClass(name=f"mce{i}", description="from an MCE"),
                          model.StatusClass(removed=False)])).to_obj() for i, urn in enumerate(urns)]))
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"source": {"type": "file", "config": {"path": str(events)}},
                                  "sink": {"type": "datahub-rest",
                                           "config": {"server": cp.gms_url, "token": "${SINK_TOKEN}", "mode": mode}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}
    env.update({"SINK_TOKEN": cp.admin_token, "DATAHUB_TELEMETRY_ENABLED": "false", "DATAHUB_SKIP_CONFIG": "true"})
    done = subprocess.run([DATAHUB_CLI, "ingest", "run", "-c", str(recipe), "--no-spinner", "--no-default-report"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert [graph.get_aspect(urn, model.DatasetPropertiesClass).name for urn in urns] == ["mce0", "mce1"], \
        (done.stdout + done.stderr)[-3000:]


def test_a_snapshot_with_an_invalid_aspect_is_refused_and_nothing_of_it_is_stored(cp, graph):
    emitter = DatahubRestEmitter(cp.gms_url, token=cp.admin_token)
    properties = {"com.linkedin.dataset.DatasetProperties": {"description": "half", "customProperties": {}, "tags": []}}
    bad_status = {"com.linkedin.common.Status": {"removed": "yes"}}
    with pytest.raises(OperationalError, match="Failed to validate record with class com.linkedin.common.Status"):
        emitter._emit_generic(f"{cp.gms_url}/entities?action=ingest", {"entity": entity(ORDERS, properties, bad_status)})
    other = builder.make_dataset_urn("hive", "db.other")
    refused = post(cp, "batchIngest", {"entities": [entity(other, properties), entity(ORDERS, bad_status)]})
    assert refused.status_code == 400, refused.text
    assert graph.get_aspect(ORDERS, model.DatasetPropertiesClass) is None
    assert graph.get_aspect(other, model.DatasetPropertiesClass) is None, "a batch is all or nothing"
    assert cp.cp.store.one("SELECT COUNT(*) AS n FROM aspects")["n"] == 0


@pytest.mark.parametrize("body, says", [
    ({"entity": {"value": {"com.linkedin.pegasus2avro.metadata.snapshot.DatasetSnapshot": {"urn": ORDERS, "aspects": []}}}},
     "not a member type of the snapshot union"),
    ({"entity": entity(ORDERS, {"com.linkedin.pegasus2avro.common.Status": {"removed": True}})}, "Rest.li names"),
    ({"entity": entity(ORDERS, {"com.linkedin.chart.ChartInfo": {}})}, "not a member type of the aspect union"),
    ({"entity": entity("urn:li:chart:(looker,c1)", {"com.linkedin.common.Status": {"removed": True}})},
     "is not of entityType dataset"),
    ({"entity": {"value": {SNAPSHOT: {"urn": ORDERS, "aspects": [], "extra": 1}}}}, "unrecognized field"),
    ({"entity": entity(ORDERS, {"com.linkedin.common.Status": {"removed": True}, "com.linkedin.common.Owner": {}})},
     "one aspect"),
    ({}, "entity must be"),
    ({"entity": entity(ORDERS, {"com.linkedin.common.Status": {}}), "systemMetadata": {"runId": 5}}, "SystemMetadata"),
])
def test_a_malformed_snapshot_is_refused_saying_what_is_wrong(cp, body, says):
    answer = post(cp, "ingest", body)
    assert answer.status_code == 400 and says in answer.json()["message"], answer.text


def test_snapshots_are_written_with_the_writers_rights(cp, executor_double):
    cp.create_pool("remote", default=True)
    executor = executor_double("remote", "e1", interval_s=60)
    executor.heartbeat()
    claimed = executor.claim(cp.run_source(cp.create_source("s", RECIPE)["id"])["id"])
    status = {"com.linkedin.common.Status": {"removed": False}}
    assert post(cp, "ingest", {"entity": entity(ORDERS, status)}, token=executor.token).status_code == 403
    assert post(cp, "ingest", {"entity": entity(ORDERS, status)}, token=claimed.ingest_token).status_code == 200
    assert cp.cp.store.one("SELECT COUNT(*) AS n FROM run_writes WHERE run_id=?", (claimed.execution_id,))["n"] == 1, \
        "a run's snapshot writes are booked to the run, as its proposals are"


REGISTRY = Registry.load()


@pytest.mark.parametrize("mce", [
    builder.make_lineage_mce([builder.make_dataset_urn("hive", "a"), builder.make_dataset_urn("hive", "b")], ORDERS),
    orders_mce(model.SchemaMetadataClass(
        schemaName="s", platform="urn:li:dataPlatform:hive", version=0, hash="", platformSchema=model.OtherSchemaClass(
            rawSchema=""), fields=[model.SchemaFieldClass(fieldPath="a", nativeDataType="string", type=model.SchemaFieldDataTypeClass(
                type=model.StringTypeClass()))]), model.DatasetKeyClass(platform="urn:li:dataPlatform:hive", name="db.orders",
                                                                        origin="PROD")),
    model.MetadataChangeEventClass(proposedSnapshot=model.CorpUserSnapshotClass(
        urn="urn:li:corpuser:alice", aspects=[model.CorpUserInfoClass(active=True, displayName="Alice")]),
        systemMetadata=model.SystemMetadataClass(runId="r1")),
])
def test_a_snapshot_splits_as_datahubs_mcps_from_mce_splits_it(mce):
    snapshot = {"value": {f"com.linkedin.metadata.snapshot.{mce.proposedSnapshot.RECORD_SCHEMA.name}":
                          pre_json_transform(mce.proposedSnapshot.to_obj())}}
    system = mce.systemMetadata.to_obj() if mce.systemMetadata else None
    made = [(p["entityType"], p["entityUrn"], p["changeType"], p["aspectName"], json.loads(p["aspect"]["value"]),
             p.get("systemMetadata")) for p in proposals(REGISTRY, snapshot, system)]
    expected = [(m.entityType, m.entityUrn, m.changeType, m.aspectName, pre_json_transform(m.aspect.to_obj()),
                 m.systemMetadata.to_obj() if m.systemMetadata else None) for m in mcps_from_mce(mce)]
    assert made == expected


def test_an_unknown_snapshot_is_refused_by_the_registry():
    with pytest.raises(MetadataInvalid, match="DatasetSnapshot"):
        REGISTRY.snapshot("com.linkedin.metadata.snapshot.NoSuchSnapshot")
