"""GraphQL answers DataHub's client and UI read as GMS gives them, for inputs GMS takes: a
remote executor's status that leaves out the fields its model defaults, the default page of a
source's runs, DataHub's field for a run's status and its order for sources sorted by name, and
a malformed urn, which is the request's error (400), not a failure of ours; and a secret sent in
a block string is masked in the errors that quote the request."""
from __future__ import annotations

import pytest
from datahub.configuration.common import GraphError
from loguru import logger

from controlplane import entities as E

from .conftest import RECIPE

EXECUTOR_FIELDS = "urn executorPoolId executorExpired executorStopped executorEmbedded executorInternal logDeliveryEnabled"


def test_an_executor_status_without_its_defaulted_fields_answers_their_defaults(cp, graph):
    """dataHubRemoteExecutorStatus defaults executorExpired, executorStopped, executorEmbedded,
    executorInternal and logDeliveryEnabled to false, so a status may leave them out (the
    control plane stores it); GMS's getters answer the defaults. Their GraphQL fields are
    Boolean!: answered null, the executor and the whole list of its pool's executors were lost."""
    cp.create_pool("remote", default=True)
    urn = E.executor_urn("exec-1")
    cp.ingest(urn, E.EXECUTOR_STATUS, {"executorPoolId": "remote", "executorReleaseVersion": "0.1.0",
                                       "executorAddress": "10.0.0.1", "executorHostname": "host-1",
                                       "executorUptime": 1.0, "reportedAt": 1_700_000_000_000})
    answer = graph.execute_graphql(f'query {{ getRemoteExecutor(urn: "{urn}") {{ {EXECUTOR_FIELDS} }} }}')
    assert answer["getRemoteExecutor"] == {"urn": urn, "executorPoolId": "remote", "executorExpired": False,
                                           "executorStopped": False, "executorEmbedded": False,
                                           "executorInternal": False, "logDeliveryEnabled": False}
    listed = graph.execute_graphql(
        "query { listRemoteExecutorPools(input: {start: 0, count: 10}) { remoteExecutorPools { "
        f"remoteExecutors(start: 0, count: 10) {{ total remoteExecutors {{ {EXECUTOR_FIELDS} }} }} }} }} }}")
    executors = listed["listRemoteExecutorPools"]["remoteExecutorPools"][0]["remoteExecutors"]
    assert executors["total"] == 1 and executors["remoteExecutors"] == [answer["getRemoteExecutor"]]


def test_a_sources_runs_without_a_count_are_a_page_of_ten_as_datahub_answers(cp, graph):
    """IngestionSource.executions(start, count): without a count DataHub answers 10 runs
    (IngestionSourceExecutionRequestsResolver); 20 came back here."""
    cp.create_pool("remote", default=True)
    source = cp.create_source("mock", RECIPE)
    runs = [graph.execute_graphql(
        "mutation($i: CreateIngestionExecutionRequestInput!) { createIngestionExecutionRequest(input: $i) }",
        variables={"i": {"ingestionSourceUrn": source["urn"]}})["createIngestionExecutionRequest"] for _ in range(12)]
    answer = graph.execute_graphql(
        "query($urn: String!) { ingestionSource(urn: $urn) { executions { start count total "
        "executionRequests { urn } } } }", variables={"urn": source["urn"]})
    executions = answer["ingestionSource"]["executions"]
    assert (executions["start"], executions["count"], executions["total"]) == (0, 10, 12)
    listed = [run["urn"] for run in executions["executionRequests"]]
    assert len(listed) == 10 and set(listed) <= set(runs)
    asked = graph.execute_graphql(
        "query($urn: String!) { ingestionSource(urn: $urn) { executions(start: 10, count: 5) { start count total } } }",
        variables={"urn": source["urn"]})
    assert asked["ingestionSource"]["executions"] == {"start": 10, "count": 2, "total": 12}


@pytest.mark.parametrize("urn", ["urn:li:dataHubIngestionSource:(a,b)", "urn:li:dataHubIngestionSource:"])
def test_a_malformed_source_urn_is_the_requests_error_with_its_reason_and_not_logged_as_ours(cp, graph, urn):
    """DataHub answers updateIngestionSource of a urn that does not parse with a BAD_REQUEST
    error naming it. Here the parser's InvalidUrn (a MetadataInvalid) was taken for a failure of
    our own code: its message masked, no code, and a traceback logged at ERROR."""
    cp.create_pool("remote", default=True)
    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR", format="{message}")
    try:
        with pytest.raises(GraphError) as refused:
            graph.execute_graphql(
                "mutation($urn: String!, $i: UpdateIngestionSourceInput!) { updateIngestionSource(urn: $urn, input: $i) }",
                variables={"urn": urn, "i": {"name": "mock", "type": "datahub-mock-data",
                                             "config": {"recipe": RECIPE, "executorId": "default"}}},
                format_exception=False)
    finally:
        logger.remove(sink)
    [error] = refused.value.args[0]
    assert error["message"].startswith(f"Invalid urn {urn!r}") and error["extensions"]["code"] == 400, error
    assert not [line for line in lines if "GraphQL" in line], lines
    assert graph.execute_graphql("query { listIngestionSources(input: {}) { total } }")["listIngestionSources"]["total"] == 0


def test_runs_filter_and_sort_on_datahubs_status_field_execution_result_status(cp, graph, executor_double):
    """DataHub indexes a run's result status as executionResultStatus (ExecutionRequestResult's
    @Searchable fieldName), and listExecutionRequests filters and sorts on the index's fields;
    here that name was refused ("cannot filter on 'executionResultStatus'")."""
    cp.create_pool("remote", default=True)
    source = cp.create_source("mock", RECIPE)
    done, waiting = cp.run_source(source["id"]), cp.run_source(source["id"])
    executor = executor_double("remote", "exec-1")
    executor.heartbeat()
    executor.finish(executor.claim(done["id"]), status="FAILURE", reason="EXIT_CODE")
    listing = ("query($i: ListExecutionRequestsInput!) { listExecutionRequests(input: $i) { total "
               "executionRequests { urn result { status } } } }")
    failed = graph.execute_graphql(listing, variables={"i": {"filters": [
        {"field": "executionResultStatus", "values": ["FAILURE"]}]}})["listExecutionRequests"]
    assert failed["total"] == 1 and [run["urn"] for run in failed["executionRequests"]] == [done["urn"]]
    others = graph.execute_graphql(listing, variables={"i": {"filters": [
        {"field": "executionResultStatus", "values": ["FAILURE"], "negated": True}]}})["listExecutionRequests"]
    assert [run["urn"] for run in others["executionRequests"]] == [waiting["urn"]]
    ordered = graph.execute_graphql(listing, variables={"i": {"sort": {
        "field": "executionResultStatus", "sortOrder": "ASCENDING"}}})["listExecutionRequests"]
    assert [run["urn"] for run in ordered["executionRequests"]] == [done["urn"], waiting["urn"]]


def test_sources_sorted_by_name_are_sorted_by_type_then_name_as_datahub_sorts_them(cp, graph):
    """DataHub's ListIngestionSourcesResolver turns a sort on `name` into type, then name (both
    in the order asked); here it sorted on the name alone."""
    cp.create_pool("remote", default=True)
    urns = {}
    for name, kind in (("alpha", "mysql"), ("beta", "datahub-mock-data"), ("gamma", "mysql"), ("delta", "datahub-mock-data")):
        urns[name] = graph.execute_graphql(
            "mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }",
            variables={"i": {"name": name, "type": kind, "config": {
                "recipe": f"source:\n  type: {kind}\n  config: {{}}\n", "executorId": "default"}}})["createIngestionSource"]
    listing = "query($i: ListIngestionSourcesInput!) { listIngestionSources(input: $i) { ingestionSources { name type } } }"

    def names(order: str) -> list[str]:
        answer = graph.execute_graphql(listing, variables={"i": {"sort": {"field": "name", "sortOrder": order}}})
        return [source["name"] for source in answer["listIngestionSources"]["ingestionSources"]]

    assert names("ASCENDING") == ["beta", "delta", "alpha", "gamma"]
    assert names("DESCENDING") == ["gamma", "alpha", "delta", "beta"]


# A private key as one is pasted: several lines, each long enough to be worth stealing alone.
PEM_LINES = ["-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7c1f0e9aZq",
             "k3Jx9Qw8bWmQpL2vN4tR6yU1iO0pA5sD7fG9hJ2kL4zX6cV8bN0mQ1wE3rT5yU", "-----END PRIVATE KEY-----"]


@pytest.mark.parametrize("document", [
    'mutation { createSecret(input: {name: "KEY", value: """%s""", colour: 1}) }',
    'mutation { createSecret(input: {name: "KEY", value: ["""%s"""]}) }',
    'mutation { createSecret(input: [{name: "KEY", value: """%s"""}]) }',
])
def test_a_secret_in_a_block_string_is_masked_where_an_error_quotes_the_request(cp, graph, capfd, document):
    """graphql-core quotes an invalid input object or list as printed, and its printer indents
    each line of a multi-line block string inside one: the masking looked for the block string
    as printed alone, so a PEM key sent as a block string came back in the error, line by line."""
    with pytest.raises(GraphError) as refused:
        graph.execute_graphql(document % "\n".join(PEM_LINES))
    answer = str(refused.value)
    assert [line for line in PEM_LINES[1:3] if line in answer] == [], answer
    captured = capfd.readouterr()
    assert not [line for line in PEM_LINES[1:3] if line in captured.out + captured.err]
