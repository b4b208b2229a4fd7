"""DataHub's clients and CLI at the edges of the GMS endpoints: the paths they spell their own
way, input no client of DataHub's sends but anyone may (a 4xx, never a 500), and the ways GMS
offers to do one thing (delete an entity), which must all meet our entities' rules."""
from __future__ import annotations

import datahub.metadata.schema_classes as model
import pytest
import requests
from datahub.configuration.common import OperationalError
from datahub.emitter.mcp import MetadataChangeProposalWrapper

from executor import datahub_aspects

from .conftest import RECIPE
from .test_datahub_client import DATASET, datahub_cli


def test_datahubs_put_aspect_command_writes_through_its_own_spelling_of_the_ingest_path(cp, graph, tmp_path):
    # `datahub put aspect` posts to /aspects/?action=ingestProposal (a slash before the query),
    # which GMS's Rest.li takes as /aspects?action=ingestProposal.
    data = tmp_path / "status.json"
    data.write_text('{"removed": true}')
    put = datahub_cli(cp, "put", "aspect", "--urn", DATASET, "-a", "status", "-d", str(data))
    assert put.returncode == 0, put.stdout + put.stderr
    assert graph.get_aspect(DATASET, model.StatusClass) == model.StatusClass(removed=True)


def test_numbers_gms_could_not_take_are_a_400_not_a_500(cp, graph):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {cp.admin_token}"
    for body in ({"pageOffset": "ten"}, {"pageSize": [1]}, {"start": 1 << 70}, {"count": {"n": 1}}):
        listed = session.post(f"{cp.gms_url}/runs?action=list", json=body, timeout=10)
        assert listed.status_code == 400, (body, listed.status_code, listed.text[:200])
        assert listed.json()["status"] == 400
    described = session.post(f"{cp.gms_url}/runs?action=describe", json={"runId": "r", "start": "0"}, timeout=10)
    assert described.status_code == 400, described.text[:200]
    encoded = requests.utils.quote(DATASET, safe="")
    read = session.get(f"{cp.gms_url}/aspects/{encoded}?aspect=status&version={1 << 70}", timeout=10)
    assert read.status_code == 400, read.text[:200]
    assert session.post(f"{cp.gms_url}/runs?action=list", json={"pageOffset": 0, "pageSize": 10},
                        timeout=10).json() == {"value": []}
    assert graph.get_aspect(DATASET, model.StatusClass) is None, "and the service goes on"


def test_deleting_a_key_aspect_meets_the_rules_of_deleting_its_entity(cp, graph):
    # GMS deletes the whole entity when an MCP deletes its key aspect (DataHub's emitter sends
    # such MCPs as they are in a batch): for our entities that must be refused where POST
    # /entities?action=delete refuses it, not done behind its rules.
    cp.create_pool("remote", default=True)
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    urn = f"urn:li:dataHubExecutionRequest:{execution['id']}"

    def delete_key(entity_urn: str, key_aspect: str) -> int:
        try:
            graph.emit_mcps([MetadataChangeProposalWrapper(entityUrn=entity_urn, changeType=model.ChangeTypeClass.DELETE,
                                                           aspectName=key_aspect)])
        except OperationalError as refused:
            return refused.info["status"]
        return 200

    assert delete_key(urn, "dataHubExecutionRequestKey") == 409, "PENDING: cancelled before it is deleted"
    assert graph.get_aspect(urn, model.ExecutionRequestInputClass) is not None
    assert delete_key("urn:li:dataHubRemoteExecutorPool:remote", "dataHubRemoteExecutorPoolKey") == 400
    assert delete_key("urn:li:dataHubRemoteExecutorGlobalConfig:primary", "dataHubRemoteExecutorGlobalConfigKey") == 400
    with pytest.raises(OperationalError):
        graph.hard_delete_entity("urn:li:dataHubRemoteExecutorGlobalConfig:primary")
    pools = cp.graphql("{ listRemoteExecutorPools(input: {start: 0, count: 10}) { remoteExecutorPools { executorPoolId "
                       "isDefault } } }")["listRemoteExecutorPools"]["remoteExecutorPools"]
    assert pools == [{"executorPoolId": "remote", "isDefault": True}]
    assert cp.execution(execution["id"])["status"] == "PENDING"

    cp.cancel(execution["id"])
    assert delete_key(urn, "dataHubExecutionRequestKey") == 200, "a final one is deleted, as by /entities"
    assert graph.get_aspect(urn, model.ExecutionRequestInputClass) is None
    assert cp.cp.store.one("SELECT 1 AS x FROM executions WHERE id=?", (execution["id"],)) is None


def test_a_heartbeat_whose_properties_nest_too_deep_is_a_400_not_a_500(cp, executor_double):
    cp.create_pool("remote", default=True)
    executor = executor_double("remote", "e1")
    status = datahub_aspects.executor_status(pool_id="remote", version="0.1.0", address="10.0.0.1", hostname="host-1",
                                             uptime_s=1.0, stopped=False, log_delivery=False)
    for name in ("capacity", "health", "runningExecutions"):
        proposal = datahub_aspects.proposal("dataHubRemoteExecutor", "urn:li:dataHubRemoteExecutor:e1",
                                            "dataHubRemoteExecutorStatus", status,
                                            properties={"instanceId": executor.instance_id, name: "[" * 5000})
        refused = requests.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": proposal}, timeout=10,
                                headers={"Authorization": f"Bearer {executor.token}"})
        assert refused.status_code == 400 and name in refused.json()["error"], (name, refused.status_code, refused.text[:200])
    executor.heartbeat()
    assert [e["status"] for e in cp.executors("remote")] == ["ONLINE"]
