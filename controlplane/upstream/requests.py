"""An upstream execution request, as DataHub's GraphQL answers it, made into our execution's
input (DataHub's dataHubExecutionRequestInput, checked with DataHub's own class), or refused
with the reason code and message DataHub's UI will show in the run's FAILURE.

A request is refused here for what no executor could run: an id that cannot be ours, a task we
do not know, a recipe that is neither YAML nor JSON or has no source type, extraArgs that do not
parse (extra_env_vars, extra_pip_requirements) or carry a weight or memory limit the executor
would refuse. Refusing here, not on the executor, keeps a bad request off the queue.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datahub.metadata.schema_classes import ExecutionRequestInputClass

from vocabulary import ids, statuses as S
from vocabulary.tasks import RUN_INGEST, TASKS, TEST_CONNECTION

from ..errors import Invalid
from ..sources import check_extra_args, parse_recipe


@dataclass(frozen=True)
class Refusal:
    reason: str  # one of vocabulary.statuses' reason codes
    message: str


# The three below read a page's requests before any check of them, so they take any shape DataHub
# (or whatever answers in its place) sends: a null entry or an input that is not an object raised
# here, and every scan then stopped at that page, so nothing on it or behind it was ever taken.
# Such a request names no request id and no executor: no pool of ours touches it.
def request_id(request: Any) -> str:
    if not isinstance(request, dict):
        return ""
    return str(request.get("id") or str(request.get("urn", "")).rsplit(":", 1)[-1])


def executor_id_of(request: Any) -> str:
    """The executor REQUEST is for (DataHub's "default" when its input names none); "" where its
    input is not an object, which no pool is."""
    if not isinstance(request, dict):
        return ""
    given = request.get("input")
    if given is None:
        return "default"
    if not isinstance(given, dict):
        return ""
    return str(given.get("executorId") or "default")


def requested_at(request: Any) -> int:
    given = request.get("input") if isinstance(request, dict) else None
    value = given.get("requestedAt") if isinstance(given, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def as_input(request: dict[str, Any]) -> dict[str, Any] | Refusal:
    """Our dataHubExecutionRequestInput for REQUEST, or why it cannot run. A request that breaks a
    check in a way no check foresaw (extraArgs nested past the recursion limit) is refused too:
    raised, it would stop every scan at the same request, and none behind it would be taken."""
    try:
        return _checked_input(request)
    except Exception as exc:
        return Refusal(S.INVALID_ARGUMENTS, f"the request could not be checked ({type(exc).__name__})")


def _checked_input(request: dict[str, Any]) -> dict[str, Any] | Refusal:
    try:
        ids.execution_id(request_id(request))
    except ids.InvalidId as exc:
        return Refusal(S.INVALID_ARGUMENTS, f"the request's id cannot be run here: {exc}")
    given = request.get("input") or {}
    task = given.get("task")
    if not isinstance(task, str) or task not in TASKS:
        return Refusal(S.UNKNOWN_TASK, f"task {str(task)[:60]!r} is not one of {', '.join(sorted(TASKS))}")
    arguments = given.get("arguments") or []
    if not isinstance(arguments, list) or not all(isinstance(a, dict) and isinstance(a.get("key"), str)
                                                  for a in arguments):
        return Refusal(S.INVALID_ARGUMENTS, "the request's arguments are not key/value pairs")
    args = {a["key"]: str(a.get("value") if a.get("value") is not None else "") for a in arguments}
    try:
        if task in (RUN_INGEST, TEST_CONNECTION):
            parse_recipe(args.get("recipe"))
    except Invalid as exc:
        return Refusal(S.INVALID_RECIPE, str(exc))
    try:
        check_extra_args(args)
    except Invalid as exc:
        return Refusal(S.INVALID_ARGUMENTS, str(exc))
    source = given.get("source") or {}
    value: dict[str, Any] = {"task": task, "args": args, "executorId": executor_id_of(request),
                             "source": {"type": str(source.get("type") or "MANUAL_INGESTION_SOURCE")},
                             "requestedAt": requested_at(request)}
    if source.get("ingestionSource"):
        value["source"]["ingestionSource"] = str(source["ingestionSource"])
    if given.get("actorUrn"):
        value["actorUrn"] = str(given["actorUrn"])
    try:
        valid = ExecutionRequestInputClass.from_obj(value).validate()
    except Exception:  # DataHub's classes raise on a malformed urn
        valid = False
    if not valid:
        return Refusal(S.INVALID_ARGUMENTS, "the request does not make a valid dataHubExecutionRequestInput")
    return value
