"""The operations DataHub has none for, for operators, under /gms/admin/v1 (admin tokens only):

    GET  /tokens, POST /tokens, DELETE /tokens/{id}   Remote Executor, admin and ingest-only tokens
    PUT  /pools/{id}/queues                           a pool's SQS settings (visibility timeout, redrive count)
    GET  /executions/{id}/log                         an execution's full log (or its tail so far)

Pools, sources, runs, cancellation and executors are DataHub's GraphQL and Rest.li operations.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from .errors import Invalid
from .executions import check_id
from .json_input import loads
from .service import ControlPlane
from .tokens import ADMIN, EXECUTOR, INGEST

PREFIX = "/gms/admin/v1"


def create_router(cp: ControlPlane) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    def admin(request: Request):
        identity = request.state.identity
        identity.require_admin()
        return identity

    @router.get("/tokens")
    def list_tokens(request: Request) -> list[dict[str, Any]]:
        admin(request)
        return cp.tokens.list()

    @router.post("/tokens", status_code=201)
    async def create_token(request: Request) -> dict[str, Any]:
        admin(request)
        body = loads(await request.body() or b"{}")
        if not isinstance(body, dict) or body.get("kind") not in (ADMIN, EXECUTOR, INGEST):
            raise Invalid("kind must be admin, executor or ingest")
        pools = body.get("pools")
        if pools is not None and body["kind"] != EXECUTOR:
            raise Invalid("only executor tokens are scoped to pools")
        if pools is not None:
            if not isinstance(pools, list):
                raise Invalid("pools must be a list of pool ids, or null for every pool")
            for pool_id in pools:
                cp.pools.get(str(pool_id))
        record, token = cp.tokens.create(body["kind"], pools, str(body.get("description") or "")[:500])
        return {**record, "token": token}

    @router.delete("/tokens/{token_id}")
    def revoke_token(token_id: str, request: Request) -> dict[str, Any]:
        admin(request)
        cp.tokens.revoke(token_id)
        return {"ok": True}

    @router.put("/pools/{pool_id}/queues")
    async def queue_settings(pool_id: str, request: Request) -> dict[str, Any]:
        admin(request)
        body = loads(await request.body() or b"{}")
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object")
        values = {}
        for name in ("visibility_timeout_s", "max_receive_count"):
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise Invalid(f"{name} must be a whole number")
            values[name] = value
        # Off the event loop: it calls the queue service, which may hang.
        pool = await run_in_threadpool(cp.pools.set_queue_settings, pool_id, **values)
        return {k: pool[k] for k in ("id", "visibility_timeout_s", "max_receive_count", "queue_url", "monitors_queue_url",
                                     "queue_arn")}

    # A path, not a segment: a `datahub ingest` run's own run_id may hold '/' ("team/hive:orders"),
    # and the router matches the decoded path, where the CLI's and the page's %2F is '/' again.
    @router.get("/executions/{execution_id:path}/log")
    def execution_log(execution_id: str, request: Request) -> dict[str, Any]:
        admin(request)
        check_id(execution_id)
        execution = cp.executions.view(execution_id, with_log=True)
        return {"execution_id": execution_id, "status": execution["status"], "complete": execution["has_full_log"],
                "log": execution["log"]}

    return router
