"""DataHub's GraphQL API for what remote execution needs, at /gms/api/graphql and /api/graphql.

Schema-first with ariadne (on graphql-core): controlplane/graphql/schema.graphql declares
DataHub's own types and operations; the resolvers below answer them from the control plane.
Every mutation writes through the same path as DataHub's ingest endpoint, so the rules for our
entities hold whichever way a client comes in.

As DataHub (graphql-java) does, a document that does not parse or names an unknown field is
answered 200 with GraphQL `errors` (DataHub's client raises them as GraphError); a body that is
not a GraphQL request is 400. Only admin tokens may use GraphQL: an executor's or a run's token
gets 403. A document of more than 15,000 tokens, or a valid operation past DataHub's depth (50)
or complexity (2000) limit, is refused before anything runs (graphql_limits.py).

A request may carry a secret's value (createSecret, updateSecret). graphql-core quotes what a
request sent in some of its errors ("found: {'name': 'X', 'value': '...'}") and ariadne logged
every error with the document around it, so: in an error that is not one of our refusals,
every string and number the request sent is masked, and only failures of our own code are
logged, without the request.
"""
from __future__ import annotations

import json
import logging
import re
import traceback
from pathlib import Path
from typing import Any

from ariadne import (MutationType, ObjectType, QueryType, UnionType, graphql_sync, load_schema_from_path,
                     make_executable_schema)
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from graphql import (EnumValueNode, FloatValueNode, GraphQLError, IntValueNode, StringValueNode, Visitor, parse, print_ast,
                     validate, visit)
from graphql.pyutils import inspect
from loguru import logger

from vocabulary.tasks import RUN_INGEST

from . import entities as E
from . import graphql_limits, secret_store
from .errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from .json_input import loads
from .metadata import aspect_store
from .metadata.registry import MetadataInvalid
from .pools import routes_to
from .service import ControlPlane
from .tokens import Identity

SCHEMA_PATH = Path(__file__).parent / "graphql" / "schema.graphql"
MAX_PAGE = 1000
SOURCE_RUNS_PAGE = 10  # IngestionSource.executions without a count
# Our refusals, answered with their own message (which never quotes a secret) and HTTP-like code.
REFUSALS = {Invalid: 400, MetadataInvalid: 400, Forbidden: 403, NotFound: 404, Conflict: 409, Unavailable: 503}
MASK = "********"


def refusal_status(error: BaseException | None) -> int | None:
    """The status of ERROR when it is one of our refusals, its subclasses too (InvalidUrn is a
    MetadataInvalid: a malformed urn in a mutation was answered and logged as our failure)."""
    return next((status for kind, status in REFUSALS.items() if isinstance(error, kind)), None)


# Rows a request's list fields may look at in all. DataHub's limits (graphql_limits.py) count
# fields, not the items of a list: nested lists (runs' sources' runs' sources' ...) multiplied the
# work by each list's length per level (7 levels of 4 runs: 10 s), and 999 aliases of one listing
# each scanned every run. Ours in addition; a normal page looks at a few thousand.
WORK_LIMIT = 200_000


class WorkBudget:
    """The rows one request's resolvers have looked at (GraphQL runs them on one thread)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = WORK_LIMIT if limit is None else limit
        self.spent = 0

    def spend(self, rows: int) -> None:
        self.spent += rows
        if self.spent > self.limit:
            raise Invalid(f"the request looks at more than {self.limit} rows through its lists (nested lists "
                          "multiply): ask for fewer, or less deeply nested")


def spend(info: Any, rows: int) -> None:
    budget = info.context.get("work")
    if budget is not None:
        budget.spend(rows)


def _entries(mapping: dict[str, str] | None) -> list[dict[str, str]] | None:
    return None if mapping is None else [{"key": k, "value": v} for k, v in mapping.items()]


def _page(items: list[Any], start: int | None, count: int | None) -> tuple[int, int, list[Any]]:
    start = max(0, start or 0)
    count = max(0, min(MAX_PAGE, 20 if count is None else count))
    return start, count, items[start:start + count]


# what a filter's field reads from an ingestion source / an execution request
SOURCE_FIELDS = {
    "urn": lambda s: s["urn"], "name": lambda s: s["name"], "type": lambda s: s["type"],
    "sourceType": lambda s: s["type"], "executorId": lambda s: s["info"].get("config", {}).get("executorId"),
    "sourceExecutorId": lambda s: s["info"].get("config", {}).get("executorId"),
}


def source_of_ours(execution: dict[str, Any]) -> str | None:
    """The urn of our source EXECUTION is a run of. None for a request adopted from an upstream
    DataHub: its input names that DataHub's source, which a source of ours may share the urn of
    (decision 86) but is not."""
    return None if execution["mirrored"] else execution["source_urn"]


EXECUTION_FIELDS = {
    "urn": lambda x: x["urn"], "ingestionSource": source_of_ours, "executorId": lambda x: x["pool_id"],
    "status": lambda x: x["status"], "task": lambda x: x["task"],
    # DataHub's own name for a run's status: ExecutionRequestResult.status is @Searchable as
    # executionResultStatus, the field its search index (and so listExecutionRequests) filters on.
    "executionResultStatus": lambda x: x["status"],
}
# and what a sort may also name: the time a run was asked for (DataHub's default order, newest first)
EXECUTION_SORT_FIELDS = {**EXECUTION_FIELDS, "requestTimeMs": lambda x: x["created_at"]}


OWNERSHIP = "ownership"  # DataHub's aspect, which sources may carry like any entity
# The legacy Owner.type values DataHub's GraphQL OwnershipType has; another (one a newer model
# knows) is answered CUSTOM, as DataHub's OwnerMapper answers it.
OWNERSHIP_TYPES = frozenset({"TECHNICAL_OWNER", "BUSINESS_OWNER", "DATA_STEWARD", "NONE", "CUSTOM", "DATAOWNER",
                             "DEVELOPER", "DELEGATE", "PRODUCER", "STAKEHOLDER", "CONSUMER"})
# An owner stored with no typeUrn has the system ownership type of its legacy type
# (DataHub's OwnerUtils.mapOwnershipTypeToEntity: this prefix, the type in lower case).
SYSTEM_OWNERSHIP_TYPE = "urn:li:ownershipType:__system__"
UNKNOWN_ACTOR = "urn:li:corpuser:unknown"  # AuditStamp's default in DataHub's Ownership model

# The aspects DataHub's CorpUserMapper, CorpGroupMapper and OwnershipTypeMapper read for the
# fields we serve, by GraphQL type. An entity without one answers null for what it feeds, as
# GMS does: it loads any urn, stored or not, with its key (the username or group name) alone.
CORP_USER_INFO, CORP_USER_EDITABLE_INFO, CORP_GROUP_INFO = "corpUserInfo", "corpUserEditableInfo", "corpGroupInfo"
OWNERSHIP_TYPE_INFO, STATUS = "ownershipTypeInfo", "status"
ENTITY_ASPECTS = {"CorpUser": (CORP_USER_INFO, CORP_USER_EDITABLE_INFO), "CorpGroup": (CORP_GROUP_INFO,),
                  "OwnershipTypeEntity": (OWNERSHIP_TYPE_INFO, STATUS)}
# The ownershipTypeInfo GMS bootstraps for its four system ownership types
# (bootstrap_mcps/ownership-types.yaml), answered where none is stored (decision 83). The
# deprecated legacy types (__system__dataowner, ...) are not bootstrapped: GMS has no info for them.
SYSTEM_OWNERSHIP_TYPE_INFO = {
    SYSTEM_OWNERSHIP_TYPE + "technical_owner": {
        "name": "Technical Owner",
        "description": "Involved in the production, maintenance, or distribution of the asset(s)."},
    SYSTEM_OWNERSHIP_TYPE + "business_owner": {
        "name": "Business Owner",
        "description": "Principle stakeholders or domain experts associated with the asset(s)."},
    SYSTEM_OWNERSHIP_TYPE + "data_steward": {
        "name": "Data Steward", "description": "Involved in governance of the asset(s)."},
    SYSTEM_OWNERSHIP_TYPE + "none": {"name": "None", "description": "No ownership type specified."},
}


def corp_user_ref(urn: str) -> dict[str, Any]:
    """A CorpUser known by its urn; what its aspects feed is resolved when asked for.
    editableInfo stays null: DataHub's CorpUserMapper fills in editableProperties only."""
    return {"_kind": "CorpUser", "urn": urn, "type": "CORP_USER", "username": E.key_of(urn, "corpuser"),
            "editableInfo": None}


def corp_group_ref(urn: str) -> dict[str, Any]:
    return {"_kind": "CorpGroup", "urn": urn, "type": "CORP_GROUP", "name": E.key_of(urn, "corpGroup")}


def ownership_type_ref(urn: str) -> dict[str, Any]:
    return {"_kind": "OwnershipTypeEntity", "urn": urn, "type": "CUSTOM_OWNERSHIP_TYPE"}


def ownership_view(owned_urn: str, value: dict[str, Any]) -> dict[str, Any]:
    """DataHub's Ownership for a stored `ownership` aspect, as its OwnershipMapper and
    OwnerMapper make it: each owner a CorpUser (a corpuser urn) or else a CorpGroup, its
    ownership type that of its typeUrn or of its legacy type."""
    owners = []
    for owner in value.get("owners") or []:
        legacy = owner.get("type") if owner.get("type") in OWNERSHIP_TYPES else "CUSTOM"
        owner_urn = owner["owner"]
        entity = corp_user_ref(owner_urn) if owner_urn.startswith("urn:li:corpuser:") else corp_group_ref(owner_urn)
        type_urn = owner.get("typeUrn") or SYSTEM_OWNERSHIP_TYPE + legacy.lower()
        owners.append({"owner": entity, "type": legacy, "associatedUrn": owned_urn,
                       "ownershipType": ownership_type_ref(type_urn)})
    stamp = value.get("lastModified") or {}
    return {"owners": owners, "lastModified": {"time": stamp.get("time", 0), "actor": stamp.get("actor", UNKNOWN_ACTOR)}}


def is_system_source(source: dict[str, Any]) -> bool:
    """DataHub's own internal sources (dataHubIngestionSourceInfo.source.type SYSTEM), which its
    UI hides from the lists of runs unless asked."""
    return (source["info"].get("source") or {}).get("type") == "SYSTEM"


def matches(value: Any, flt: dict[str, Any]) -> bool:
    """One FacetFilterInput against one value, as DataHub's search filters read."""
    wanted = list(flt.get("values") or [])
    condition = flt.get("condition") or "EQUAL"
    text = "" if value is None else str(value)
    if condition == "EXISTS":
        result = value is not None
    elif condition in ("EQUAL", "IN"):
        result = text in wanted
    elif condition == "IEQUAL":
        result = text.lower() in [w.lower() for w in wanted]
    elif condition == "CONTAIN":
        result = any(w.lower() in text.lower() for w in wanted)
    elif condition == "START_WITH":
        result = any(text.startswith(w) for w in wanted)
    elif condition == "END_WITH":
        result = any(text.endswith(w) for w in wanted)
    else:
        raise Invalid(f"filter condition {condition} is not supported for this list")
    return result != bool(flt.get("negated"))


def sort_by(items: list[dict[str, Any]], sort: dict[str, Any] | None, fields: dict[str, Any]) -> list[dict[str, Any]]:
    """ITEMS in the order a SortCriterion ({field, sortOrder}) asks, on a field FIELDS reads, as
    DataHub's resolvers pass it to their search index: text without regard to case, items with
    no value last in either order, equal values in the order ITEMS had (the listing's own)."""
    if not sort:
        return items
    getter = fields.get(sort["field"])
    if getter is None:
        raise Invalid(f"cannot sort on {sort['field']!r}; sort on one of {', '.join(sorted(fields))}")
    valued = [(getter(item), item) for item in items]
    present = [(value.lower() if isinstance(value, str) else value, item) for value, item in valued if value is not None]
    present.sort(key=lambda pair: pair[0], reverse=sort["sortOrder"] == "DESCENDING")
    return [item for _, item in present] + [item for value, item in valued if value is None]


def apply_filters(items: list[dict[str, Any]], filters: list[dict[str, Any]] | None, fields: dict[str, Any],
                  query: str | None = None) -> list[dict[str, Any]]:
    for flt in filters or []:
        getter = fields.get(flt["field"])
        if getter is None:
            raise Invalid(f"cannot filter on {flt['field']!r}; filter on one of {', '.join(sorted(fields))}")
        items = [item for item in items if matches(getter(item), flt)]
    if query and query.strip() not in ("", "*"):
        needle = query.strip().lower()
        items = [item for item in items if any(needle in str(getter(item) or "").lower() for getter in fields.values())]
    return items


def build_schema(cp: ControlPlane):
    query, mutation = QueryType(), MutationType()
    source_type, execution_type = ObjectType("IngestionSource"), ObjectType("ExecutionRequest")
    pool_type, executor_type = ObjectType("RemoteExecutorPool"), ObjectType("RemoteExecutor")
    corp_user_type, corp_group_type = ObjectType("CorpUser"), ObjectType("CorpGroup")
    corp_group_info_type, ownership_type_entity = ObjectType("CorpGroupInfo"), ObjectType("OwnershipTypeEntity")

    def identity(info) -> Identity:
        return info.context["identity"]

    # views ------------------------------------------------------------------------------------
    def source_view(source: dict[str, Any]) -> dict[str, Any]:
        info = source["info"]
        config = info.get("config", {})
        return {"urn": source["urn"], "type": info.get("type"), "name": info.get("name"),
                "schedule": info.get("schedule"),
                # DataHub's schema says String!, its model lets it be absent (the default pool):
                # one source without it nulled the whole listIngestionSources.
                "config": {"recipe": config.get("recipe"), "executorId": config.get("executorId") or E.DEFAULT_EXECUTOR_ID,
                           "version": config.get("version"), "debugMode": config.get("debugMode"),
                           "extraArgs": _entries(config.get("extraArgs"))}}

    def execution_view(execution: dict[str, Any]) -> dict[str, Any]:
        inputs = execution["input"] or {}
        return {"urn": execution["urn"], "type": "EXECUTION_REQUEST", "id": execution["id"],
                "input": {"task": inputs.get("task", execution["task"]), "source": inputs.get("source") or {},
                          "arguments": _entries(inputs.get("args")), "requestedAt": inputs.get("requestedAt", 0),
                          "actorUrn": inputs.get("actorUrn"), "executorId": inputs.get("executorId")},
                "result": execution["result"], "_source_urn": source_of_ours(execution)}

    def pool_view(pool: dict[str, Any]) -> dict[str, Any]:
        return {"urn": pool["urn"], "type": "REMOTE_EXECUTOR_POOL", "executorPoolId": pool["id"],
                "description": pool["info"].get("description"), "createdAt": pool["created_at_ms"],
                "isDefault": pool["is_default"], "isEmbedded": pool["info"].get("isEmbedded")}

    # A status may leave out the fields its model defaults (executorExpired, executorInternal, ...),
    # which GMS's getters answer with their defaults: a status written without them nulled its
    # executor, and with it the whole list it was in, on their Boolean! fields.
    status_defaults = {field.name: field.default
                       for field in cp.registry.aspect(E.EXECUTOR, E.EXECUTOR_STATUS).schema.fields if field.has_default}

    def executor_view(executor_id: str) -> dict[str, Any] | None:
        with cp.store.read() as db:
            stored = aspect_store.get(db, E.executor_urn(executor_id), E.EXECUTOR_STATUS)
        if stored is None:
            return None
        return {**status_defaults, **stored.value, "urn": stored.urn, "type": "REMOTE_EXECUTOR",
                "_executor_id": executor_id}

    def executions_page(info, start, count, **where) -> dict[str, Any]:
        start, count = max(0, start or 0), max(0, min(MAX_PAGE, 20 if count is None else count))
        total, rows = cp.executions.list(start=start, count=count, **where)
        spend(info, len(rows) + 1)
        return {"start": start, "count": len(rows), "total": total, "executionRequests": [execution_view(r) for r in rows]}

    # queries ----------------------------------------------------------------------------------
    @query.field("listIngestionSources")
    def resolve_list_sources(_, info, input: dict[str, Any]) -> dict[str, Any]:
        sources = cp.sources.list()
        spend(info, len(sources))
        sources = apply_filters(sources, input.get("filters"), SOURCE_FIELDS, input.get("query"))
        sort = input.get("sort")
        sources = sort_by(sources, sort, SOURCE_FIELDS)
        if sort and sort["field"] == "name":
            # DataHub's ListIngestionSourcesResolver sorts "by name" on type first, then name
            # (its UI's order); this sort is stable, so it keeps the names' order within a type.
            sources = sort_by(sources, {**sort, "field": "type"}, SOURCE_FIELDS)
        start, count, page = _page(sources, input.get("start"), input.get("count"))
        return {"start": start, "count": len(page), "total": len(sources), "ingestionSources": [source_view(s) for s in page]}

    @query.field("ingestionSource")
    def resolve_source(_, info, urn: str) -> dict[str, Any] | None:
        """By urn alone, as DataHub's resolver: sources.get also takes an id or a name (for the
        admin CLI), which here answered a source whose urn was not the one asked for."""
        if not urn.startswith(f"urn:li:{E.SOURCE}:"):
            return None
        try:
            source = cp.sources.get(urn)
        except NotFound:
            return None
        return source_view(source) if source["urn"] == urn else None

    @source_type.field("executions")
    def resolve_source_executions(source, info, start: int | None = None, count: int | None = None) -> dict[str, Any]:
        # A source's runs default to a page of 10 (DataHub's IngestionSourceExecutionRequestsResolver),
        # not the 20 of the listings.
        return executions_page(info, start, SOURCE_RUNS_PAGE if count is None else count, source_urn=source["urn"])

    @source_type.field("ownership")
    def resolve_source_ownership(source, info) -> dict[str, Any] | None:
        with cp.store.read() as db:
            stored = aspect_store.get(db, source["urn"], OWNERSHIP)
        return ownership_view(source["urn"], stored.value) if stored else None

    # An owner's and an ownership type's fields, from the aspects stored for them. GraphQL
    # resolves the objects' fields as DataHub's mappers map them: CorpUserInfo,
    # CorpUserProperties, CorpUserEditableProperties, CorpGroupInfo, CorpGroupProperties and
    # OwnershipTypeInfo take the aspect's fields of the same names.
    def aspects_of(info, entity: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """ENTITY's aspects its mapper reads, read once per request however often it appears
        (an owner who is also the admin and a member of an owning group)."""
        cache = info.context.setdefault("owner_aspects", {})
        if entity["urn"] not in cache:
            spend(info, 1)
            with cp.store.read() as db:
                stored = aspect_store.latest(db, entity["urn"], ENTITY_ASPECTS[entity["_kind"]])
            cache[entity["urn"]] = {name: aspect.value for name, aspect in stored.items()}
        return cache[entity["urn"]]

    @corp_user_type.field("info")
    @corp_user_type.field("properties")
    def resolve_user_info(user, info) -> dict[str, Any] | None:
        return aspects_of(info, user).get(CORP_USER_INFO)

    @corp_user_type.field("editableProperties")
    def resolve_user_editable_properties(user, info) -> dict[str, Any] | None:
        return aspects_of(info, user).get(CORP_USER_EDITABLE_INFO)

    @corp_group_type.field("info")
    @corp_group_type.field("properties")
    def resolve_group_info(group, info) -> dict[str, Any] | None:
        return aspects_of(info, group).get(CORP_GROUP_INFO)

    def group_users(info, urns: list[str] | None) -> list[dict[str, Any]]:
        spend(info, len(urns or []))
        return [corp_user_ref(urn) for urn in urns or []]

    @corp_group_info_type.field("admins")
    def resolve_group_admins(group_info, info) -> list[dict[str, Any]]:
        return group_users(info, group_info.get("admins"))

    @corp_group_info_type.field("members")
    def resolve_group_members(group_info, info) -> list[dict[str, Any]]:
        return group_users(info, group_info.get("members"))

    @ownership_type_entity.field("info")
    def resolve_ownership_type_info(ownership_type, info) -> dict[str, Any] | None:
        stored = aspects_of(info, ownership_type).get(OWNERSHIP_TYPE_INFO)
        return stored if stored is not None else SYSTEM_OWNERSHIP_TYPE_INFO.get(ownership_type["urn"])

    @ownership_type_entity.field("status")
    def resolve_ownership_type_status(ownership_type, info) -> dict[str, Any] | None:
        stored = aspects_of(info, ownership_type).get(STATUS)
        return None if stored is None else {"removed": bool(stored.get("removed", False))}

    @query.field("listExecutionRequests")
    def resolve_list_executions(_, info, input: dict[str, Any]) -> dict[str, Any]:
        # Over every execution (it was the newest 1000 only: older runs, a source's among them,
        # could not be found, and the total stopped at 1000), as light rows; the page alone is
        # viewed, whatever the count.
        rows = cp.executions.index()
        spend(info, len(rows))
        if input.get("systemSources") is not None:  # only runs of system sources, or only of the others
            system = {s["urn"] for s in cp.sources.list() if is_system_source(s)}
            rows = [r for r in rows if (source_of_ours(r) in system) == input["systemSources"]]
        rows = apply_filters(rows, input.get("filters"), EXECUTION_FIELDS, input.get("query"))
        rows = sort_by(rows, input.get("sort"), EXECUTION_SORT_FIELDS)  # none: newest first, as DataHub's default
        start, count, page = _page(rows, input.get("start"), input.get("count"))
        return {"start": start, "count": len(page), "total": len(rows),
                "executionRequests": [execution_view(cp.executions.view(r["id"])) for r in page]}

    @query.field("executionRequest")
    def resolve_execution(_, info, urn: str) -> dict[str, Any] | None:
        try:
            return execution_view(cp.executions.view(E.key_of(urn, E.EXECUTION)))
        except NotFound:
            return None

    @execution_type.field("source")
    def resolve_execution_source(execution, info) -> dict[str, Any] | None:
        if not execution["_source_urn"]:
            return None
        try:
            return source_view(cp.sources.get(execution["_source_urn"]))
        except NotFound:
            return None

    @query.field("listRemoteExecutorPools")
    def resolve_list_pools(_, info, input: dict[str, Any]) -> dict[str, Any]:
        pools = cp.pools.list()
        if input.get("query"):
            pools = [p for p in pools if input["query"].lower() in p["id"].lower()]
        start, count, page = _page(pools, input.get("start"), input.get("count"))
        return {"start": start, "count": len(page), "total": len(pools), "remoteExecutorPools": [pool_view(p) for p in page]}

    @query.field("defaultRemoteExecutorPool")
    def resolve_default_pool(_, info) -> dict[str, Any]:
        default = cp.pools.default_pool_id()
        return {"pool": pool_view(cp.pools.get(default)) if default else None}

    @pool_type.field("remoteExecutors")
    def resolve_pool_executors(pool, info, start: int, count: int) -> dict[str, Any]:
        executors = cp.executors.list(pool["executorPoolId"])
        spend(info, len(executors))
        views = [v for v in (executor_view(e["executor_id"]) for e in executors) if v]
        start, count, page = _page(views, start, count)
        return {"start": start, "count": len(page), "total": len(views), "remoteExecutors": page}

    @pool_type.field("ingestionSources")
    def resolve_pool_sources(pool, info, input: dict[str, Any]) -> dict[str, Any]:
        pool_id = pool["executorPoolId"]
        default = cp.pools.default_pool_id()
        every = cp.sources.list()
        spend(info, len(every))
        sources = [s for s in every if routes_to(s["info"].get("config", {}).get("executorId"), pool_id, default)]
        if input.get("hideSystemSources"):
            sources = [s for s in sources if not is_system_source(s)]
        start, count, page = _page(sources, input.get("start"), input.get("count"))
        return {"start": start, "count": len(page), "total": len(sources), "ingestionSources": [source_view(s) for s in page]}

    @query.field("getRemoteExecutor")
    def resolve_executor(_, info, urn: str) -> dict[str, Any] | None:
        return executor_view(E.key_of(urn, E.EXECUTOR))

    @executor_type.field("recentExecutions")
    def resolve_executor_executions(executor, info, start: int, count: int) -> dict[str, Any]:
        return executions_page(info, start, count, executor_id=executor["_executor_id"])

    @query.field("listSecrets")
    def resolve_list_secrets(_, info, input: dict[str, Any]) -> dict[str, Any]:
        identity(info).require_admin("listing secrets")
        secrets = cp.secrets.list(input.get("query"))
        start, count, page = _page(secrets, input.get("start"), input.get("count"))
        return {"start": start, "count": len(page), "total": len(secrets),
                "secrets": [secret_store.view(s) for s in page]}

    @query.field("getSecretValues")
    def resolve_secret_values(_, info, input: dict[str, Any]) -> list[dict[str, str]]:
        identity(info).require_admin("reading secret values")
        return cp.secrets.values(input["secrets"])

    # mutations --------------------------------------------------------------------------------
    def source_info(input: dict[str, Any]) -> dict[str, Any]:
        config = input["config"]
        info: dict[str, Any] = {"name": input["name"], "type": input["type"],
                                "config": {"recipe": config["recipe"], "executorId": config["executorId"]}}
        for key in ("version", "debugMode"):
            if config.get(key) is not None:
                info["config"][key] = config[key]
        if config.get("extraArgs"):
            info["config"]["extraArgs"] = {e["key"]: e.get("value") or "" for e in config["extraArgs"]}
        if input.get("schedule"):
            info["schedule"] = {"interval": input["schedule"]["interval"], "timezone": input["schedule"]["timezone"]}
        if input.get("source"):
            info["source"] = {"type": input["source"]["type"]}
        return info

    @mutation.field("createIngestionSource")
    def resolve_create_source(_, info, input: dict[str, Any]) -> str:
        return cp.write_aspect(E.source_urn(cp.sources.new_id()), E.SOURCE_INFO, source_info(input), identity(info))

    @mutation.field("updateIngestionSource")
    def resolve_update_source(_, info, urn: str, input: dict[str, Any]) -> str:
        if not urn.startswith(f"urn:li:{E.SOURCE}:"):
            raise Invalid(f"{urn[:80]} is not an ingestion source urn")
        return cp.write_aspect(urn, E.SOURCE_INFO, source_info(input), identity(info))

    @mutation.field("deleteIngestionSource")
    def resolve_delete_source(_, info, urn: str) -> str:
        """DataHub's DeleteIngestionSourceResolver: a hard delete answering the urn, a source that
        is not there included (as deleteSecret), so a retried delete is not an error."""
        identity(info).require_admin("deleting an ingestion source")
        try:
            found = cp.sources.get(urn)["urn"]  # the source found, even by its name
        except NotFound:
            return urn
        cp.delete_entity(found, identity(info))
        return urn

    @mutation.field("createIngestionExecutionRequest")
    def resolve_run(_, info, input: dict[str, Any]) -> str:
        return cp.run_source(input["ingestionSourceUrn"], RUN_INGEST, identity(info))

    @mutation.field("cancelIngestionExecutionRequest")
    def resolve_cancel(_, info, input: dict[str, Any]) -> str:
        execution = cp.executions.view(E.key_of(input["executionRequestUrn"], E.EXECUTION))
        if execution["source_urn"] != input["ingestionSourceUrn"]:
            raise Invalid(f"execution request {execution['id']} is not a run of {input['ingestionSourceUrn']}")
        return cp.cancel(execution["urn"], identity(info))

    @mutation.field("createTestConnectionRequest")
    def resolve_test_connection(_, info, input: dict[str, Any]) -> str:
        return cp.test_connection(input["recipe"], input.get("version"), None, identity(info))

    @mutation.field("createRemoteExecutorPool")
    def resolve_create_pool(_, info, input: dict[str, Any]) -> str:
        return cp.pools.create(input["executorPoolId"], description=input.get("description"),
                               is_default=input["isDefault"], creator=identity(info).actor)["urn"]

    @mutation.field("updateRemoteExecutorPool")
    def resolve_update_pool(_, info, input: dict[str, Any]) -> bool:
        cp.pools.update_description(E.key_of(input["urn"], E.POOL), input.get("description"))
        return True

    @mutation.field("updateDefaultRemoteExecutorPool")
    def resolve_default(_, info, urn: str) -> bool:
        cp.pools.set_default(E.key_of(urn, E.POOL))
        return True

    @mutation.field("createSecret")
    def resolve_create_secret(_, info, input: dict[str, Any]) -> str:
        return cp.create_secret(input["name"], input["value"], input.get("description"), identity(info))

    @mutation.field("updateSecret")
    def resolve_update_secret(_, info, input: dict[str, Any]) -> str:
        return cp.update_secret(input["urn"], input["name"], input["value"], input.get("description"), identity(info))

    @mutation.field("deleteSecret")
    def resolve_delete_secret(_, info, urn: str) -> str:
        return cp.delete_secret(urn, identity(info))

    owner_type = UnionType("OwnerType", lambda owner, *_: owner["_kind"])
    return make_executable_schema(load_schema_from_path(str(SCHEMA_PATH)), query, mutation, source_type,
                                  execution_type, pool_type, executor_type, owner_type, corp_user_type,
                                  corp_group_type, corp_group_info_type, ownership_type_entity)


def create_router(cp: ControlPlane) -> APIRouter:
    router = APIRouter()
    schema = build_schema(cp)

    async def serve(request: Request) -> JSONResponse:
        identity: Identity = request.state.identity
        body = loads(await request.body() or b"")
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return JSONResponse({"errors": [{"message": "a GraphQL request is a JSON object with a query string"}]},
                                status_code=400)
        if not identity.is_admin:
            return JSONResponse({"errors": [{"message": f"GraphQL needs an admin token; this is a(n) {identity.kind} "
                                                        "token"}]}, status_code=403)
        # Off the event loop: resolvers call the queue service (a pool's queues) and may call an
        # upstream DataHub; one that hangs must not hold up every other call (heartbeats, results).
        operation_name = body.get("operationName") if isinstance(body.get("operationName"), str) else None

        def validate_within_limits(served, document, *args: Any, **kwargs: Any) -> list[GraphQLError]:
            # graphql-java's order: the document is validated first, and only a valid one measured.
            return validate(served, document, *args, **kwargs) or graphql_limits.check(document, operation_name)

        _, result = await run_in_threadpool(graphql_sync, schema, body, query_parser=graphql_limits.parse_within_limits,
                                            query_validator=validate_within_limits,
                                            context_value={"identity": identity, "request": request,
                                                           "work": WorkBudget()},
                                            error_formatter=lambda error, debug=False: _format_error(error, body),
                                            logger=_OUR_FAILURES)
        return JSONResponse(result, status_code=200)

    router.add_api_route("/gms/api/graphql", serve, methods=["POST"])
    router.add_api_route("/api/graphql", serve, methods=["POST"])
    return router


def _format_error(error: GraphQLError, body: dict[str, Any]) -> dict[str, Any]:
    """GraphQL's error shape, with our refusals' messages and no stack trace; graphql-core's own
    messages with every string and number the request (BODY) sent masked."""
    formatted = error.formatted
    if isinstance(error, graphql_limits.QueryLimitExceeded):
        return formatted  # our own words and numbers, which quote nothing the request sent
    original = getattr(error, "original_error", None)
    status = refusal_status(original)
    if status is not None:
        formatted["message"] = str(original)
        formatted.setdefault("extensions", {})["code"] = status
    else:
        for quoted, masked in _quoted_values(body):
            formatted["message"] = quoted.sub(masked, formatted["message"])
    return json.loads(json.dumps(formatted, default=str))


def _quoted_values(body: dict[str, Any]) -> list[tuple[re.Pattern[str], str]]:
    """Each string and number of the request (variables, and literals in the document) as
    graphql-core quotes it in an error (inspect() for variables, print_ast() for literals), with
    its masked form; longest first. Numbers too: a secret may be all digits (a PIN), and a
    client may send it unquoted ("String cannot represent a non string value: 4321"); a number
    is masked only where it stands alone, not inside a longer number or word."""
    quoted: dict[str, str] = {}
    numbers: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            quoted[inspect(value)] = f"'{MASK}'"
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers.add(inspect(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(body.get("variables"))

    class Literals(Visitor):
        def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
            quoted[print_ast(node)] = f'"{MASK}"'

        def enter_int_value(self, node: IntValueNode, *_: Any) -> None:
            numbers.add(node.value)

        def enter_float_value(self, node: FloatValueNode, *_: Any) -> None:
            numbers.add(node.value)

        def enter_enum_value(self, node: EnumValueNode, *_: Any) -> None:
            # A bare word where a string belongs (value: S3cr3t) is echoed as it was written.
            numbers.add(node.value)

    try:
        visit(parse(body["query"], max_tokens=graphql_limits.MAX_TOKENS), Literals())
    except GraphQLError:
        pass  # a document that does not parse is answered with a syntax error, which quotes no literal
    # A block string ("""...""") prints on several lines, and inside an object or a list
    # graphql-core's printer indents each of them: its lines are matched whatever the indent.
    patterns = [(text, re.compile(r"\n *".join(re.escape(line) for line in text.split("\n"))), masked)
                for text, masked in quoted.items()]
    patterns += [(text, re.compile(rf"(?<![\w.]){re.escape(text)}(?![\w.])"), MASK) for text in numbers]
    return [(pattern, masked) for _, pattern, masked in sorted(patterns, key=lambda found: -len(found[0]))]


class _OurFailures(logging.LoggerAdapter):
    """What ariadne logs for each error, narrowed to failures of our own code: by path and
    exception, with the traceback (no variable values), never the request. Errors in a request
    (syntax, unknown fields, bad variables, our refusals) are its client's to read in the answer,
    and their messages and document excerpts may quote a secret the request carried."""

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        original = getattr(msg, "original_error", None)
        if original is None or isinstance(original, GraphQLError) or refusal_status(original) is not None:
            return
        path = ".".join(str(p) for p in (getattr(msg, "path", None) or []))
        logger.error("GraphQL {} failed: {}", path or "request",
                     "".join(traceback.format_exception(type(original), original, original.__traceback__)))


_OUR_FAILURES = _OurFailures(logging.getLogger("ariadne"), {})
