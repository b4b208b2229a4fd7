"""IngestionSource.ownership, which DataHub's UI selects in its listIngestionSources and
getIngestionSource documents (datahub-web-react/src/graphql/ingestion.graphql): the `ownership`
aspect stored on a source, answered as DataHub's OwnershipMapper answers it."""
from __future__ import annotations

import datahub.metadata.schema_classes as model
from datahub.emitter.mcp import MetadataChangeProposalWrapper

from .conftest import RECIPE

OWNERSHIP_FIELDS = """
fragment ownershipFields on Ownership {
    owners {
        owner {
            __typename
            ... on CorpUser { urn type username }
            ... on CorpGroup { urn type name }
        }
        type
        ownershipType { urn type }
        associatedUrn
    }
    lastModified { time actor }
}
"""
LIST = """query listIngestionSources($input: ListIngestionSourcesInput!) {
    listIngestionSources(input: $input) {
        start count total
        ingestionSources {
            urn name type config { recipe executorId version debugMode }
            executions(start: 0, count: 1) { start count total executionRequests { urn } }
            ownership { ...ownershipFields }
        }
    }
}""" + OWNERSHIP_FIELDS
GET = """query getIngestionSource($urn: String!, $runStart: Int, $runCount: Int) {
    ingestionSource(urn: $urn) {
        urn name
        executions(start: $runStart, count: $runCount) { start count total executionRequests { urn } }
        ownership { ...ownershipFields }
    }
}""" + OWNERSHIP_FIELDS


def test_the_uis_source_documents_answer_the_owners_stored_on_the_source(cp, graph):
    cp.create_pool("p", default=True)
    owned, unowned = cp.create_source("owned", RECIPE), cp.create_source("unowned", RECIPE)
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=owned["urn"], aspect=model.OwnershipClass(
        owners=[model.OwnerClass(owner="urn:li:corpuser:alice", type=model.OwnershipTypeClass.TECHNICAL_OWNER),
                model.OwnerClass(owner="urn:li:corpGroup:data-eng", type=model.OwnershipTypeClass.CUSTOM,
                                 typeUrn="urn:li:ownershipType:steward")],
        lastModified=model.AuditStampClass(time=1_700_000_000_000, actor="urn:li:corpuser:admin"))))

    expected = {
        "owners": [
            {"owner": {"__typename": "CorpUser", "urn": "urn:li:corpuser:alice", "type": "CORP_USER", "username": "alice"},
             "type": "TECHNICAL_OWNER", "associatedUrn": owned["urn"],
             "ownershipType": {"urn": "urn:li:ownershipType:__system__technical_owner", "type": "CUSTOM_OWNERSHIP_TYPE"}},
            {"owner": {"__typename": "CorpGroup", "urn": "urn:li:corpGroup:data-eng", "type": "CORP_GROUP",
                       "name": "data-eng"},
             "type": "CUSTOM", "associatedUrn": owned["urn"],
             "ownershipType": {"urn": "urn:li:ownershipType:steward", "type": "CUSTOM_OWNERSHIP_TYPE"}}],
        "lastModified": {"time": 1_700_000_000_000, "actor": "urn:li:corpuser:admin"}}
    listed = graph.execute_graphql(LIST, variables={"input": {"start": 0, "count": 25}},
                                   operation_name="listIngestionSources")["listIngestionSources"]
    assert {s["name"]: s["ownership"] for s in listed["ingestionSources"]} == {"owned": expected, "unowned": None}

    got = graph.execute_graphql(GET, variables={"urn": owned["urn"], "runStart": 0, "runCount": 5},
                                operation_name="getIngestionSource")["ingestionSource"]
    assert got["ownership"] == expected
    assert graph.execute_graphql(GET, variables={"urn": unowned["urn"]})["ingestionSource"]["ownership"] is None


def test_an_owner_stored_without_a_last_modified_stamp_is_answered_with_datahubs_default(cp, graph):
    cp.create_pool("p", default=True)
    source = cp.create_source("s", RECIPE)
    cp.ingest(source["urn"], "ownership", {"owners": [{"owner": "urn:li:corpuser:bob", "type": "DATAOWNER"}]})
    got = graph.execute_graphql(GET, variables={"urn": source["urn"]})["ingestionSource"]["ownership"]
    assert got["lastModified"] == {"time": 0, "actor": "urn:li:corpuser:unknown"}
    assert [(o["type"], o["ownershipType"]["urn"]) for o in got["owners"]] == [
        ("DATAOWNER", "urn:li:ownershipType:__system__dataowner")]
