"""IngestionSource.ownership, which DataHub's UI selects in its listIngestionSources and
getIngestionSource documents (datahub-web-react/src/graphql/ingestion.graphql): the `ownership`
aspect stored on a source, answered as DataHub's OwnershipMapper answers it, each owner and
ownership type with what DataHub's CorpUser, CorpGroup and OwnershipType mappers read from the
aspects stored for it (decision 83)."""
from __future__ import annotations

import datahub.metadata.schema_classes as model
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from graphql import FieldNode, NameNode, OperationDefinitionNode, SelectionSetNode, Visitor, parse, print_ast, visit

from .conftest import RECIPE

# DataHub's UI's own fragment (datahub-web-react/src/graphql/fragments.graphql), verbatim.
UI_OWNERSHIP_FIELDS = """
fragment ownershipFields on Ownership {
    owners {
        owner {
            ... on CorpUser {
                urn
                type
                username
                info {
                    active
                    displayName
                    title
                    email
                    firstName
                    lastName
                    fullName
                }
                properties {
                    active
                    displayName
                    title
                    email
                    firstName
                    lastName
                    fullName
                }
                editableProperties {
                    displayName
                    title
                    pictureLink
                    email
                }
            }
            ... on CorpGroup {
                urn
                type
                name
                properties {
                    displayName
                    email
                }
                info {
                    displayName
                    email
                    admins {
                        urn
                        username
                        info {
                            active
                            displayName
                            title
                            email
                            firstName
                            lastName
                            fullName
                        }
                        editableInfo {
                            pictureLink
                            teams
                            skills
                        }
                    }
                    members {
                        urn
                        username
                        info {
                            active
                            displayName
                            title
                            email
                            firstName
                            lastName
                            fullName
                        }
                        editableInfo {
                            pictureLink
                            teams
                            skills
                        }
                    }
                    groups
                }
            }
        }
        type
        ownershipType {
            urn
            type
            info {
                name
                description
            }
            status {
                removed
            }
        }
        associatedUrn
    }
    lastModified {
        time
    }
}
"""


class _AddTypename(Visitor):
    def enter_selection_set(self, node: SelectionSetNode, key, parent, path, ancestors):
        if isinstance(parent, OperationDefinitionNode):
            return None
        if any(isinstance(s, FieldNode) and s.name.value == "__typename" for s in node.selections):
            return None
        return SelectionSetNode(selections=(*node.selections, FieldNode(name=NameNode(value="__typename"))))


def as_the_ui_sends(document: str) -> str:
    """DOCUMENT as DataHub's UI sends it: Apollo Client adds __typename to every selection set
    but an operation's own."""
    return print_ast(visit(parse(document), _AddTypename()))


LIST = as_the_ui_sends("""query listIngestionSources($input: ListIngestionSourcesInput!) {
    listIngestionSources(input: $input) {
        start count total
        ingestionSources {
            urn name type config { recipe executorId version debugMode }
            executions(start: 0, count: 1) { start count total executionRequests { urn } }
            ownership { ...ownershipFields }
        }
    }
}""" + UI_OWNERSHIP_FIELDS)
GET = as_the_ui_sends("""query getIngestionSource($urn: String!, $runStart: Int, $runCount: Int) {
    ingestionSource(urn: $urn) {
        urn name
        executions(start: $runStart, count: $runCount) { start count total executionRequests { urn } }
        ownership { ...ownershipFields }
    }
}""" + UI_OWNERSHIP_FIELDS)


STEWARD, ON_CALL = "urn:li:ownershipType:steward", "urn:li:ownershipType:on-call"


def emit(graph, urn: str, aspect) -> None:
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=urn, aspect=aspect))


def test_the_uis_source_documents_answer_the_owners_stored_on_the_source_with_what_datahub_keeps_for_them(cp, graph):
    cp.create_pool("p", default=True)
    owned, unowned = cp.create_source("owned", RECIPE), cp.create_source("unowned", RECIPE)
    alice, bob, carol = "urn:li:corpuser:alice", "urn:li:corpuser:bob", "urn:li:corpuser:carol"
    group = "urn:li:corpGroup:data-eng"
    emit(graph, owned["urn"], model.OwnershipClass(
        owners=[model.OwnerClass(owner=alice, type=model.OwnershipTypeClass.TECHNICAL_OWNER),
                model.OwnerClass(owner=bob, type=model.OwnershipTypeClass.DATA_STEWARD, typeUrn=STEWARD),
                model.OwnerClass(owner=group, type=model.OwnershipTypeClass.CUSTOM, typeUrn=ON_CALL)],
        lastModified=model.AuditStampClass(time=1_700_000_000_000, actor="urn:li:corpuser:admin")))
    # alice, carol and the on-call type were never ingested: DataHub knows them by their urn alone.
    emit(graph, bob, model.CorpUserInfoClass(active=True, displayName="Bob Ross", title="Painter", email="bob@example.com",
                                             firstName="Bob", lastName="Ross", fullName="Bob Ross"))
    emit(graph, bob, model.CorpUserEditableInfoClass(displayName="Bobby", title="Happy painter", email="bobby@example.com",
                                                     pictureLink="https://example.com/bob.png", teams=["art"], skills=["trees"]))
    emit(graph, group, model.CorpGroupInfoClass(displayName="Data Engineering", email="data-eng@example.com",
                                                admins=[bob], members=[bob, carol], groups=["urn:li:corpGroup:eng"]))
    emit(graph, STEWARD, model.OwnershipTypeInfoClass(
        name="Steward", description="Looks after the source",
        created=model.AuditStampClass(time=1, actor="urn:li:corpuser:admin"),
        lastModified=model.AuditStampClass(time=1, actor="urn:li:corpuser:admin")))
    emit(graph, STEWARD, model.StatusClass(removed=False))

    bob_info = {"__typename": "CorpUserInfo", "active": True, "displayName": "Bob Ross", "title": "Painter",
                "email": "bob@example.com", "firstName": "Bob", "lastName": "Ross", "fullName": "Bob Ross"}
    expected = {
        "__typename": "Ownership",
        "owners": [
            {"__typename": "Owner",
             "owner": {"__typename": "CorpUser", "urn": alice, "type": "CORP_USER", "username": "alice",
                       "info": None, "properties": None, "editableProperties": None},
             "type": "TECHNICAL_OWNER", "associatedUrn": owned["urn"],
             # DataHub's bootstrapped system type, which no one ingested here
             "ownershipType": {"__typename": "OwnershipTypeEntity", "urn": "urn:li:ownershipType:__system__technical_owner",
                               "type": "CUSTOM_OWNERSHIP_TYPE", "status": None,
                               "info": {"__typename": "OwnershipTypeInfo", "name": "Technical Owner",
                                        "description": "Involved in the production, maintenance, or distribution of "
                                                       "the asset(s)."}}},
            {"__typename": "Owner",
             "owner": {"__typename": "CorpUser", "urn": bob, "type": "CORP_USER", "username": "bob",
                       "info": bob_info, "properties": {**bob_info, "__typename": "CorpUserProperties"},
                       "editableProperties": {"__typename": "CorpUserEditableProperties", "displayName": "Bobby",
                                              "title": "Happy painter", "pictureLink": "https://example.com/bob.png",
                                              "email": "bobby@example.com"}},
             "type": "DATA_STEWARD", "associatedUrn": owned["urn"],
             "ownershipType": {"__typename": "OwnershipTypeEntity", "urn": STEWARD, "type": "CUSTOM_OWNERSHIP_TYPE",
                               "info": {"__typename": "OwnershipTypeInfo", "name": "Steward",
                                        "description": "Looks after the source"},
                               "status": {"__typename": "Status", "removed": False}}},
            {"__typename": "Owner",
             "owner": {"__typename": "CorpGroup", "urn": group, "type": "CORP_GROUP", "name": "data-eng",
                       "properties": {"__typename": "CorpGroupProperties", "displayName": "Data Engineering",
                                      "email": "data-eng@example.com"},
                       "info": {"__typename": "CorpGroupInfo", "displayName": "Data Engineering",
                                "email": "data-eng@example.com", "groups": ["urn:li:corpGroup:eng"],
                                # a user's editableInfo is never filled in by DataHub's CorpUserMapper
                                "admins": [{"__typename": "CorpUser", "urn": bob, "username": "bob", "info": bob_info,
                                            "editableInfo": None}],
                                "members": [{"__typename": "CorpUser", "urn": bob, "username": "bob", "info": bob_info,
                                             "editableInfo": None},
                                            {"__typename": "CorpUser", "urn": carol, "username": "carol", "info": None,
                                             "editableInfo": None}]}},
             "type": "CUSTOM", "associatedUrn": owned["urn"],
             "ownershipType": {"__typename": "OwnershipTypeEntity", "urn": ON_CALL, "type": "CUSTOM_OWNERSHIP_TYPE",
                               "info": None, "status": None}}],
        "lastModified": {"__typename": "AuditStamp", "time": 1_700_000_000_000}}
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
    got = graph.execute_graphql("""query($urn: String!) { ingestionSource(urn: $urn) { ownership {
        lastModified { time actor } owners { type ownershipType { urn info { name } } } } } }""",
                                variables={"urn": source["urn"]})["ingestionSource"]["ownership"]
    assert got["lastModified"] == {"time": 0, "actor": "urn:li:corpuser:unknown"}
    # DataHub bootstraps no type for the deprecated legacy types: it knows this one by its urn alone
    assert got["owners"] == [{"type": "DATAOWNER",
                              "ownershipType": {"urn": "urn:li:ownershipType:__system__dataowner", "info": None}}]
