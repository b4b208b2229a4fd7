"""The GraphQL documents sent to the upstream DataHub. Every field is one DataHub's published
schema has (tests/controlplane/test_upstream_queries.py validates them against it), so a DataHub
answers them as they are."""
from __future__ import annotations

# Newest first, as DataHub sorts by default (requestTimeMs, DESCENDING); the filter on
# executorId is ours, since DataHub's search index has no executorId field.
LIST_EXECUTION_REQUESTS = """
query dhxListExecutionRequests($start: Int!, $count: Int!) {
  listExecutionRequests(input: {start: $start, count: $count,
                                sort: {field: "requestTimeMs", sortOrder: DESCENDING}}) {
    start
    count
    total
    executionRequests {
      urn
      id
      input {
        task
        executorId
        requestedAt
        actorUrn
        arguments { key value }
        source { type ingestionSource }
      }
      result { status }
    }
  }
}
"""

# Needs the MANAGE_SECRETS privilege; answers the names DataHub has, and only those.
GET_SECRET_VALUES = """
query dhxGetSecretValues($names: [String!]!) {
  getSecretValues(input: {secrets: $names}) { name value }
}
"""

ALL = {"dhxListExecutionRequests": LIST_EXECUTION_REQUESTS, "dhxGetSecretValues": GET_SECRET_VALUES}
