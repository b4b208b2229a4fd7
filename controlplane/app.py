"""The control plane's HTTP application: DataHub's Rest.li and GraphQL endpoints, our own
executor and admin endpoints, the web page, behind the guard that authenticates and limits
bodies before anything is read (http_guard.py).

Errors answer in Rest.li's shape, which DataHub's clients parse, with an "error" field our own
clients read: 400 invalid input (with the field and the problem), 401, 403, 404, 409 (a state
that forbids it, a stale lease), 413, 503.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse

from . import admin_api, executor_api, gms_api, gms_openapi, graphql_api
from .errors import Conflict, Forbidden, Invalid, NotFound, PreconditionFailed, Unauthorized, Unavailable
from .http_guard import BodyTooLarge, Guard
from .metadata.registry import MetadataInvalid
from .service import ControlPlane

WEB = Path(__file__).parent / "web"


def page_headers(page: str) -> dict[str, str]:
    """The page runs its own inline script and style only (their hashes), fetches only from
    here, and is shown in no other site's frame: markup that a hostile value smuggled in would
    run nothing, and no decoy page can frame it to steer an operator's clicks."""
    def hashes(tag: str) -> str:
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m.encode()).digest()).decode()}'"
                        for m in re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S))
    policy = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; connect-src 'self'; "
              "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return {"Content-Security-Policy": policy, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache"}
STATUS = ((Invalid, 400), (MetadataInvalid, 400), (Unauthorized, 401), (Forbidden, 403), (NotFound, 404),
          (Conflict, 409), (BodyTooLarge, 413), (PreconditionFailed, 422), (Unavailable, 503))


def error_body(status: int, message: str) -> JSONResponse:
    return JSONResponse({"exceptionClass": "com.linkedin.restli.server.RestLiServiceException", "message": message,
                         "status": status, "error": message}, status_code=status)


def create_app(cp: ControlPlane, *, cli_version: str | None = None,
               threads_gone: Callable[[], list[str]] = list, loopback_only: bool = False) -> Guard:
    """THREADS_GONE names the service's background threads that ended untold (server.py): the
    API may still answer while the sweep or the outbox is gone, and /health must say so.
    LOOPBACK_ONLY: the server listens on a loopback address (http_guard.py)."""
    app = FastAPI(title="datahub-executor control plane", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        return error_body(400, "; ".join(problems) or "invalid request")

    # Handlers, /health and the catch-all are async: Starlette runs a sync one in anyio's default
    # thread limiter, so an answer that needs no thread waited for one (capacity.py).
    for error, code in STATUS:
        async def handler(_: Request, exc: Exception, code: int = code) -> JSONResponse:
            response = error_body(code, str(exc))
            retry = getattr(exc, "retry_after_s", None)
            if retry is not None:
                body = json.loads(response.body)
                # Retry-After too: the executor's HTTP client waits it out before it retries a 503.
                response = JSONResponse({**body, "retry_after_s": retry}, status_code=code,
                                        headers={"Retry-After": str(math.ceil(retry))})
            return response
        app.add_exception_handler(error, handler)

    app.include_router(gms_api.create_router(cp, cli_version=cli_version))
    app.include_router(gms_openapi.create_router(cp))
    app.include_router(graphql_api.create_router(cp))
    app.include_router(executor_api.create_router(cp))
    app.include_router(admin_api.create_router(cp))

    headers = page_headers((WEB / "index.html").read_text())

    @app.get("/")
    def web_page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html", headers=headers)

    @app.get("/health")
    async def health() -> JSONResponse:
        gone = threads_gone()
        if gone:
            return JSONResponse({"ok": False, "problem": f"thread(s) gone: {', '.join(gone)}; restart the control "
                                 "plane (its log says why they ended)"}, status_code=503)
        return JSONResponse({"ok": True})

    @app.api_route("/gms/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def not_implemented(rest: str) -> JSONResponse:
        return error_body(404, f"/gms/{rest[:100]} is not a resource this server implements")

    return Guard(app, cp.tokens, loopback_only=loopback_only)
