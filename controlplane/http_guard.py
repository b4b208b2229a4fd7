"""Refuse before reading: authentication and body limits, ahead of every route.

An ASGI middleware, so it runs before FastAPI reads a body: a request without a valid token is
answered 401 from its headers alone, and a body over its route's limit is answered 413 from its
Content-Length (or, for a chunked body, as soon as the running count passes the limit), never
buffered. uvicorn's flow control stops reading a socket whose body the application does not
consume, so a 150 MiB unauthenticated POST costs the process nothing.

On a loopback address it also answers only requests that name it by a loopback name: a page on
another site whose own name it points at 127.0.0.1 (DNS rebinding) is same-origin with what it
fetches there, and its Host header still carries its own name. And no answer is sniffed: a
browser never renders one of ours as anything but the type it says (JSON, mostly).
"""
from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import Unauthorized
from .tokens import Tokens

MiB = 1 << 20
# A task's full log (PUT .../executions/{id}/log): the only body of the executor API that is large.
TASK_LOG = re.compile(r"/gms/executor/v1/executions/[^/]+/log")
TASK_LOG_LIMIT = 64 * MiB
# (path prefix, largest body), most specific first. GMS itself takes ingest payloads up to ~15 MB.
BODY_LIMITS: tuple[tuple[str, int], ...] = (
    ("/gms/aspects", 32 * MiB),
    ("/gms/", 1 * MiB),
    ("/api/graphql", 1 * MiB),
)
DEFAULT_LIMIT = 64 * 1024
PUBLIC = ("/gms/config", "/health")
# Added to every answer (Starlette's and the guard's own).
HEADERS = [(b"x-content-type-options", b"nosniff")]


def is_loopback(host: str) -> bool:
    """Whether HOST (a bind address, or the name in a Host header, port and brackets removed)
    is this machine's loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header: "[::1]:9002" -> "::1", "localhost:9002" -> "localhost"."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def body_limit(path: str) -> int:
    if TASK_LOG.fullmatch(path):
        return TASK_LOG_LIMIT
    for prefix, limit in BODY_LIMITS:
        if path.startswith(prefix):
            return limit
    return DEFAULT_LIMIT


def needs_token(path: str) -> bool:
    return (path.startswith("/gms/") or path.startswith("/api/")) and path not in PUBLIC


class BodyTooLarge(Exception):
    """Raised into the route that reads past the limit; the application answers it with 413."""


class Guard:
    def __init__(self, app: Callable[..., Awaitable[None]], tokens: Tokens, *, loopback_only: bool = False) -> None:
        """LOOPBACK_ONLY: the server listens on a loopback address, so a Host naming anything else
        is a rebound name (a reverse proxy in front must pass the upstream's Host, nginx's default)."""
        self.app = app
        self.tokens = tokens
        self.loopback_only = loopback_only

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.loopback_only and not is_loopback(host_name(headers.get("host", ""))):
            await _answer(send, 403, f"Host {headers.get('host', '')[:100]!r} is not this control plane's: it listens "
                          "on loopback and answers requests that name it localhost or 127.0.0.1 (a page on another "
                          "site can point its own name there); a reverse proxy in front must pass that Host")
            return
        if needs_token(path):
            try:
                scope.setdefault("state", {})["identity"] = self.tokens.authenticate(headers.get("authorization"))
            except Unauthorized as exc:
                await _answer(send, 401, str(exc))
                return
        limit = body_limit(path)
        try:
            declared = int(headers.get("content-length", "0"))
        except ValueError:
            await _answer(send, 400, "Content-Length is not a number")
            return
        if declared > limit:
            await _answer(send, 413, f"the body is {declared} bytes; this endpoint takes at most {limit}")
            return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"the body passed {limit} bytes, this endpoint's limit")
            return event

        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except BodyTooLarge as exc:
            if not started:  # read outside a route (the application answers it inside one)
                await _answer(send, 413, str(exc))


async def _answer(send: Callable, status: int, message: str) -> None:
    """A Rest.li-shaped error (what DataHub's clients parse), sent before any body is read."""
    body = json.dumps({"exceptionClass": "com.linkedin.restli.server.RestLiServiceException", "message": message,
                       "status": status, "error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *HEADERS]})
    await send({"type": "http.response.body", "body": body})
