"""HTTP: the executor API of docs/protocol.md and the admin API, under /gms.

Validation errors answer 400 with what was wrong (not FastAPI's default 422), unknown ids 404,
state conflicts 409, bad tokens 401, pools outside a token's scope 403.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .service import Conflict, ControlPlane, Forbidden, Invalid, NotFound, Unauthorized

EXECUTOR = "/gms/executor/v1"
ADMIN = "/gms/admin/v1"
MAX_LOG_BODY = 64 << 20
WEB = Path(__file__).parent / "web"


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Heartbeat(Strict):
    hostname: str = Field(max_length=255)
    version: str = Field(max_length=100)
    started_at: str | None = None
    state: Literal["STARTING", "ACTIVE", "DRAINING", "STOPPED"]
    heartbeat_interval_s: float = Field(gt=0, le=3600)
    sandbox: dict[str, Any] = {}
    capacity: dict[str, Any] = {}
    running_executions: list[str] = []
    health: dict[str, Any] = {}


class Claim(Strict):
    executor_id: str = Field(min_length=1, max_length=128)
    receive_count: int | None = Field(default=None, ge=0)


class Progress(Strict):
    executor_id: str = Field(min_length=1, max_length=128)
    status: Literal["RUNNING"] = "RUNNING"
    log_tail: str | None = Field(default=None, max_length=8 << 20)
    peak_memory_bytes: int | None = Field(default=None, ge=0)


class Result(Strict):
    executor_id: str = Field(min_length=1, max_length=128)
    status: Literal["SUCCESS", "FAILURE", "CANCELLED", "TIMEOUT", "ABORTED"]
    reason: str | None = Field(default=None, max_length=2000)
    exit_code: int | None = None
    signal: int | None = None
    duration_ms: int | None = Field(default=None, ge=0)
    peak_memory_bytes: int | None = Field(default=None, ge=0)
    structured_report: Any = None
    log_tail: str | None = Field(default=None, max_length=8 << 20)


class NewPool(Strict):
    id: str
    description: str = ""
    default: bool = False
    visibility_timeout_s: int = 60
    max_receive_count: int = 5


class NewSource(Strict):
    name: str
    recipe: str
    pool_id: str | None = None
    extra_env: dict[str, Any] = {}
    version: str | None = None


class SourceUpdate(Strict):
    pool_id: str | None = None
    recipe: str | None = None
    extra_env: dict[str, Any] | None = None
    version: str | None = None


class RunRequest(Strict):
    task: Literal["RUN_INGEST", "TEST_CONNECTION", "RUN_MONITOR"] = "RUN_INGEST"


class NewToken(Strict):
    kind: Literal["admin", "executor"]
    pools: list[str] | None = None
    description: str = ""


def create_app(cp: ControlPlane) -> FastAPI:
    app = FastAPI(title="datahub-executor control plane", docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=400)

    for error, code in ((Invalid, 400), (Unauthorized, 401), (Forbidden, 403), (NotFound, 404), (Conflict, 409)):
        def handler(_: Request, exc: Exception, code: int = code) -> JSONResponse:
            return JSONResponse({"error": str(exc)}, status_code=code)
        app.add_exception_handler(error, handler)

    def identity(authorization: str | None = Header(default=None)) -> dict:
        return cp.authenticate(authorization)

    def admin(who: dict = Depends(identity)) -> dict:
        cp.require_admin(who)
        return who

    # executor-facing ------------------------------------------------------------------------
    @app.get(EXECUTOR + "/pools/{pool_id}")
    def pool_queue(pool_id: str, who: dict = Depends(identity)) -> dict:
        cp.require_pool(who, pool_id)
        return cp.pool_queue(pool_id)

    @app.put(EXECUTOR + "/pools/{pool_id}/executors/{executor_id}")
    def heartbeat(pool_id: str, executor_id: str, body: Heartbeat, who: dict = Depends(identity)) -> dict:
        cp.require_pool(who, pool_id)
        return cp.heartbeat(pool_id, executor_id, body.model_dump())

    @app.post(EXECUTOR + "/executions/{execution_id}/claim")
    def claim(execution_id: str, body: Claim, who: dict = Depends(identity)) -> dict:
        return cp.claim(execution_id, body.executor_id, body.receive_count, who)

    @app.post(EXECUTOR + "/executions/{execution_id}/progress")
    def progress(execution_id: str, body: Progress, who: dict = Depends(identity)) -> dict:
        return cp.progress(execution_id, body.executor_id, body.log_tail, body.peak_memory_bytes, who)

    @app.post(EXECUTOR + "/executions/{execution_id}/result")
    def result(execution_id: str, body: Result, who: dict = Depends(identity)) -> dict:
        return cp.result(execution_id, body.executor_id, body.model_dump(), who)

    @app.put(EXECUTOR + "/executions/{execution_id}/log")
    async def upload_log(execution_id: str, request: Request, who: dict = Depends(identity)) -> dict:
        data = await request.body()
        if len(data) > MAX_LOG_BODY:
            raise Invalid(f"log body over {MAX_LOG_BODY} bytes; send the head and tail")
        return cp.store_log(execution_id, data, who)

    # admin -------------------------------------------------------------------------------------
    @app.get(ADMIN + "/pools")
    def list_pools(_: dict = Depends(admin)) -> list[dict]:
        return cp.pools()

    @app.post(ADMIN + "/pools", status_code=201)
    def create_pool(body: NewPool, _: dict = Depends(admin)) -> dict:
        return cp.create_pool(body.id, body.description, body.default, body.visibility_timeout_s, body.max_receive_count)

    @app.get(ADMIN + "/pools/{pool_id}")
    def show_pool(pool_id: str, _: dict = Depends(admin)) -> dict:
        return {**cp.pool(pool_id), "executors": cp.executors(pool_id)}

    @app.post(ADMIN + "/pools/{pool_id}/default")
    def make_default(pool_id: str, _: dict = Depends(admin)) -> dict:
        return cp.set_default_pool(pool_id)

    @app.delete(ADMIN + "/pools/{pool_id}")
    def delete_pool(pool_id: str, _: dict = Depends(admin)) -> dict:
        cp.delete_pool(pool_id)
        return {"ok": True}

    @app.get(ADMIN + "/pools/{pool_id}/executors")
    def list_executors(pool_id: str, _: dict = Depends(admin)) -> list[dict]:
        cp.pool(pool_id)
        return cp.executors(pool_id)

    @app.get(ADMIN + "/sources")
    def list_sources(_: dict = Depends(admin)) -> list[dict]:
        return cp.sources()

    @app.post(ADMIN + "/sources", status_code=201)
    def create_source(body: NewSource, _: dict = Depends(admin)) -> dict:
        return cp.create_source(body.name, body.recipe, body.pool_id, body.extra_env, body.version)

    @app.get(ADMIN + "/sources/{source_id}")
    def show_source(source_id: str, _: dict = Depends(admin)) -> dict:
        return cp.source(source_id)

    @app.patch(ADMIN + "/sources/{source_id}")
    def update_source(source_id: str, body: SourceUpdate, _: dict = Depends(admin)) -> dict:
        return cp.update_source(source_id, pool_id=body.pool_id, recipe=body.recipe, extra_env=body.extra_env,
                                version=body.version)

    @app.post(ADMIN + "/sources/{source_id}/run", status_code=201)
    def run_source(source_id: str, body: RunRequest | None = None, _: dict = Depends(admin)) -> dict:
        return cp.run_source(source_id, (body or RunRequest()).task)

    @app.get(ADMIN + "/executions")
    def list_executions(source: str | None = None, status: str | None = None, limit: int = 100,
                        _: dict = Depends(admin)) -> list[dict]:
        return cp.executions(source_id=source, status=status, limit=limit)

    @app.get(ADMIN + "/executions/{execution_id}")
    def show_execution(execution_id: str, _: dict = Depends(admin)) -> dict:
        return cp.execution(execution_id)

    @app.get(ADMIN + "/executions/{execution_id}/logs")
    def execution_logs(execution_id: str, _: dict = Depends(admin)) -> dict:
        execution = cp.execution(execution_id, with_log=True)
        return {"execution_id": execution_id, "status": execution["status"], "complete": execution["has_full_log"],
                "log": execution["log"]}

    @app.post(ADMIN + "/executions/{execution_id}/cancel")
    def cancel(execution_id: str, _: dict = Depends(admin)) -> dict:
        return cp.cancel(execution_id)

    @app.get(ADMIN + "/tokens")
    def list_tokens(_: dict = Depends(admin)) -> list[dict]:
        return cp.tokens()

    @app.post(ADMIN + "/tokens", status_code=201)
    def create_token(body: NewToken, _: dict = Depends(admin)) -> dict:
        record, token = cp.create_token(body.kind, body.pools, body.description)
        return {**record, "token": token}

    @app.delete(ADMIN + "/tokens/{token_id}")
    def revoke_token(token_id: str, _: dict = Depends(admin)) -> dict:
        cp.revoke_token(token_id)
        return {"ok": True}

    @app.get("/")
    def web_page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    return app
