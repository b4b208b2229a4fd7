"""Urn-typed fields of an aspect, written through DataHub's own client: the control plane takes a
urn GMS takes there and refuses, with a 400 naming the field, one GMS refuses (its
EntityRegistryUrnValidator: "Provided urn ... is invalid")."""
from __future__ import annotations

import pytest
from datahub.configuration.common import OperationalError
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.emitter.rest_emitter import DatahubRestEmitter
import datahub.metadata.schema_classes as model

DATASET = "urn:li:dataset:(urn:li:dataPlatform:hive,db.orders,PROD)"
# A nested tuple, and a comma and a parenthesis percent-encoded inside a key part.
UPSTREAM = "urn:li:dataset:(urn:li:dataPlatform:hive,db.t%2Cx%28y%29,PROD)"


def container(urn: str) -> model.ContainerClass:
    return model.ContainerClass(container=urn)


def upstream(urn: str) -> model.UpstreamLineageClass:
    return model.UpstreamLineageClass(upstreams=[model.UpstreamClass(dataset=urn, type="TRANSFORMED")])


def owner(urn: str) -> model.OwnershipClass:
    return model.OwnershipClass(owners=[model.OwnerClass(owner=urn, type="DATAOWNER")])


@pytest.mark.parametrize("aspect, field, value, says", [
    (container, "/container", "not-an-urn", "should start with 'urn:li:'"),
    (upstream, "/upstreams/0/dataset", "hive.db.s", "should start with 'urn:li:'"),
    (owner, "/owners/0/owner", "jdoe", "should start with 'urn:li:'"),
    (upstream, "/upstreams/0/dataset", "urn:li:dataset:(urn:li:dataPlatform:hive,db.s)", "3 parts"),
    (upstream, "/upstreams/0/dataset", "urn:li:dataset:(urn:li:dataPlatform:hive,db.s,PROD", "3 parts"),
    (upstream, "/upstreams/0/dataset", "urn:li:chart:(looker,c1)", "a DatasetUrn is a urn of entity type dataset"),
    (owner, "/owners/0/owner", "urn:li:noSuchEntity:jdoe", "Unknown entity type 'noSuchEntity'"),
    (owner, "/owners/0/owner", DATASET, "entity type dataset is not a valid destination"),
    (container, "/container", "urn:li:corpuser:jdoe", "entity type corpuser is not a valid destination"),
])
def test_an_invalid_urn_in_a_urn_field_is_refused_naming_the_field(cp, graph, aspect, field, value, says):
    for client in (graph, DatahubRestEmitter(cp.gms_url, token=cp.admin_token)):
        with pytest.raises(OperationalError) as refused:
            client.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=aspect(value)))
        assert refused.value.info.get("status") == 400
        message = refused.value.info.get("message", "")
        assert f"ERROR :: {field} :: Provided urn {value!r} is invalid" in message and says in message, message
    assert cp.cp.store.query("SELECT urn FROM aspects") == [], "nothing of a refused proposal is stored"


def test_valid_urns_in_urn_fields_are_taken_and_read_back(cp, graph):
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=container("urn:li:container:abc123")))
    DatahubRestEmitter(cp.gms_url, token=cp.admin_token).emit_mcp(
        MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=upstream(UPSTREAM)))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.OwnershipClass(owners=[
        model.OwnerClass(owner="urn:li:corpuser:j%2Edoe", type="DATAOWNER"),
        model.OwnerClass(owner="urn:li:corpGroup:data-eng", type="TECHNICAL_OWNER")])))
    assert graph.get_aspect(DATASET, model.ContainerClass).container == "urn:li:container:abc123"
    assert graph.get_aspect(DATASET, model.UpstreamLineageClass).upstreams[0].dataset == UPSTREAM
    assert [o.owner for o in graph.get_aspect(DATASET, model.OwnershipClass).owners] == [
        "urn:li:corpuser:j%2Edoe", "urn:li:corpGroup:data-eng"]


def dashboard_consuming(urn: str) -> model.DashboardInfoClass:
    return model.DashboardInfoClass(title="orders", description="", lastModified=model.ChangeAuditStampsClass(),
                                    datasetEdges=[model.EdgeClass(destinationUrn=urn)])


def test_a_relationship_declared_by_path_from_an_enclosing_field_is_checked_for_its_entity_types(cp, graph):
    """DashboardInfo.datasetEdges declares `/*/destinationUrn` a Consumes relationship to datasets;
    an Edge's destinationUrn is any urn, so only that declaration says a chart is refused there."""
    dashboard = "urn:li:dashboard:(looker,orders)"
    with pytest.raises(OperationalError) as refused:
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=dashboard,
                                                     aspect=dashboard_consuming("urn:li:chart:(looker,c1)")))
    message = refused.value.info.get("message", "")
    assert refused.value.info.get("status") == 400
    assert "ERROR :: /datasetEdges/0/destinationUrn :: Provided urn 'urn:li:chart:(looker,c1)' is invalid: entity type " \
           "chart is not a valid destination for this field (one of: dataset)" in message, message
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=dashboard, aspect=dashboard_consuming(DATASET)))
    assert graph.get_aspect(dashboard, model.DashboardInfoClass).datasetEdges[0].destinationUrn == DATASET


def schema_assertion(foreign_dataset: str) -> model.AssertionInfoClass:
    """A schema assertion whose expected schema has a foreign key to FOREIGN_DATASET. The
    expected schema is a SchemaMetadata, whose ForeignKeyConstraint.foreignDataset declares a
    relationship to datasets; SchemaAssertionInfo.schema removes the relationships below it."""
    key = model.ForeignKeyConstraintClass(name="fk", foreignFields=[], sourceFields=[], foreignDataset=foreign_dataset)
    schema = model.SchemaMetadataClass(schemaName="orders", platform="urn:li:dataPlatform:hive", version=0, hash="",
                                       platformSchema=model.OtherSchemaClass(rawSchema=""), fields=[],
                                       foreignKeys=[key])
    return model.AssertionInfoClass(type="DATA_SCHEMA", schemaAssertion=model.SchemaAssertionInfoClass(
        entity=DATASET, schema=schema))


def test_a_relationship_an_enclosing_field_removes_checks_no_destination_and_one_it_keeps_does(cp, graph):
    """GMS checks a urn's entity type against the relationships of the aspect at that path
    (EntityRegistryUrnValidator), not against the annotation the field carries: in an assertion's
    expected schema a foreign key may name a chart, while in a dataset's schema it may not."""
    assertion = "urn:li:assertion:schema-check-1"
    chart = "urn:li:chart:(looker,c1)"
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=assertion, aspect=schema_assertion(chart)))
    stored = graph.get_aspect(assertion, model.AssertionInfoClass)
    assert stored.schemaAssertion.schema.foreignKeys[0].foreignDataset == chart
    with pytest.raises(OperationalError) as refused:
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET,
                                                     aspect=schema_assertion(chart).schemaAssertion.schema))
    message = refused.value.info.get("message", "")
    assert (f"ERROR :: /foreignKeys/0/foreignDataset :: Provided urn {chart!r} is invalid: entity type chart is not "
            "a valid destination for this field (one of: dataset)") in message, message
