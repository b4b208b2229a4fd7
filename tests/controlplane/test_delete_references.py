"""POST /entities?action=deleteReferences as DataHub's client and CLI use it
(DataHubGraph.delete_references_to_urn, `datahub delete references`, and `datahub delete --hard`
of a tag, user, group, domain or glossary term, which asks it after the entity is gone): the
references counted as GMS counts them, removed by GMS's rules, and what is left valid for
DataHub's own classes."""
from __future__ import annotations

import datahub.metadata.schema_classes as model
import pytest
from datahub.configuration.common import OperationalError
from datahub.emitter.mcp import MetadataChangeProposalWrapper

from controlplane import references
from controlplane.metadata import relationships
from controlplane.metadata.registry import Registry

from .test_datahub_client import DATASET, assert_valid_for_datahub, datahub_cli

OTHER_DATASET = "urn:li:dataset:(urn:li:dataPlatform:hive,db.customers,PROD)"
PII, GOLD = "urn:li:tag:pii", "urn:li:tag:gold"
CONTAINER = "urn:li:container:warehouse"


def emit(graph, urn: str, aspect) -> None:
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=urn, aspect=aspect))


def tags(*urns: str) -> model.GlobalTagsClass:
    return model.GlobalTagsClass(tags=[model.TagAssociationClass(tag=urn) for urn in urns])


def schema_with_a_tagged_field(tag: str) -> model.SchemaMetadataClass:
    return model.SchemaMetadataClass(
        schemaName="orders", platform="urn:li:dataPlatform:hive", version=0, hash="", platformSchema=model.OtherSchemaClass(""),
        fields=[model.SchemaFieldClass(fieldPath="email", type=model.SchemaFieldDataTypeClass(model.StringTypeClass()),
                                       nativeDataType="string", globalTags=tags(tag)),
                model.SchemaFieldClass(fieldPath="id", type=model.SchemaFieldDataTypeClass(model.NumberTypeClass()),
                                       nativeDataType="int")])


def tagged_datasets(graph) -> None:
    emit(graph, PII, model.TagPropertiesClass(name="pii"))
    emit(graph, DATASET, tags(PII, GOLD))
    emit(graph, DATASET, schema_with_a_tagged_field(PII))
    emit(graph, OTHER_DATASET, tags(PII))


def tag_urns(graph, urn: str) -> list[str]:
    found = graph.get_aspect(urn, model.GlobalTagsClass)
    return [association.tag for association in found.tags] if found else []


def test_a_dry_run_counts_the_references_by_relationship_and_changes_nothing(cp, graph):
    tagged_datasets(graph)

    count, related = graph.delete_references_to_urn(PII, dry_run=True)

    assert count == 3, "three edges: each dataset TaggedWith pii, and the first's schema field SchemaFieldTaggedWith it"
    assert sorted((r["relationship"], r["entity"], r["aspect"]) for r in related) == sorted([
        ("TaggedWith", DATASET, "globalTags"), ("SchemaFieldTaggedWith", DATASET, "schemaMetadata"),
        ("TaggedWith", OTHER_DATASET, "globalTags")])
    assert list(related[0]) == ["relationship", "entity", "aspect"], "the CLI prints the values in this order"
    assert tag_urns(graph, DATASET) == [PII, GOLD] and tag_urns(graph, OTHER_DATASET) == [PII]


def test_the_references_are_removed_and_what_is_left_is_valid_for_datahub(cp, graph):
    tagged_datasets(graph)

    count, _ = graph.delete_references_to_urn(PII, dry_run=False)

    assert count == 3
    assert tag_urns(graph, DATASET) == [GOLD] and tag_urns(graph, OTHER_DATASET) == []
    fields = graph.get_aspect(DATASET, model.SchemaMetadataClass).fields
    assert [f.fieldPath for f in fields] == ["email", "id"], "a field loses its tag, not itself"
    assert fields[0].globalTags.tags == []
    assert graph.exists(PII), "the tag itself is not deleted: only what points to it"
    assert graph.delete_references_to_urn(PII, dry_run=True) == (0, []), "none left"
    assert assert_valid_for_datahub(cp) == 7, "the tag, three aspects rewritten, and the versions they replaced"


def test_a_required_reference_takes_its_array_element_or_its_aspect_with_it(cp, graph):
    emit(graph, DATASET, model.ContainerClass(container=CONTAINER))
    emit(graph, DATASET, model.StatusClass(removed=False))
    emit(graph, DATASET, model.UpstreamLineageClass(upstreams=[
        model.UpstreamClass(dataset=OTHER_DATASET, type=model.DatasetLineageTypeClass.TRANSFORMED),
        model.UpstreamClass(dataset="urn:li:dataset:(urn:li:dataPlatform:hive,db.kept,PROD)",
                            type=model.DatasetLineageTypeClass.COPY)]))

    assert graph.delete_references_to_urn(CONTAINER, dry_run=False)[0] == 1
    assert graph.delete_references_to_urn(OTHER_DATASET, dry_run=False)[0] == 1

    assert graph.get_aspect(DATASET, model.ContainerClass) is None, "the container was all the aspect held"
    upstreams = graph.get_aspect(DATASET, model.UpstreamLineageClass).upstreams
    assert [u.dataset for u in upstreams] == ["urn:li:dataset:(urn:li:dataPlatform:hive,db.kept,PROD)"], \
        "the lineage edge to the deleted dataset goes, with its type (decision 94)"
    assert graph.get_aspect(DATASET, model.StatusClass) is not None
    assert assert_valid_for_datahub(cp) == 3, "the status, the lineage and the version it replaced"


def test_an_entitys_key_is_not_a_reference_it_can_lose(cp, graph):
    flow = "urn:li:dataFlow:(airflow,nightly,prod)"
    job = f"urn:li:dataJob:({flow},load)"
    emit(graph, job, model.DataJobInfoClass(name="load", type="COMMAND"))

    assert graph.delete_references_to_urn(flow, dry_run=False) == (0, [])
    assert graph.exists(job) and graph.get_aspect(job, model.DataJobInfoClass).name == "load"


def test_datahubs_cli_hard_deletes_a_tag_and_the_references_to_it(cp, graph):
    tagged_datasets(graph)

    deleted = datahub_cli(cp, "delete", "--urn", PII, "--hard", "--force")

    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert not graph.exists(PII)
    assert tag_urns(graph, DATASET) == [GOLD] and tag_urns(graph, OTHER_DATASET) == []
    assert assert_valid_for_datahub(cp) == 6, "three aspects rewritten and the versions they replaced"


def test_datahubs_cli_lists_then_deletes_references(cp, graph):
    tagged_datasets(graph)

    listed = datahub_cli(cp, "delete", "references", "--urn", PII, "--dry-run")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "Found 3 references to urn:li:tag:pii" in listed.stdout and "SchemaFieldTaggedWith" in listed.stdout
    assert tag_urns(graph, OTHER_DATASET) == [PII]

    removed = datahub_cli(cp, "delete", "references", "--urn", PII, "--force")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert tag_urns(graph, OTHER_DATASET) == [] and graph.exists(PII)


def test_an_aspect_written_after_it_was_read_is_read_again_not_overwritten(cp, graph, monkeypatch):
    tagged_datasets(graph)
    find, writes = references._find, []

    def a_write_comes_between_the_read_and_the_rewrite(control_plane, urn):
        found = find(control_plane, urn)
        if not writes:
            writes.append(emit(graph, OTHER_DATASET, tags(PII, GOLD)))
        return found

    monkeypatch.setattr(references, "_find", a_write_comes_between_the_read_and_the_rewrite)
    assert graph.delete_references_to_urn(PII, dry_run=False)[0] == 3

    assert tag_urns(graph, OTHER_DATASET) == [GOLD], "the tag written meanwhile is kept, the reference still removed"
    assert tag_urns(graph, DATASET) == [GOLD]


def test_only_an_admin_deletes_references_and_a_bad_request_says_why(cp, graph):
    from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig

    tagged_datasets(graph)
    with DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=cp.create_executor_token(None))) as executor:
        with pytest.raises(OperationalError):
            executor.delete_references_to_urn(PII, dry_run=False)
    answer = graph._session.post(f"{cp.gms_url}/entities?action=deleteReferences", json={"urn": PII, "dryRun": "yes"})
    assert answer.status_code == 400 and "dryRun must be true or false" in answer.text
    assert tag_urns(graph, OTHER_DATASET) == [PII]


def test_relationships_are_read_from_datahubs_schemas_with_paths_given_from_outside_winning():
    registry = Registry.load()

    def paths(aspect: str) -> set[tuple[str, str]]:
        return {(r.name, "/".join(r.path)) for r in relationships.paths_of(registry.aspect("dataset", aspect).schema)}

    assert paths("globalTags") == {("TaggedWith", "tags/*/tag")}
    assert ("SchemaFieldTaggedWith", "fields/*/globalTags/tags/*/tag") in paths("schemaMetadata")
    assert ("TaggedWith", "fields/*/globalTags/tags/*/tag") not in paths("schemaMetadata")
    assert paths("upstreamLineage") == {("DownstreamOf", "upstreams/*/dataset"),
                                        ("DownstreamOf", "fineGrainedLineages/*/upstreams/*")}
    assert paths("domains") == {("AssociatedWith", "domains/*")}
