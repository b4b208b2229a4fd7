"""POST /entities?action=delete as DataHub's client and CLI use it: a timeseries aspect's
points within a time window (DataHubGraph.hard_delete_timeseries_aspect, `datahub delete
--aspect ... --start-time ... --end-time ... --hard`), or a whole entity
(DataHubGraph.hard_delete_entity), each answered with the counts GMS answers."""
from __future__ import annotations

from datetime import datetime, timezone

import datahub.metadata.schema_classes as model
import pytest
from datahub.configuration.common import OperationalError
from datahub.emitter.mcp import MetadataChangeProposalWrapper

from .test_datahub_client import DATASET, assert_valid_for_datahub, datahub_cli

OTHER_DATASET = "urn:li:dataset:(urn:li:dataPlatform:hive,db.customers,PROD)"


def at_second(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def emit(graph, urn: str, aspect) -> None:
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=urn, aspect=aspect))


def profile_times(graph, urn: str) -> list[int]:
    profiles = graph.get_timeseries_values(urn, model.DatasetProfileClass, filter={}, limit=100)
    return sorted(p.timestampMillis for p in profiles)


def a_dataset_with_profiles(graph, urn: str, seconds: list[int]) -> None:
    emit(graph, urn, model.DatasetPropertiesClass(description="kept"))
    for second in seconds:
        emit(graph, urn, model.DatasetProfileClass(timestampMillis=second * 1000, rowCount=second))


def test_a_timeseries_aspects_points_are_deleted_within_the_window_and_nothing_else(cp, graph):
    a_dataset_with_profiles(graph, DATASET, [1000, 2000, 3000, 4000])
    a_dataset_with_profiles(graph, OTHER_DATASET, [2000])
    emit(graph, DATASET, model.OperationClass(timestampMillis=2_000_000, lastUpdatedTimestamp=2_000_000,
                                              operationType=model.OperationTypeClass.INSERT))

    deleted = graph.hard_delete_timeseries_aspect(DATASET, "datasetProfile", start_time=at_second(2000),
                                                  end_time=at_second(3000))

    assert deleted == 2, "both bounds are included, as GMS's >= and <="
    assert profile_times(graph, DATASET) == [1_000_000, 4_000_000]
    assert graph.get_aspect(DATASET, model.DatasetPropertiesClass).description == "kept", "versioned aspects stay"
    assert graph.get_timeseries_values(DATASET, model.OperationClass, filter={}), "other timeseries aspects stay"
    assert profile_times(graph, OTHER_DATASET) == [2_000_000], "other entities' points stay"
    assert graph.hard_delete_timeseries_aspect(DATASET, "datasetProfile", start_time=None, end_time=at_second(1000)) == 1
    assert graph.hard_delete_timeseries_aspect(DATASET, "datasetProfile", start_time=None, end_time=None) == 1
    assert profile_times(graph, DATASET) == []
    assert graph.exists(DATASET)
    assert assert_valid_for_datahub(cp) == 4, "both datasets' properties, the operation, the other profile"


def test_datahubs_cli_deletes_a_timeseries_aspects_points_between_its_start_and_end_times(cp, graph):
    a_dataset_with_profiles(graph, DATASET, [1000, 2000, 3000])

    deleted = datahub_cli(cp, "delete", "--urn", DATASET, "--aspect", "datasetProfile", "--start-time", "1500",
                          "--end-time", "2500", "--hard", "--force")

    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert "1 timeseries aspect rows" in deleted.stdout + deleted.stderr
    assert profile_times(graph, DATASET) == [1_000_000, 3_000_000]
    assert graph.get_aspect(DATASET, model.DatasetPropertiesClass).description == "kept"
    assert assert_valid_for_datahub(cp) == 3


def test_a_hard_entity_delete_answers_the_rows_it_deleted_and_none_for_an_entity_never_stored(cp, graph):
    emit(graph, DATASET, model.StatusClass(removed=False))
    emit(graph, DATASET, model.StatusClass(removed=True))  # a second version: two rows
    a_dataset_with_profiles(graph, DATASET, [1000, 2000])
    assert assert_valid_for_datahub(cp) == 5

    assert graph.hard_delete_entity(DATASET) == (3, 2)
    assert not graph.exists(DATASET) and profile_times(graph, DATASET) == []
    assert graph.hard_delete_entity(DATASET) == (0, 0), "deleted already"
    assert graph.hard_delete_entity(OTHER_DATASET) == (0, 0), "never stored"
    cli = datahub_cli(cp, "delete", "--urn", OTHER_DATASET, "--hard", "--force")
    assert cli.returncode == 0 and "impacts 0 versioned rows and 0 timeseries aspect rows" in cli.stdout + cli.stderr, \
        cli.stdout + cli.stderr


@pytest.mark.parametrize("body, says", [
    ({"aspectName": "datasetProperties"}, "non-timeseries aspect"),
    ({"aspectName": "datasetProfile", "startTimeMillis": "yesterday"}, "startTimeMillis"),
    ({"startTimeMillis": 0, "endTimeMillis": 1}, "aspectName"),
    ({"aspectName": "noSuchAspect"}, "noSuchAspect"),
])
def test_a_delete_that_would_not_delete_only_timeseries_points_as_asked_is_refused_and_deletes_nothing(
        cp, graph, body, says):
    a_dataset_with_profiles(graph, DATASET, [1000])
    with pytest.raises(OperationalError) as refused:
        graph._post_generic(f"{cp.gms_url}/entities?action=delete", {"urn": DATASET, **body})
    assert refused.value.info["status"] == 400 and says in refused.value.info["message"], refused.value.info
    assert graph.get_aspect(DATASET, model.DatasetPropertiesClass).description == "kept"
    assert profile_times(graph, DATASET) == [1_000_000]
