"""The entity registry and aspect validation: DataHub's model, checked the way GMS checks it."""
from __future__ import annotations

import types

import acryl_datahub_cloud.metadata.schema_classes as cloud_model
import datahub.metadata.schema_classes as installed_model
import pytest

from controlplane.metadata import remote_executor_model
from controlplane.metadata.registry import MetadataInvalid, Registry

REMOTE_EXECUTOR_ENTITIES = {"dataHubRemoteExecutorPool", "dataHubRemoteExecutor", "dataHubRemoteExecutorGlobalConfig"}
IGNORED = {"doc", "Searchable", "symbolDocs", "Relationship", "UrnValidation", "java", "Urn", "deprecated"}


def comparable(schema_json):
    if isinstance(schema_json, dict):
        return {k: comparable(v) for k, v in schema_json.items() if k not in IGNORED}
    if isinstance(schema_json, list):
        return [comparable(v) for v in schema_json]
    return schema_json


@pytest.mark.parametrize("definition", remote_executor_model.SCHEMAS, ids=lambda d: d["name"])
def test_our_remote_executor_schemas_are_datahub_clouds_field_by_field(definition):
    cloud_class = cloud_model.ASPECT_NAME_MAP[definition["Aspect"]["name"]]
    assert comparable(definition) == comparable(cloud_class.RECORD_SCHEMA.to_json())


def open_source_model():
    """The installed model without the remote-executor entities: what a control plane without
    acryl-datahub-cloud has."""
    return types.SimpleNamespace(
        ASPECT_NAME_MAP={k: v for k, v in installed_model.ASPECT_NAME_MAP.items() if "RemoteExecutor" not in v.__name__},
        KEY_ASPECTS={k: v for k, v in installed_model.KEY_ASPECTS.items() if k not in REMOTE_EXECUTOR_ENTITIES})


def test_without_datahub_clouds_package_the_remote_executor_entities_still_validate():
    registry = Registry.load(open_source_model())
    spec = registry.aspect("dataHubRemoteExecutor", "dataHubRemoteExecutorStatus")
    assert spec.model_class is None, "our own schema, not a class"
    good = {"executorPoolId": "p", "executorReleaseVersion": "1", "executorAddress": "a", "executorHostname": "h",
            "executorUptime": 1.5, "reportedAt": 5}
    registry.validate(spec, good)
    assert cloud_model.RemoteExecutorStatusClass.from_obj(good).validate()
    with pytest.raises(MetadataInvalid, match="/executorUptime"):
        registry.validate(spec, {**good, "executorUptime": "long"})
    assert registry.urn_from_key("dataHubRemoteExecutorPool", {"id": "remote"}) == "urn:li:dataHubRemoteExecutorPool:remote"


@pytest.mark.parametrize("value, says", [
    ({"name": "x", "type": "mysql", "config": {"recipe": "{}", "executorId": "default"}, "colour": 1},
     "/colour :: unrecognized field found but not allowed"),
    ({"name": 5, "type": "mysql", "config": {"recipe": "{}", "executorId": "default"}}, "/name :: 5 is not a string"),
    ({"name": "x", "config": {"recipe": "{}"}}, "/type :: field is required but not found and has no default value"),
    ({"name": "x", "type": "t", "config": {"recipe": "{}", "executorId": "d", "extraArgs": {"a": 1}}},
     "/config/extraArgs/a :: 1 is not a string"),
])
def test_an_aspect_that_breaks_its_schema_is_refused_with_where_and_why(value, says):
    registry = Registry.load()
    with pytest.raises(MetadataInvalid) as refused:
        registry.validate(registry.aspect("dataHubIngestionSource", "dataHubIngestionSourceInfo"), value)
    assert "Failed to validate record with class com.linkedin.ingestion.DataHubIngestionSourceInfo" in str(refused.value)
    assert says in str(refused.value)


def test_urns_are_parsed_against_the_registry():
    registry = Registry.load()
    assert registry.key_value(registry.parse_urn("urn:li:dataset:(urn:li:dataPlatform:hive,a.b,PROD)")) == {
        "platform": "urn:li:dataPlatform:hive", "name": "a.b", "origin": "PROD"}
    for bad in ("urn:li:dataset:(urn:li:dataPlatform:hive,a.b)", "not-a-urn", "urn:li:noSuchType:x", 42):
        with pytest.raises(MetadataInvalid):
            registry.parse_urn(bad)
