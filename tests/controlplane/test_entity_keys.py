"""An entity written with its key aspect alone exists, as in GMS, which stores the key aspect as
a row: DataHub's client tells existence by reading the key aspect (DataHubGraph.exists), a
CREATE_ENTITY of it is refused, every read answers the key, and a hard delete leaves the key's
row out of its count, as GMS's does. The control plane's own entities are not made that way."""
from __future__ import annotations

import acryl_datahub_cloud.metadata.schema_classes as cloud_model
import datahub.metadata.schema_classes as model
import pytest
from datahub.configuration.common import OperationalError
from datahub.emitter.mcp import MetadataChangeProposalWrapper

from controlplane import entities as E
from controlplane.metadata.entity_keys import SYSTEM_ACTOR

from .test_datahub_client import assert_valid_for_datahub

USER = "urn:li:corpuser:newuser"
CONTAINER = "urn:li:container:c1"


def test_an_entity_written_with_only_its_key_aspect_exists_and_reads_back_its_key(cp, graph):
    key = model.CorpUserKeyClass(username="newuser")
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=USER, aspect=key))

    assert graph.exists(USER)
    assert graph.get_aspect(USER, model.CorpUserKeyClass) == key
    assert graph.get_entity_semityped(USER) == {"corpUserKey": key}
    assert graph.get_entity_raw(USER)["aspects"]["corpUserKey"]["created"]["actor"] != SYSTEM_ACTOR, \
        "the stored row, stamped by its writer, not one built from the urn"
    (value, _), = graph.get_entities("corpuser", [USER]).get(USER, {}).values()
    assert value == key
    assert assert_valid_for_datahub(cp) == 1


def test_create_entity_of_an_entity_that_exists_by_its_key_alone_is_refused(cp, graph):
    create = MetadataChangeProposalWrapper(entityUrn=CONTAINER, aspect=model.ContainerKeyClass(guid="c1"),
                                           changeType=model.ChangeTypeClass.CREATE_ENTITY)
    graph.emit_mcp(create)
    with pytest.raises(OperationalError, match="CREATE_ENTITY: .* already exists"):
        graph.emit_mcp(create)
    with pytest.raises(OperationalError, match="CREATE_ENTITY: .* already exists"):
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=CONTAINER, aspect=model.StatusClass(removed=False),
                                                     changeType=model.ChangeTypeClass.CREATE_ENTITY))
    assert graph.exists(CONTAINER) and graph.get_aspect(CONTAINER, model.StatusClass) is None


def test_a_key_aspect_created_for_an_entity_that_has_other_aspects_is_refused(cp, graph):
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=CONTAINER, aspect=model.StatusClass(removed=False)))
    with pytest.raises(OperationalError, match="CREATE: containerKey of .* already exists"):
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=CONTAINER, aspect=model.ContainerKeyClass(guid="c1"),
                                                     changeType=model.ChangeTypeClass.CREATE))


def test_a_hard_delete_counts_the_rows_gms_counts_leaving_out_the_key_aspects(cp, graph):
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=USER, aspect=model.CorpUserKeyClass(username="newuser")))
    assert graph.hard_delete_entity(USER) == (0, 0), "GMS deletes the key first and counts the rows after it"
    assert not graph.exists(USER)

    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=USER, aspect=model.CorpUserKeyClass(username="newuser")))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=USER, aspect=model.StatusClass(removed=False)))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=USER, aspect=model.StatusClass(removed=True)))
    assert graph.hard_delete_entity(USER) == (2, 0), "both versions of status, not the key"
    assert not graph.exists(USER) and assert_valid_for_datahub(cp) == 0


def test_a_control_plane_entity_is_not_made_by_writing_its_key_aspect(cp, graph):
    pool = E.pool_urn("remote")
    key = MetadataChangeProposalWrapper(entityUrn=pool, aspect=cloud_model.RemoteExecutorPoolKeyClass(id="remote"))
    with pytest.raises(OperationalError) as refused:
        graph.emit_mcp(key)
    assert refused.value.info["status"] == 400 and "createRemoteExecutorPool" in refused.value.info["message"]
    assert not graph.exists(pool)
    cp.create_pool("remote", default=True)
    graph.emit_mcp(key)
    assert graph.exists(pool), "for one that exists, its key changes nothing"
    assert cp.cp.store.query("SELECT aspect FROM aspects WHERE aspect=?", ("dataHubRemoteExecutorPoolKey",)) == []
    assert assert_valid_for_datahub(cp) >= 1
