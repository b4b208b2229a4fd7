"""Timeseries points are told apart as GMS tells its documents apart (timestampMillis,
eventGranularity, urn, messageId, partitionSpec): two profiles of one moment for two partitions
are two points, read back through DataHub's client, and the same point sent again replaces itself."""
from __future__ import annotations

import datahub.metadata.schema_classes as model
from datahub.emitter.mcp import MetadataChangeProposalWrapper

from .test_datahub_client import DATASET, assert_valid_for_datahub

MOMENT = 1_700_000_000_000


def profile(partition: str, rows: int, timestamp: int = MOMENT) -> model.DatasetProfileClass:
    return model.DatasetProfileClass(timestampMillis=timestamp, rowCount=rows,
                                     partitionSpec=model.PartitionSpecClass(partition=partition))


def test_points_of_one_moment_for_different_partitions_are_all_kept_and_read_back(cp, graph):
    for partition, rows in (("2024-01-01", 1), ("2024-01-02", 2), ("2024-01-01", 10)):
        graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=profile(partition, rows)))
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=DATASET, aspect=profile("2024-01-01", 5, MOMENT - 1)))

    points = graph.get_timeseries_values(DATASET, model.DatasetProfileClass, filter={}, limit=10)
    found = [(p.timestampMillis, p.partitionSpec.partition, p.rowCount) for p in points]
    assert sorted(found[:2]) == [(MOMENT, "2024-01-01", 10), (MOMENT, "2024-01-02", 2)], \
        "both partitions' points; a partition's point sent again replaces it"
    assert found[2:] == [(MOMENT - 1, "2024-01-01", 5)], "newest first"
    for partition, rows in (("2024-01-01", 10), ("2024-01-02", 2)):
        latest = graph.get_latest_timeseries_value(DATASET, model.DatasetProfileClass,
                                                   {"partitionSpec.partition": partition})
        assert latest is not None and latest.validate() and latest.rowCount == rows
    assert assert_valid_for_datahub(cp) == 3
