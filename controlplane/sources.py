"""Ingestion sources: `dataHubIngestionSource` entities with their `dataHubIngestionSourceInfo`.

What DataHub lets through and a run would fail on late is refused when the source is saved:
a recipe that does not parse (bounded, see vocabulary/safe_yaml.py), has no source type, or
whose sink is no mapping or whose source or sink type is no name (the executor refuses those), an
executorId no pool could have (or `default` with no default pool; an id that names no pool here
is an executor elsewhere's, as in DataHub), extra environment variables that are not variable names or
whose EXECUTOR_TASK_WEIGHT / EXECUTOR_TASK_MEMORY_LIMIT the executor would refuse, and a CLI
version or a source or sink type no virtualenv could be built for (vocabulary/cli_versions.py).
The per-run settings live where DataHub's UI puts them: `config.extraArgs` ("extra_env_vars" as
a JSON object, "extra_pip_requirements" as a JSON list). A source of DataHub's CLI (executorId
`__datahub_cli_`, written by `datahub ingest`'s default reporter) is stored as it comes: no
executor runs it.
"""
from __future__ import annotations

import json
import re
import uuid
from typing import Any

from vocabulary import cli_versions, json_text, pip_requirements
from vocabulary.memory_limit import InvalidMemoryLimit, parse_memory_limit_kb
from vocabulary.safe_yaml import YamlRefused, load_bounded
from vocabulary.weights import FULL, InvalidWeight, parse_weight

from . import entities as E
from .errors import Invalid, NotFound
from .json_input import check_storable
from .metadata import aspect_store
from .pools import DATAHUB_CLI_EXECUTOR_ID, Pools
from .store import Store

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def parse_recipe(text: Any) -> dict[str, Any]:
    """A recipe as YAML or JSON text, refused (Invalid) unless it has a source with a type."""
    if not isinstance(text, str) or not text.strip():
        raise Invalid("recipe must be non-empty YAML or JSON text")
    try:
        recipe = load_bounded(text)
    except YamlRefused as exc:
        raise Invalid(f"recipe is refused: {exc}") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("source"), dict) or "type" not in recipe["source"]:
        raise Invalid("recipe must be a mapping with a source: {type: ..., config: ...} section")
    check_sections(recipe)
    check_storable(recipe, "/recipe")
    return recipe


def with_pipeline_name(text: str, name: str) -> str:
    """The recipe TEXT with NAME as its pipeline_name where it names none (absent, null or ""),
    as DataHub's IngestionUtils.injectPipelineName gives a run the source's urn: stateful
    ingestion keeps its checkpoints under the pipeline's name, and acryl-datahub refuses a
    recipe that turns it on without one. A JSON recipe gets the name as DataHub adds it (the
    JSON written again); a YAML one a line at its end, kept only if the text still reads as the
    same recipe with the name, else (a flow-style document) the recipe written as JSON. A YAML
    recipe whose pipeline_name is there but empty is left as it is (a second key would be the
    line's), and so is one that cannot be read: the run says why."""
    try:
        recipe = load_bounded(text)
    except YamlRefused:
        return text
    if not isinstance(recipe, dict) or recipe.get("pipeline_name") not in (None, ""):
        return text
    try:
        as_json = json.loads(text)
    except ValueError:
        as_json = None
    if isinstance(as_json, dict):
        return json.dumps({**as_json, "pipeline_name": name})
    if "pipeline_name" in recipe:
        return text
    named = f"{text.rstrip()}\npipeline_name: {json.dumps(name)}\n"
    try:
        if load_bounded(named) == {**recipe, "pipeline_name": name}:
            return named
    except YamlRefused:
        pass
    try:
        return json.dumps({**recipe, "pipeline_name": name})
    except (TypeError, ValueError):  # a YAML date, say: no JSON for it
        return text


def check_sections(recipe: dict[str, Any]) -> None:
    """Refuse the source and sink sections the executor refuses at run time (INVALID_RECIPE,
    executor/runtime/tasks.py parse_recipe): it reads the plugins to install from them before the
    CLI sees the recipe, so a sink that is no mapping, or a type that is no name, would be saved
    here and fail every run."""
    if recipe.get("sink") is not None and not isinstance(recipe["sink"], dict):
        raise Invalid(f"the recipe's sink section must be a mapping (sink: {{type: ..., config: ...}}), "
                      f"not {type(recipe['sink']).__name__}")
    for section in ("source", "sink"):
        given = recipe.get(section) or {}
        if "type" in given and not (isinstance(given["type"], str) and given["type"]):
            raise Invalid(f"the recipe's {section} type must be a plugin name such as mysql or a class (a.b.Source), "
                          f"not {str(given['type'])[:60]!r}")


def extra_args(info: dict[str, Any]) -> dict[str, str]:
    return dict(info.get("config", {}).get("extraArgs") or {})


def extra_env(info: dict[str, Any]) -> dict[str, str]:
    raw = extra_args(info).get("extra_env_vars")
    return json_text.loads(raw) if raw else {}


# Arguments a run's input takes from the source's config: an extraArgs entry of that name would
# replace the checked value in every run (DataHub merges extraArgs last), unchecked.
CONFIG_ARGUMENTS = ("recipe", "version", "debug_mode")


def check_extra_args(args: dict[str, str]) -> list[str]:
    """Refuse extra arguments a run would fail on; returns the extra pip requirements (checked)."""
    if "extra_env_vars" in args:
        try:
            env = json_text.loads(args["extra_env_vars"])
        except ValueError:
            raise Invalid("extraArgs.extra_env_vars must be a JSON object of NAME: value strings") from None
        if not isinstance(env, dict):
            raise Invalid("extraArgs.extra_env_vars must be a JSON object of NAME: value strings")
        check_storable(env, "/extraArgs/extra_env_vars")
        for name, value in env.items():
            if not ENV_NAME.match(name):
                raise Invalid(f"extra environment variable name {name[:60]!r} is not a valid variable name")
            if not isinstance(value, str):
                raise Invalid(f"extra environment variable {name} must be a string")
        try:
            parse_weight(env.get("EXECUTOR_TASK_WEIGHT"), FULL)
            parse_memory_limit_kb(env.get("EXECUTOR_TASK_MEMORY_LIMIT"))
        except (InvalidWeight, InvalidMemoryLimit) as exc:
            raise Invalid(str(exc)) from None
    if "extra_pip_requirements" not in args:
        return []
    try:
        requirements = json_text.loads(args["extra_pip_requirements"])
    except ValueError:
        requirements = None
    try:
        return pip_requirements.check(requirements)
    except pip_requirements.InvalidRequirements as exc:
        raise Invalid(f"extraArgs.{exc}") from None


def check_cli(version: Any, recipe: dict[str, Any], requirements: list[str]) -> None:
    """Refuse a version, or a recipe's source or sink type, the executor could build no venv for.
    No version means the executor's default, which only the executor knows."""
    try:
        cli_versions.plugins_for(recipe)
        if version is None or version == "":
            return
        if not isinstance(version, str):
            raise Invalid("config.version must be a string")
        cli_versions.check_version(version, requirements)
    except (cli_versions.InvalidPlugin, cli_versions.InvalidVersion) as exc:
        raise Invalid(str(exc)) from None


class Sources:
    def __init__(self, store: Store, pools: Pools) -> None:
        self.store = store
        self.pools = pools

    def check_info(self, info: dict[str, Any]) -> None:
        """Refuse what a run would fail on (called before any source info is stored)."""
        if not (info.get("name") or "").strip() or len(info["name"]) > 200:
            raise Invalid("name must be 1-200 characters")
        if self.pools.resolve(info.get("config", {}).get("executorId")) == DATAHUB_CLI_EXECUTOR_ID:
            # `datahub ingest` booking a run it made itself (its default reporter), in the batch
            # of that run's metadata: there is no run of ours to fail, and its recipe is what
            # the CLI ran, redacted, or "" (report_recipe: false). Refused, the batch went with it.
            return
        recipe = parse_recipe(info.get("config", {}).get("recipe"))
        if info.get("type") and recipe["source"]["type"] != info["type"]:
            raise Invalid(f"type {info['type']!r} does not match the recipe's source type {recipe['source']['type']!r}")
        args = extra_args(info)
        taken = [name for name in CONFIG_ARGUMENTS if name in args]
        if taken:
            raise Invalid(f"extraArgs may not set {', '.join(taken)}: set config.recipe, config.version or "
                          "config.debugMode instead, which are checked when the source is saved")
        requirements = check_extra_args(args)
        check_cli(info.get("config", {}).get("version"), recipe, requirements)

    @staticmethod
    def check_type(recipe: str) -> str:
        """The source type a recipe names (Invalid when it names none)."""
        return str(parse_recipe(recipe)["source"]["type"])

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    @staticmethod
    def check_id(source_id: str) -> str:
        if not SOURCE_ID.match(source_id or ""):
            raise Invalid(f"source id {source_id[:60]!r} must be 1-200 letters, digits, '.', '_' or '-'")
        return source_id

    def get(self, ref: str) -> dict[str, Any]:
        """A source by urn, id or (unambiguous) name."""
        with self.store.read() as db:
            key = E.key_of(ref, E.SOURCE)
            stored = aspect_store.get(db, E.source_urn(key), E.SOURCE_INFO)
            if stored is None:
                named = [s for s in aspect_store.latest_of_type(db, E.SOURCE, E.SOURCE_INFO) if s.value.get("name") == ref]
                if len(named) > 1:
                    raise Invalid(f"{len(named)} sources are named {ref!r}; give the urn")
                stored = named[0] if named else None
        if stored is None:
            raise NotFound(f"source {ref} not found")
        return self._view(stored)

    def list(self) -> list[dict[str, Any]]:
        with self.store.read() as db:
            rows = aspect_store.latest_of_type(db, E.SOURCE, E.SOURCE_INFO)
        return sorted((self._view(s) for s in rows), key=lambda s: (s["name"].lower(), s["urn"]))

    @staticmethod
    def _view(stored: aspect_store.StoredAspect) -> dict[str, Any]:
        return {"urn": stored.urn, "id": E.key_of(stored.urn, E.SOURCE), "name": stored.value.get("name", ""),
                "type": stored.value.get("type"), "info": stored.value}
