"""DataHub GMS's Rest.li endpoints, as far as remote execution and `datahub ingest` need them.

    GET  /gms/config                                      server configuration (public)
    POST /gms/aspects?action=ingestProposal               one MetadataChangeProposal
    POST /gms/aspects?action=ingestProposalBatch          several, all or nothing
    POST /gms/aspects?action=getTimeseriesAspectValues    a timeseries aspect's points, newest first
    GET  /gms/aspects/{urn}?aspect=NAME&version=N         one aspect (0: the latest)
    GET  /gms/entitiesV2/{urn}?aspects=List(...)          an entity's latest aspects, and its key aspect
    GET  /gms/entitiesV2?ids=List(...)&aspects=List(...)  several entities
    POST /gms/entities?action=ingest | batchIngest        snapshots (MCEs), split into UPSERTs, all or nothing
    POST /gms/entities?action=delete                      hard delete of an entity, or of a timeseries aspect's points
    POST /gms/entities?action=deleteReferences            the references other entities hold to one, removed
    POST /gms/runs?action=list | describe | rollback      ingestion runs, what each wrote, and its undoing

Errors have Rest.li's shape ({"exceptionClass", "message", "status"}), which DataHub's client
turns into its OperationalError; what is not implemented answers 404 (an unknown resource or
action) as GMS does, never a silent 200.
"""
from __future__ import annotations

import json
import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from . import entities as E
from .capacity import GMS_READ_THREADS, Threads
from .errors import Forbidden, Invalid, NotFound
from .json_input import loads
from .metadata import aspect_store, snapshots
from .metadata.entity_keys import SYSTEM_ACTOR, key_aspect
from .metadata.registry import MetadataInvalid
from .metadata.timeseries_filter import document, matches, parse_filter, timeseries_fields
from .references import delete_references
from .service import ControlPlane
from .tokens import ADMIN, EXECUTOR, INGEST, Identity

# The newest DataHub release whose clients ingest through Rest.li by default: from 1.0.1 on,
# DataHub's SDK ingests through the OpenAPI v3 endpoints, of which this server serves only the
# batch read (gms_openapi.py).
SPOKEN_DATAHUB_VERSION = "v1.0.0"
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1  # Rest.li's Integer
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1  # Rest.li's Long
# getTimeseriesAspectValues: GMS's default limit, and the most its search index answers at once
# (Elasticsearch's max_result_window; GMS fails past it).
TIMESERIES_LIMIT = 10_000


def restli_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"exceptionClass": "com.linkedin.restli.server.RestLiServiceException", "message": message,
                         "status": status, "stackTrace": ""}, status_code=status)


def identity_of(request: Request) -> Identity:
    return request.state.identity


def parse_restli_list(raw_query: str, name: str) -> list[str] | None:
    """NAME=List(a,b,c) from a raw query string; items are percent-decoded after splitting, so an
    encoded ',' inside a urn stays inside its item."""
    for part in raw_query.split("&"):
        key, _, value = part.partition("=")
        if key != name:
            continue
        if not (value.startswith("List(") and value.endswith(")")):
            raise Invalid(f"{name} must be List(...)")
        inner = value[5:-1]
        return [urllib.parse.unquote(item) for item in inner.split(",") if item]
    return None


def _restli_boolean(request: Request, name: str, default: bool) -> bool:
    """NAME=true|false from the query, as Rest.li coerces a Boolean query parameter."""
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise Invalid(f"{name} must be true or false, not {value[:40]!r}")
    return value.lower() == "true"


def _whole_number(body: dict[str, Any], names: tuple[str, ...], default: int) -> int:
    """The first of NAMES that BODY has, a whole number as GMS's Integer action parameters
    take it; Invalid (400) for anything else."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not INT32_MIN <= value <= INT32_MAX:
            raise Invalid(f"{name} must be a whole number (an Integer), not {str(value)[:40]!r}")
        return value
    return default


def _long_or_none(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
        raise Invalid(f"{name} must be a whole number of milliseconds (a Long), not {str(value)[:40]!r}")
    return value


def timeseries_values(cp: ControlPlane, identity: Identity, body: dict[str, Any]) -> dict[str, Any]:
    """GMS's AspectResource.getTimeseriesAspectValues: the points of one urn's timeseries aspect
    that the filter matches, within [startTimeMillis, endTimeMillis], newest first (or as `sort`
    on timestampMillis says), at most `limit` (1 with `latestValue`), each as an EnvelopedAspect
    ({"aspect": {"value": "<JSON text>", "contentType"}, "systemMetadata"?}). Read as an aspect
    of the urn is read (can_read): GMS asks the same READ privilege of the urn."""
    for name in ("urn", "entity", "aspect"):
        if not isinstance(body.get(name), str):
            raise Invalid(f"{name} is required (a string)")
    parsed = cp.registry.parse_urn(body["urn"])
    entity, aspect = body["entity"], body["aspect"]
    if parsed.entity_type != entity:
        raise MetadataInvalid(f"urn {body['urn']} is not of entity {entity}")
    spec = cp.registry.aspect(entity, aspect)
    if not spec.timeseries:
        raise Invalid(f"{aspect} is not a timeseries aspect; read it with GET /aspects/{{urn}}?aspect={aspect}")
    start_ms, end_ms = _long_or_none(body, "startTimeMillis"), _long_or_none(body, "endTimeMillis")
    limit = _whole_number(body, ("limit",), TIMESERIES_LIMIT)
    if not 0 <= limit <= TIMESERIES_LIMIT:
        raise Invalid(f"limit must be from 0 to {TIMESERIES_LIMIT}, not {limit}")
    latest_value = body.get("latestValue", False)
    if not isinstance(latest_value, bool):
        raise Invalid("latestValue must be true or false")
    if latest_value:
        limit = 1
    flt = parse_filter(body.get("filter"))
    sort = body.get("sort")
    oldest_first = False
    if sort is not None:
        if not isinstance(sort, dict) or sort.get("field") != "timestampMillis" or \
                sort.get("order", "ASCENDING") not in ("ASCENDING", "DESCENDING"):
            raise Invalid("sort must be {\"field\": \"timestampMillis\", \"order\": \"ASCENDING\" | \"DESCENDING\"}: "
                          "this server sorts timeseries points by their time only")
        oldest_first = sort.get("order", "ASCENDING") == "ASCENDING"
    urn = str(parsed)
    can_read(cp, identity, urn, entity)
    values: list[dict[str, Any]] = []
    fields = timeseries_fields(spec)
    with cp.store.read() as db:
        for point in aspect_store.timeseries_points(db, urn, aspect, start_ms=start_ms, end_ms=end_ms,
                                                    oldest_first=oldest_first):
            if len(values) >= limit:
                break
            if matches(flt, document(fields, urn, point.value, point.system_metadata)):
                values.append({"aspect": {"value": json.dumps(point.value, separators=(",", ":"), ensure_ascii=False),
                                          "contentType": "application/json"},
                               **({"systemMetadata": point.system_metadata} if point.system_metadata else {})})
    answer: dict[str, Any] = {"entityName": entity, "aspectName": aspect, "limit": limit, "values": values}
    if start_ms is not None:
        answer["startTimeMillis"] = start_ms
    if end_ms is not None:
        answer["endTimeMillis"] = end_ms
    return {"value": answer}


def hard_delete(cp: ControlPlane, identity: Identity, body: dict[str, Any]) -> dict[str, Any]:
    """GMS's EntityResource delete action. With an aspectName (a timeseries aspect's, as DataHub's
    hard_delete_timeseries_aspect and `datahub delete --aspect` send it): only that aspect's
    points within [startTimeMillis, endTimeMillis], answered as GMS answers it, the count in
    `timeseriesRows` and no `rows`. Without: the whole entity, `rows` its versioned rows and
    `timeseriesRows` its points, both 0 for an entity that never was. GMS would also apply the
    bounds to an entity delete's points, keeping those outside them; we refuse bounds there
    rather than leave points of an entity otherwise gone (decision 88)."""
    urn = body.get("urn")
    if not isinstance(urn, str):
        raise Invalid("urn is required (a string)")
    aspect = body.get("aspectName")
    if aspect is not None and not isinstance(aspect, str):
        raise Invalid(f"aspectName must be a string, not {str(aspect)[:40]!r}")
    start_ms, end_ms = _long_or_none(body, "startTimeMillis"), _long_or_none(body, "endTimeMillis")
    if aspect is not None:
        points = cp.delete_timeseries(urn, aspect, start_ms, end_ms, identity)
        return {"value": {"urn": urn, "timeseriesRows": points}}
    if start_ms is not None or end_ms is not None:
        raise Invalid("startTimeMillis and endTimeMillis bound the points of the timeseries aspect aspectName names; "
                      "give aspectName, or leave them out to delete the whole entity with all its points")
    deleted = cp.delete_entity(urn, identity)
    return {"value": {"urn": urn, "rows": deleted.rows, "timeseriesRows": deleted.timeseries_rows}}


def references_action(cp: ControlPlane, identity: Identity, body: dict[str, Any]) -> dict[str, Any]:
    """GMS's EntityResource deleteReferences action: `urn`, and `dryRun` (false unless given)."""
    urn = body.get("urn")
    if not isinstance(urn, str):
        raise Invalid("urn is required (a string)")
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise Invalid(f"dryRun must be true or false, not {str(dry_run)[:40]!r}")
    return {"value": delete_references(cp, urn, dry_run, identity)}


def snapshot_proposals(cp: ControlPlane, action: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The UPSERTs that an ingest (one snapshot: `entity`, `systemMetadata`) or a batchIngest
    (`entities`, and `systemMetadata` a list as long, or none) stands for, in order."""
    if action == "ingest":
        return snapshots.proposals(cp.registry, body.get("entity"), body.get("systemMetadata"))
    entities = body.get("entities")
    if not isinstance(entities, list):
        raise Invalid("entities must be a list of snapshots")
    system_metadata = body.get("systemMetadata")
    if system_metadata is None:
        system_metadata = [None] * len(entities)
    if not isinstance(system_metadata, list) or len(system_metadata) != len(entities):
        raise Invalid("entities and systemMetadata length must match")
    return [proposal for index, (entity, metadata) in enumerate(zip(entities, system_metadata))
            for proposal in snapshots.proposals(cp.registry, entity, metadata, f"entities[{index}]")]


def can_read(cp: ControlPlane, identity: Identity, urn: str, entity_type: str) -> None:
    """Whether IDENTITY may read URN, judged by its parsed form (what is then read): the text
    as sent may spell the same key otherwise ("urn:li:dataHubRemoteExecutor:(x)" is ...:x)."""
    if identity.kind == ADMIN:
        return
    if identity.kind == INGEST:
        if entity_type in E.CONTROL_PLANE_ENTITIES:
            raise Forbidden(f"a run's ingest token may not read {entity_type} entities")
        return
    if identity.kind == EXECUTOR:
        if entity_type == E.POOL:
            identity.require_pool(E.key_of(urn, E.POOL))
            return
        if entity_type == E.EXECUTION:
            row = cp.store.one("SELECT pool_id FROM executions WHERE id=?", (E.key_of(urn, E.EXECUTION),))
            if row is None:
                raise NotFound(f"{urn} not found")
            identity.require_pool(row["pool_id"])
            return
        if entity_type == E.EXECUTOR:
            # Another pool's executors (their hosts, addresses, what they run) are not its to see.
            with cp.store.read() as db:
                stored = aspect_store.get(db, urn, E.EXECUTOR_STATUS)
            if stored is not None:
                identity.require_pool(stored.value["executorPoolId"])
            return
        if entity_type == E.GLOBAL_CONFIG:
            return
    raise Forbidden(f"this token may not read {entity_type} entities")


# Runs: GMS's BatchIngestionRunResource over its system-metadata index (our run index,
# aspect_store.py), which books each latest aspect to the run that wrote it last.
RUNS_PAGE_SIZE = 100  # BatchIngestionRunResource.DEFAULT_PAGE_SIZE
RUN_ROWS_MAX = 10_000  # the most rows GMS's index answers at once (its results limit)
ROLLBACK_SUMMARIES = 100  # the rows a rollback's answer shows


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Invalid(f"{name} must be true or false, not {str(value)[:40]!r}")
    return value


def _run_id(body: dict[str, Any]) -> str:
    run_id = body.get("runId")
    if not isinstance(run_id, str):
        raise Invalid("runId is required (a string)")
    return run_id


def _is_key(row: aspect_store.RunRow) -> bool:
    """GMS tells a key aspect's row by its name (AspectRowSummary.keyAspect: it ends in "Key")."""
    return row.aspect.endswith("Key")


def _summary(row: aspect_store.RunRow) -> dict[str, Any]:
    """A row as GMS's index answers it (an AspectRowSummary, with what the index has)."""
    return {"runId": row.run_id, "aspectName": row.aspect, "urn": row.urn, "timestamp": row.last_updated,
            "keyAspect": _is_key(row)}


def list_runs(cp: ControlPlane, body: dict[str, Any]) -> dict[str, Any]:
    """BatchIngestionRunResource.list: the runs that have rows in the index, newest first, each
    with its rows (removed ones counted) and its newest row's time; a run whose every row is
    removed (its entities soft deleted) only with includeSoft. A run whose rows later runs all
    wrote again has none left, and is not listed."""
    offset = _whole_number(body, ("pageOffset", "start"), 0)
    size = _whole_number(body, ("pageSize", "count"), RUNS_PAGE_SIZE)
    with cp.store.read() as db:
        return {"value": aspect_store.runs(db, offset=max(0, offset), limit=max(0, min(size, RUN_ROWS_MAX)),
                                           include_removed=_flag(body, "includeSoft", False))}


def describe_run(cp: ControlPlane, body: dict[str, Any]) -> dict[str, Any]:
    """BatchIngestionRunResource.describe: the run's rows of the index, by urn and aspect, from
    `start`, at most `count`; removed ones only with includeSoft; with includeAspect, each with
    the aspect's latest value."""
    run_id = _run_id(body)
    start, count = _whole_number(body, ("start",), 0), _whole_number(body, ("count",), RUNS_PAGE_SIZE)
    with_aspect = _flag(body, "includeAspect", False)
    summaries = []
    with cp.store.read() as db:
        for row in aspect_store.rows_of(db, run_id=run_id, include_removed=_flag(body, "includeSoft", False),
                                        start=max(0, start), count=max(0, min(count, RUN_ROWS_MAX))):
            summary = _summary(row)
            if with_aspect:
                parsed = cp.registry.parse_urn(row.urn)
                stored = (key_aspect(db, cp.registry, parsed) if row.aspect == cp.registry.entity(
                    parsed.entity_type).key_aspect else aspect_store.get(db, row.urn, row.aspect))
                if stored is not None:
                    summary["aspect"] = stored.value
            summaries.append(summary)
    return {"value": summaries}


RUN_READS = {"list": list_runs, "describe": describe_run}


def rollback_run(cp: ControlPlane, body: dict[str, Any]) -> dict[str, Any]:
    """BatchIngestionRunResource.rollback (RollbackService.rollbackIngestion). The run's rows:
    all with safe=false (hardDelete, the CLI's --nuke), else those not removed. Each aspect whose
    latest value is still the run's is undone (aspect_store.roll_back: the version before it comes
    back, or it goes); a key aspect's row, an entity the run made, soft deletes the entity
    (status removed=true) or, with safe=false, deletes it with all its rows. The answer counts
    as GMS's does, and names the entities being deleted that hold aspects of other runs (status
    aside): unsafeEntities, found in the index as it stands before the rollback.

    The control plane's own entities (pools, sources, executions, secrets, executors) are not in
    the run index (ingest.Ingest._book): no rollback undoes them (decision 101)."""
    run_id = _run_id(body)
    if run_id == aspect_store.NO_RUN_ID:
        raise Invalid(f"{run_id} is a default run-id provided for non labeled ingestion runs. You cannot delete "
                      "using this reserved run-id")
    dry_run = _flag(body, "dryRun", False)
    safe = body.get("safe")
    hard = not _flag(body, "safe", True) if safe is not None else _flag(body, "hardDelete", False)
    with cp.store.transaction() as tx:
        rows = aspect_store.rows_of(tx, run_id=run_id, include_removed=hard, count=RUN_ROWS_MAX)
        keys = [row for row in rows if _is_key(row)]
        unsafe = [row for key in keys for row in aspect_store.rows_of(tx, urn=key.urn, include_removed=False)
                  if row.run_id != run_id and not _is_key(row) and row.aspect != aspect_store.STATUS]
        unsafe_urns = list(dict.fromkeys(row.urn for row in unsafe))
        report = {"aspectsAffected": len(unsafe), "unsafeEntitiesCount": len(unsafe_urns),
                  "unsafeEntities": [{"urn": urn} for urn in unsafe_urns], "entitiesDeleted": len(keys)}
        if dry_run:
            shown = [row for row in rows[:ROLLBACK_SUMMARIES] if hard or not _is_key(row)]
            return {"value": {**report, "aspectsReverted": len(rows) - (0 if hard else len(keys)),
                              "entitiesAffected": len({row.urn for row in rows}),
                              "aspectRowSummaries": [_summary(row) for row in shown]}}
        undone, entity_rows = [], 0
        for row in rows:
            parsed = cp.registry.parse_urn(row.urn)
            entity = cp.registry.entity(parsed.entity_type)
            if row.aspect != entity.key_aspect:
                if aspect_store.roll_back(tx, row.urn, row.aspect, run_id):
                    undone.append(row)
                continue
            now = aspect_store.run_row(tx, row.urn, row.aspect)
            if now is None or now.run_id != run_id:
                continue
            if hard:
                entity_rows += aspect_store.delete_entity(tx, row.urn, entity.key_aspect).rows
                undone.append(row)
            elif aspect_store.STATUS in entity.aspects:
                removed = {"removed": True}
                aspect_store.index_write(tx, row.urn, aspect_store.STATUS, aspect_store.NO_RUN_ID,
                                         aspect_store.now_ms(), removed)
                aspect_store.put(tx, urn=row.urn, entity_type=parsed.entity_type, aspect=aspect_store.STATUS,
                                 value=removed, actor=SYSTEM_ACTOR)
        entity_rows += aspect_store.roll_back_timeseries(tx, run_id)
    cp.ingest.after_commit()
    return {"value": {**report, "aspectsReverted": len(undone) + entity_rows,
                      "entitiesAffected": len({row.urn for row in undone}),
                      "aspectRowSummaries": [_summary(row) for row in rows[:ROLLBACK_SUMMARIES]]}}


def create_router(cp: ControlPlane, *, cli_version: str | None = None) -> APIRouter:
    router = APIRouter()

    # GMS reads run in threads of their own (capacity.py): an executor's cancel check and pool
    # read, and DataHub's client, never wait for threads an admin change or a GraphQL query holds.
    reads = Threads(GMS_READ_THREADS)

    @router.get("/gms/config")
    async def config() -> dict[str, Any]:  # no blocking work: no thread (DataHub's client asks it first)
        return {"noCode": "true", "statefulIngestionCapable": True, "patchCapable": False,
                "supportsImpactAnalysis": False, "timeZone": "GMT",
                "versions": {"acryldata/datahub": {"version": SPOKEN_DATAHUB_VERSION, "commit": "dhx-control-plane"}},
                "datahub": {"serverType": "dhx-control-plane", "serverEnv": "core"},
                "managedIngestion": {"enabled": True, "defaultCliVersion": cli_version or ""},
                "telemetry": {"enabledCli": False, "enabledIngestion": False}}

    # `datahub put aspect` posts to /aspects/?action=...: Rest.li takes the slash as the same resource.
    @router.post("/gms/aspects")
    @router.post("/gms/aspects/")
    async def aspects_action(request: Request, action: str = "") -> Any:
        body = loads(await request.body() or b"{}")
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object")
        identity = identity_of(request)
        if action == "ingestProposal":
            urns = cp.ingest.ingest([body.get("proposal")], identity)
            return {"value": urns[0]}
        if action == "ingestProposalBatch":
            proposals = body.get("proposals")
            if not isinstance(proposals, list):
                raise Invalid("proposals must be a list")
            return {"value": cp.ingest.ingest(proposals, identity)}
        if action == "getTimeseriesAspectValues":
            return await reads.run(timeseries_values, cp, identity, body)
        return restli_error(404, f"action {action[:60]!r} of resource aspects is not implemented by this server")

    @router.get("/gms/aspects/{urn:path}")
    async def get_aspect(urn: str, request: Request, aspect: str = "", version: int = 0) -> Any:
        return await reads.run(read_aspect, urn, request, aspect, version)

    def read_aspect(urn: str, request: Request, aspect: str, version: int) -> Any:
        if not INT64_MIN <= version <= INT64_MAX:
            raise Invalid(f"version {version} is out of a long's range")
        parsed = cp.registry.parse_urn(urn)
        spec = cp.registry.aspect(parsed.entity_type, aspect)
        can_read(cp, identity_of(request), str(parsed), parsed.entity_type)
        if spec.timeseries:
            raise Invalid(f"{aspect} is a timeseries aspect; it is not read by version")
        with cp.store.read() as db:
            if aspect == cp.registry.entity(parsed.entity_type).key_aspect:
                stored = key_aspect(db, cp.registry, parsed) if version == 0 else None
            else:
                stored = aspect_store.get(db, str(parsed), aspect, version)
        value = stored.value if stored else None
        if value is None:
            return restli_error(404, f"{aspect} of {urn} (version {version}) not found")
        return {"urn": str(parsed), "version": version, "aspect": {spec.restli_name: value}}

    def entity_response(urn: str, wanted: list[str] | None, with_key: bool) -> dict[str, Any]:
        """URN's EntityResponse as GMS's EntityV2Resource answers it: the latest of the WANTED
        aspects that are stored (all when None), the key aspect among them when the entity
        exists, and the key aspect anyway unless the caller said alwaysIncludeKeyAspect=false.
        GMS answers so for every urn asked about, stored or not (DataHubGraph.get_entity_raw's
        "do not use this to determine if an entity exists"); existence is the key aspect read
        through /aspects (DataHubGraph.exists)."""
        parsed = cp.registry.parse_urn(urn)
        for name in wanted or []:
            cp.registry.aspect(parsed.entity_type, name)
        key = cp.registry.entity(parsed.entity_type).key_aspect
        with cp.store.read() as db:
            stored = aspect_store.latest(db, str(parsed), wanted)
            stored.pop(key, None)  # entity_keys decides what is answered for it
            if with_key or wanted is None or key in wanted:
                found = key_aspect(db, cp.registry, parsed, only_if_exists=not with_key)
                if found is not None:
                    stored[key] = found
        aspects = {
            name: {"name": name, "type": "VERSIONED", "version": 0, "value": s.value,
                   "created": {"time": s.created_on_ms, "actor": s.created_by or "urn:li:corpuser:unknown"},
                   **({"systemMetadata": s.system_metadata} if s.system_metadata else {})}
            for name, s in stored.items()}
        return {"urn": str(parsed), "entityName": parsed.entity_type, "aspects": aspects}

    @router.get("/gms/entitiesV2/{urn:path}")
    async def get_entity(urn: str, request: Request) -> Any:
        return await reads.run(read_entity, urn, request)

    def read_entity(urn: str, request: Request) -> Any:
        parsed = cp.registry.parse_urn(urn)
        can_read(cp, identity_of(request), str(parsed), parsed.entity_type)
        return entity_response(urn, parse_restli_list(request.url.query, "aspects"),
                               _restli_boolean(request, "alwaysIncludeKeyAspect", True))

    @router.get("/gms/entitiesV2")
    async def batch_get_entities(request: Request) -> Any:
        return await reads.run(read_entities, request)

    def read_entities(request: Request) -> Any:
        urns = parse_restli_list(request.url.query, "ids")
        if not urns:
            raise Invalid("ids=List(...) is required")
        if len(urns) > 1000:
            raise Invalid("at most 1000 ids per request")
        wanted = parse_restli_list(request.url.query, "aspects")
        with_key = _restli_boolean(request, "alwaysIncludeKeyAspect", True)
        results = {}
        for urn in urns:
            parsed = cp.registry.parse_urn(urn)
            can_read(cp, identity_of(request), str(parsed), parsed.entity_type)
            results[urn] = entity_response(urn, wanted, with_key)
        return {"results": results, "errors": {}, "statuses": {}}

    @router.post("/gms/entities")
    async def entities_action(request: Request, action: str = "") -> Any:
        if action in ("ingest", "batchIngest"):
            body = loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise Invalid("the body must be a JSON object")
            cp.ingest.ingest(snapshot_proposals(cp, action, body), identity_of(request))
            return Response(status_code=200)  # GMS's action returns Void: 200, no body
        if action not in ("delete", "deleteReferences"):
            return restli_error(404, f"action {action[:60]!r} of resource entities is not implemented by this server")
        body = loads(await request.body() or b"{}")
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object")
        if action == "deleteReferences":
            return await run_in_threadpool(references_action, cp, identity_of(request), body)
        # Off the event loop: a pool's delete deletes its queues, and a queue service that hangs
        # must not hold up every other call.
        return await run_in_threadpool(hard_delete, cp, identity_of(request), body)

    @router.post("/gms/runs")
    async def runs_action(request: Request, action: str = "") -> Any:
        if action not in ("list", "describe", "rollback"):
            return restli_error(404, f"action {action[:60]!r} of resource runs is not implemented by this server")
        body = loads(await request.body() or b"{}")
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object")
        identity_of(request).require_admin("reading and rolling back ingestion runs")
        if action == "rollback":
            return await run_in_threadpool(rollback_run, cp, body)
        return await reads.run(RUN_READS[action], cp, body)

    return router

