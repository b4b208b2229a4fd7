"""Stateful ingestion in managed runs: a source whose recipe turns it on, run twice by a real
executor, keeps its checkpoint through the run's ingest token and soft-deletes what the second
run no longer sees. The recipe names no pipeline_name, as the UI's mostly do: the run's recipe
gets the source's urn for it, as DataHub's resolver gives it (acryl-datahub refuses stateful
ingestion without one)."""
from __future__ import annotations

import json

import requests
from datahub.emitter.mcp import MetadataChangeProposalWrapper
import datahub.metadata.schema_classes as model


def test_a_managed_stateful_run_soft_deletes_what_its_last_run_saw_and_this_one_did_not(system, tmp_path):
    system.start_executor()
    events = tmp_path / "events.json"
    urns = [f"urn:li:dataset:(urn:li:dataPlatform:hive,managed.t{i},PROD)" for i in range(2)]
    recipe = json.dumps({"source": {"type": "file", "config": {
        "path": str(events), "stateful_ingestion": {"enabled": True, "remove_stale_metadata": True}}}})
    source = system.cp.create_source("managed-orders", recipe)
    for seen in (urns, urns[:1]):
        events.write_text(json.dumps([MetadataChangeProposalWrapper(entityUrn=u, aspect=model.StatusClass(
            removed=False)).to_obj() for u in seen]))
        execution = system.cp.run_source(source["id"])
        done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=120)
        log = system.cp.logs(execution["id"])["log"]
        assert done["status"] == "SUCCESS", log[-3000:]
    assert "Successfully constructed last checkpoint state" in log and "Soft-deleting stale entity" in log, log[-3000:]
    status = [requests.get(f"{system.cp.gms_url}/aspects/{requests.utils.quote(u, safe='')}?aspect=status&version=0",
                           headers={"Authorization": f"Bearer {system.cp.admin_token}"}, timeout=10).json()
              for u in urns]
    assert [s["aspect"]["com.linkedin.common.Status"]["removed"] for s in status] == [False, True]
