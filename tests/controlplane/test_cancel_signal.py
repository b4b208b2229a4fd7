"""The KILL signal a cancel writes is DataHub's: its CancelIngestionExecutionRequestResolver names,
in `executorId`, the executor id of the run's source (config.executorId, as the source says it)."""
from __future__ import annotations

import datahub.metadata.schema_classes as model
import pytest

from controlplane.tokens import ADMIN, Identity

from .conftest import RECIPE

CANCEL = "mutation($i: CancelIngestionExecutionRequestInput!) { cancelIngestionExecutionRequest(input: $i) }"


@pytest.mark.parametrize("pool_named, executor_id", [(None, "default"), ("p", "p")])
def test_a_cancel_through_graphql_signals_kill_to_the_executor_id_of_the_runs_source(cp, graph, pool_named,
                                                                                      executor_id):
    cp.create_pool("p", default=True)
    source = cp.create_source("s", RECIPE, pool_id=pool_named)
    run = cp.run_source(source["id"])
    graph.execute_graphql(CANCEL, variables={"i": {"ingestionSourceUrn": source["urn"], "executionRequestUrn": run["urn"]}})

    signal = graph.get_aspect(run["urn"], model.ExecutionRequestSignalClass)
    assert signal.validate()
    assert (signal.signal, signal.executorId) == ("KILL", executor_id)
    assert signal.createdAt.actor.startswith("urn:li:corpuser:") and signal.createdAt.time > 0
    assert cp.execution(run["id"])["status"] == "CANCELLED", "never claimed: cancelled before it started"


def test_a_cancel_of_a_run_of_no_source_signals_the_executor_it_was_routed_to(cp, graph):
    cp.create_pool("p", default=True)
    urn = graph.execute_graphql("mutation($i: CreateTestConnectionRequestInput!) { createTestConnectionRequest(input: $i) }",
                                variables={"i": {"recipe": RECIPE}})["createTestConnectionRequest"]
    cp.cp.cancel(urn, Identity("test", ADMIN, None, None))
    signal = graph.get_aspect(urn, model.ExecutionRequestSignalClass)
    assert signal.validate() and (signal.signal, signal.executorId) == ("KILL", "p")
