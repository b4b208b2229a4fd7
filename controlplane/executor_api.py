"""The operations DataHub has none for, under /gms/executor/v1 (docs/protocol.md):

    POST /executions/{id}/claim     take an execution: its lease, task, arguments and ingest token
    POST /executions/{id}/release   give a claimed, unstarted execution back (queued again at once)
    PUT  /executions/{id}/log       the full task log at the end (gzip when the claim's answer lists it)

Release and log carry the claim's lease in the X-DataHub-Execution-Lease header; a stale lease
is refused with 409. Everything else an executor does goes through DataHub's own endpoints
(gms_api.py): heartbeats and results are aspects it ingests, cancellation a signal aspect it reads.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Request

from vocabulary import full_log, ids

from .capacity import EXECUTOR_THREADS, Threads
from .errors import Invalid
from .executions import INT64_MAX
from vocabulary.results import LEASE_HEADER
from .json_input import loads
from .service import ControlPlane

PREFIX = "/gms/executor/v1"


def _execution_id(value: str) -> str:
    try:
        return ids.execution_id(value)
    except ids.InvalidId as exc:
        raise Invalid(str(exc)) from None


def create_router(cp: ControlPlane) -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    threads = Threads(EXECUTOR_THREADS)  # not anyio's default limiter: capacity.py

    @router.post("/executions/{execution_id}/claim")
    async def claim(execution_id: str, request: Request) -> dict[str, Any]:
        body = loads(await request.body() or b"{}")
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object")
        try:
            executor_id = ids.executor_id(body.get("executor_id"))
            pool_id = ids.pool_id(body.get("pool_id"))
        except ids.InvalidId as exc:
            raise Invalid(str(exc)) from None
        instance = body.get("instance_id")
        if not isinstance(instance, str) or not 1 <= len(instance) <= 64:
            raise Invalid("instance_id (1-64 characters) is required")
        receive_count = body.get("receive_count")
        if receive_count is not None and (isinstance(receive_count, bool) or not isinstance(receive_count, int)
                                          or not 0 <= receive_count <= INT64_MAX):
            raise Invalid("receive_count must be a whole number from 0 to 2**63-1 (SQS's ApproximateReceiveCount)")
        message_id = body.get("message_id")
        if message_id is not None and (not isinstance(message_id, str) or len(message_id) > 128):
            raise Invalid("message_id must be the SQS message id (at most 128 characters)")
        # Off the event loop: an upstream DataHub's run asks DataHub for its secrets here
        # (upstream/claims.py), and a DataHub that hangs must delay this claim alone, not every
        # heartbeat and result until the sweep judges healthy executors lost (decision 52); and
        # at most capacity.DATAHUB_CALLS claims wait on it, in threads no other route needs (70).
        return await threads.run(cp.executions.claim, _execution_id(execution_id), executor_id=executor_id,
                                 instance=instance, pool_id=pool_id, receive_count=receive_count,
                                 identity=request.state.identity, message_id=message_id)

    @router.post("/executions/{execution_id}/release")
    async def release(execution_id: str, request: Request,
                      lease: str | None = Header(default=None, alias=LEASE_HEADER)) -> dict[str, Any]:
        body = loads(await request.body() or b"{}")
        why = body.get("why") if isinstance(body, dict) else None
        failed = body.get("failed", False) if isinstance(body, dict) else False
        if lease is None:
            raise Invalid(f"the {LEASE_HEADER} header is required")
        if not isinstance(failed, bool):
            raise Invalid("failed is true or false")
        return cp.executions.release(_execution_id(execution_id), lease, str(why or "released by its executor"),
                                     request.state.identity, failed=failed)

    @router.put("/executions/{execution_id}/log")
    async def upload_log(execution_id: str, request: Request,
                         lease: str | None = Header(default=None, alias=LEASE_HEADER),
                         encoding: str | None = Header(default=None, alias="Content-Encoding")) -> dict[str, Any]:
        if lease is None:
            raise Invalid(f"the {LEASE_HEADER} header is required")
        data = await request.body()
        # Megabytes to check and write: off the event loop, which serves every other call meanwhile.
        return await threads.run(cp.executions.store_log, _execution_id(execution_id), lease, data,
                                 request.state.identity, (encoding or full_log.IDENTITY).strip().lower())

    return router
