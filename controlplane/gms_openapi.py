"""DataHub GMS's OpenAPI v3 entity reads, as far as DataHub's client reads many entities at once.

    POST /gms/openapi/v3/entity/{entityName}/batchGet[?systemMetadata=true]

What DataHubGraph.get_entities calls (GMS's v3 EntityController.getEntityBatch). The body is a
list of `{"urn": URN, ASPECT_NAME: {}, ...}`; an aspect's `{"headers": {"If-Version-Match": "N"}}`
asks for version N instead of the latest (for a timeseries aspect, the newest point at or before
N ms). The answer is a list of `{"urn": URN, ASPECT_NAME: {"value": ..., "systemMetadata": ...,
"auditStamp": ...}}` in the order asked, each urn once; as GMS answers it:
- an aspect asked for and not stored is left out, and so is a urn with none of its asked aspects
  stored (an entity that does not exist is not in the answer at all, and no error);
- an entity with no aspect named asks for all of its aspects, the key aspect among them, present
  when the entity exists (metadata/entity_keys.py: stored, or built from the urn);
- an aspect name the entity does not have is ignored, its lower-cased spelling is taken for the
  name, and an entity whose names are all unknown asks for all of its aspects;
- `entityName` in the path is not read: each urn names its own entity type;
- systemMetadata and auditStamp are there only with `systemMetadata=true` (Spring's booleans:
  true/false, on/off, yes/no, 1/0, any case);
- the token must be allowed to read every urn asked about, else 403 for the whole request.
Where GMS answers a client's mistake with 500 (a body that is not a list of objects with a
`urn`, an entity type it does not know, a version that is not a number), we answer 400, and a
request names at most MAX_URNS urns (decision 69).
"""
from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from .errors import Invalid, NotFound
from .gms_api import INT64_MAX, can_read, identity_of
from .ingest import VERSION_HEADER
from .json_input import loads
from .metadata import aspect_store
from .metadata.entity_keys import key_aspect
from .service import ControlPlane
from .tokens import Identity

MAX_URNS = 1000  # as GET /entitiesV2?ids=List(...)
SPRING_TRUE, SPRING_FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


def _spring_boolean(request: Request, name: str) -> bool:
    """NAME from the query as Spring converts a Boolean request parameter (absent or empty: false)."""
    value = (request.query_params.get(name) or "").strip().lower()
    if value in SPRING_TRUE:
        return True
    if value in SPRING_FALSE or value == "":
        return False
    raise Invalid(f"{name} must be true or false, not {value[:40]!r}")


def create_router(cp: ControlPlane) -> APIRouter:
    router = APIRouter()

    def aspect_named(entity_type: str, name: str) -> str | None:
        """The entity's aspect NAME, or the one NAME spells in lower case (GMS's fallback)."""
        spec = cp.registry.entity(entity_type)
        names = spec.aspects | {spec.key_aspect}
        if name in names:
            return name
        return next((known for known in sorted(names) if known.lower() == name), None)

    def version_of(asked: Any, where: str) -> int:
        headers = asked.get("headers") if isinstance(asked, dict) else None
        if headers is None:
            return 0
        if not isinstance(headers, dict):
            raise Invalid(f"{where}.headers must be an object of strings")
        text = headers.get(VERSION_HEADER, "0")
        try:
            version = int(str(text))
        except ValueError:
            raise Invalid(f"{where}.headers.{VERSION_HEADER} must be a whole number, not {str(text)[:40]!r}") from None
        if not 0 <= version <= INT64_MAX:
            raise Invalid(f"{where}.headers.{VERSION_HEADER} {version} is out of range")
        return version

    def requested(body: Any) -> dict[str, dict[str, int]]:
        """urn -> {aspect: version}, urns in the order first asked, repeats merged."""
        if not isinstance(body, list):
            raise Invalid('the body must be a JSON list of {"urn": ..., "<aspect name>": {}} objects')
        if len(body) > MAX_URNS:
            raise Invalid(f"at most {MAX_URNS} urns per request, not {len(body)}")
        wanted: dict[str, dict[str, int]] = {}
        for index, item in enumerate(body):
            if not isinstance(item, dict) or "urn" not in item:
                raise Invalid(f"[{index}]: Missing `urn` field")
            parsed = cp.registry.parse_urn(item["urn"])
            aspects = wanted.setdefault(str(parsed), {})
            for name, asked in item.items():
                known = aspect_named(parsed.entity_type, name) if name != "urn" else None
                if known is not None:
                    aspects[known] = version_of(asked, f"[{index}].{name}")
            if not aspects:
                spec = cp.registry.entity(parsed.entity_type)
                aspects.update(dict.fromkeys(spec.aspects | {spec.key_aspect}, 0))
        return wanted

    def readable(identity: Identity, urns: list[str]) -> list[str]:
        """URNS the token may read; Forbidden for any it may not (GMS checks the whole batch).
        An execution an executor token cannot find is left out, as any urn nothing is stored for."""
        found = []
        for urn in urns:
            try:
                can_read(cp, identity, urn, cp.registry.parse_urn(urn).entity_type)
            except NotFound:
                continue
            found.append(urn)
        return found

    def entity(db: sqlite3.Connection, urn: str, aspects: dict[str, int],
               with_system_metadata: bool) -> dict[str, Any] | None:
        parsed = cp.registry.parse_urn(urn)
        key = cp.registry.entity(parsed.entity_type).key_aspect
        latest_names = [name for name, version in aspects.items()
                        if version == 0 and name != key and not cp.registry.aspect(parsed.entity_type, name).timeseries]
        found = aspect_store.latest(db, urn, latest_names) if latest_names else {}
        items: dict[str, Any] = {}
        for name, version in aspects.items():
            timeseries = cp.registry.aspect(parsed.entity_type, name).timeseries
            if name == key:
                stored = key_aspect(db, cp.registry, parsed) if version == 0 else None
            elif timeseries:
                stored = aspect_store.latest_timeseries(db, urn, name, version or None)
            else:
                stored = found.get(name) if version == 0 else aspect_store.get(db, urn, name, version)
            if stored is not None:
                items[name] = item(stored.value, stored.system_metadata, stored.created_on_ms,
                                   stored.created_by or "urn:li:corpuser:unknown", with_system_metadata,
                                   versioned=not timeseries)
        return {"urn": urn, **items} if items else None

    def item(value: dict[str, Any], system_metadata: dict[str, Any] | None, time_ms: int, actor: str,
             with_system_metadata: bool, *, versioned: bool) -> dict[str, Any]:
        """GMS's GenericAspectV3: null fields left out; a timeseries point has no audit stamp."""
        answer: dict[str, Any] = {"value": value}
        if with_system_metadata:
            if system_metadata:
                answer["systemMetadata"] = system_metadata
            if versioned:
                answer["auditStamp"] = {"time": time_ms, "actor": actor}
        return answer

    def batch_get(identity: Identity, body: Any, with_system_metadata: bool) -> list[dict[str, Any]]:
        wanted = requested(body)
        urns = readable(identity, list(wanted))
        with cp.store.read() as db:
            answers = [entity(db, urn, wanted[urn], with_system_metadata) for urn in urns]
        return [answer for answer in answers if answer is not None]

    @router.post("/gms/openapi/v3/entity/{entity_name}/batchGet")
    async def entity_batch_get(request: Request) -> Any:
        with_system_metadata = _spring_boolean(request, "systemMetadata")
        body = loads(await request.body() or b"null")
        return await run_in_threadpool(batch_get, identity_of(request), body, with_system_metadata)

    return router
