"""Answers DataHub's own client reads the way GMS gives them: an entity's key aspect in every
EntityResponse (GMS's EntityV2Resource adds it, asked for or not, stored or not)."""
from __future__ import annotations

from urllib.parse import quote

import datahub.metadata.schema_classes as model
from datahub.emitter.mcp import MetadataChangeProposalWrapper

from .conftest import RECIPE, raw
from .test_datahub_client import DATASET

MISSING = "urn:li:dataset:(urn:li:dataPlatform:hive,db.none,PROD)"


def dataset_key(name: str) -> model.DatasetKeyClass:
    return model.DatasetKeyClass(platform="urn:li:dataPlatform:hive", name=name, origin="PROD")


def test_every_entity_response_carries_the_key_aspect_as_gms_adds_it(cp, graph):
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=model.StatusClass(removed=False)))
    # DataHub's client promises the key aspect in a full entity ("will always be present").
    assert graph.get_entity_semityped(DATASET) == {"status": model.StatusClass(removed=False),
                                                   "datasetKey": dataset_key("db.orders")}
    # Asked for other aspects only, GMS still adds the key, built from the urn by its system actor.
    asked = graph.get_entity_raw(DATASET, ["status"])
    assert set(asked["aspects"]) == {"status", "datasetKey"}
    key = asked["aspects"]["datasetKey"]
    assert (key["name"], key["version"], key["type"], key["created"]["actor"]) == (
        "datasetKey", 0, "VERSIONED", "urn:li:corpuser:__datahub_system")
    # An entity that is not stored answers with its key alone, never a 404: the client reads it
    # as "no aspects", and tells existence through the key aspect's own endpoint.
    assert graph.get_aspects_for_entity(MISSING, ["status"], [model.StatusClass]) == {"status": None}
    assert graph.get_entity_semityped(MISSING) == {"datasetKey": dataset_key("db.none")}
    assert not graph.exists(MISSING) and graph.exists(DATASET)
    # Our own entities get theirs the same way.
    cp.create_pool("remote", default=True)
    source = cp.create_source("mock", RECIPE)
    assert graph.get_entity_semityped(source["urn"])["dataHubIngestionSourceKey"] == \
        model.DataHubIngestionSourceKeyClass(id=source["id"])

    session = raw(cp, cp.admin_token)
    ids = ",".join(quote(urn, safe="") for urn in (DATASET, MISSING))
    batch = session.get(f"{cp.gms_url}/entitiesV2?ids=List({ids})&aspects=List(status)", timeout=10)
    assert batch.status_code == 200, batch.text[:300]
    assert batch.json()["errors"] == {}
    results = batch.json()["results"]
    assert {urn: set(entity["aspects"]) for urn, entity in results.items()} == {
        DATASET: {"status", "datasetKey"}, MISSING: {"datasetKey"}}
    assert model.DatasetKeyClass.from_obj(results[MISSING]["aspects"]["datasetKey"]["value"]) == dataset_key("db.none")
    # GMS's alwaysIncludeKeyAspect=false leaves it out (and answers 200 with what is stored).
    single = f"{cp.gms_url}/entitiesV2/{quote(DATASET, safe='')}?aspects=List(status)"
    assert set(session.get(f"{single}&alwaysIncludeKeyAspect=false", timeout=10).json()["aspects"]) == {"status"}
    assert session.get(f"{single}&alwaysIncludeKeyAspect=maybe", timeout=10).status_code == 400
