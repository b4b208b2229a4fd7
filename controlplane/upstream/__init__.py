"""Upstream mode: a self-hosted DataHub behind this control plane (docs/datahub-oss.md).

DataHub routes every execution request by `executorId`. In upstream mode this control plane
watches a DataHub GMS for requests whose executorId names one of its pools, runs each on that
pool like a run of its own, and writes the run's result back to DataHub as DataHub's own
executor would; the run's metadata goes straight from the task to that GMS.

    gms.py       DataHub's client (acryl-datahub) for the upstream GMS, its token read from a file
    queries.py   the GraphQL documents sent upstream (checked against DataHub's published schema)
    requests.py  an upstream execution request -> our execution input, or why it is refused
    mirror.py    what became of each request we took: the table and its state machine
    results.py   the forms of a result, whole to minimal, for a DataHub that refuses one
    sync.py      the loop: find new requests, write results back, pass DataHub's cancels on
    claims.py    what a claim of an upstream run adds: where its sink writes, DataHub's secrets
"""
