"""Found by review, each reproduced first: bodies of the wrong shape answered 500 (an unhandled
TypeError from a list where a name was expected) or were taken (a snapshot whose urn is not
one), and a conditional write could undo a change made by another write path, because that path
stored the aspect without its version number."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import acryl_datahub_cloud.metadata.schema_classes as cloud_model
import pytest
import requests
from datahub.configuration.common import OperationalError
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig

from controlplane import entities as E
from controlplane.metadata import aspect_store
from controlplane.testing import ControlPlaneHandle, running_controlplane

CHECKPOINT_URN = "urn:li:dataJob:(urn:li:dataFlow:(datahub,p,prod),checkpoint)"
DATASET = "urn:li:dataset:(urn:li:dataPlatform:hive,t,PROD)"


@pytest.fixture(scope="module")
def cp(tmp_path_factory) -> Iterator[ControlPlaneHandle]:
    with running_controlplane(Path(tmp_path_factory.mktemp("cp"))) as handle:
        yield handle


def post(cp: ControlPlaneHandle, path: str, body: dict) -> requests.Response:
    return requests.post(cp.gms_url + path, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {cp.admin_token}", "Connection": "close"})


@pytest.mark.parametrize("condition", [["EQUAL"], {"x": 1}])
def test_a_timeseries_filter_whose_condition_is_not_a_name_is_refused_400(cp, condition):
    answer = post(cp, "/aspects?action=getTimeseriesAspectValues", {
        "urn": CHECKPOINT_URN, "entity": "dataJob", "aspect": "datahubIngestionCheckpoint",
        "filter": {"or": [{"and": [{"field": "pipelineName", "values": ["p"], "condition": condition}]}]}})
    assert answer.status_code == 400, answer.text
    assert "condition" in answer.text


def test_a_proposal_whose_change_type_is_not_a_name_is_refused_400(cp):
    answer = post(cp, "/aspects?action=ingestProposal", {"proposal": {
        "entityType": "dataset", "entityUrn": DATASET, "changeType": ["UPSERT"], "aspectName": "status",
        "aspect": {"value": "{\"removed\": false}", "contentType": "application/json"}}})
    assert answer.status_code == 400, answer.text
    assert "changeType" in answer.text


@pytest.mark.parametrize("urn", ["not-an-urn", "urn:li:corpuser:bob"])
def test_a_snapshot_whose_urn_is_not_one_of_its_entity_is_refused_400_even_with_no_aspects(cp, urn):
    """Rest.li coerces a DatasetSnapshot's urn (a DatasetUrn) first; we parsed it only in the
    proposals its aspects make, so with none it was taken."""
    answer = post(cp, "/entities?action=ingest", {"entity": {"value": {
        "com.linkedin.metadata.snapshot.DatasetSnapshot": {"urn": urn, "aspects": []}}}})
    assert answer.status_code == 400, answer.text


def test_a_conditional_write_is_refused_after_a_graphql_change_of_the_same_aspect(cp):
    """The default pool is an aspect DataHub's client may write as an MCP (versioned) and GraphQL
    changes by our own rule: that write dropped the version, a missing one counts as 1, and a
    client holding the 1 it read before the change then undid the change unrefused."""
    cp.create_pool("a", default=True)
    cp.create_pool("b")

    def stored() -> tuple[str, str | None]:
        with cp.cp.store.read() as db:
            found = aspect_store.get(db, E.GLOBAL_CONFIG_URN, E.GLOBAL_CONFIG_ASPECT)
        return found.value["defaultExecutorPoolId"], (found.system_metadata or {}).get("version")

    with DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=cp.admin_token)) as graph:
        def write(pool: str, version: str | None = None) -> None:
            graph.emit_mcp(MetadataChangeProposalWrapper(
                entityUrn=E.GLOBAL_CONFIG_URN,
                aspect=cloud_model.RemoteExecutorPoolGlobalConfigClass(defaultExecutorPoolId=pool),
                headers={"If-Version-Match": version} if version else None))

        write("a")
        _, read = stored()
        graph.execute_graphql('mutation { updateDefaultRemoteExecutorPool(urn: "urn:li:dataHubRemoteExecutorPool:b") }')
        pool, changed = stored()
        assert pool == "b" and changed is not None and int(changed) > int(read), (read, changed)
        with pytest.raises(OperationalError, match=f"Expected version {read}, actual version {changed}"):
            write("a", read)
        assert stored()[0] == "b", "the GraphQL change stands"
        write("a", changed)  # the version it has now is taken
        assert stored()[0] == "a"


def test_graphql_ingestion_source_answers_only_the_urn_asked_for(cp):
    """DataHub's resolver takes a urn; ours also found a source by id or name (the admin CLI's
    lookup), so a query for one urn could answer a source with another."""
    cp.create_pool("by-urn", default=False)
    source = cp.create_source("named-like-an-id", '{"source": {"type": "datahub-mock-data", "config": {}}}',
                              pool_id="by-urn")
    query = "query($urn: String!) { ingestionSource(urn: $urn) { urn name } }"
    with DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=cp.admin_token)) as graph:
        found = graph.execute_graphql(query, variables={"urn": source["urn"]})["ingestionSource"]
        assert found == {"urn": source["urn"], "name": "named-like-an-id"}
        for other in ("named-like-an-id", source["id"], f"urn:li:dataHubIngestionSource:{source['id']}x"):
            assert graph.execute_graphql(query, variables={"urn": other})["ingestionSource"] is None, other
