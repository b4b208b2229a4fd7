"""Turns a claimed task into the command, environment and stdin of a confined child.

RUN_INGEST runs `<venv>/bin/datahub ingest run -c -` with a JSON envelope on stdin
({"__recipe_yaml__", "__secrets__", "__report_out_file__", "__debug_mode__"}, acryl-datahub
>= 1.5.0.15): the recipe and the secrets never touch the disk or argv, and the CLI substitutes
${NAME} itself. TEST_CONNECTION adds --test-source-connection. RUN_MONITOR is a volume check
on the monitors ledger: the source runs in preview, dry-run mode (no sink writes) and the
result says whether it produced workunits.

The child's environment is built from scratch: it never inherits the executor's own
credentials (DATAHUB_GMS_TOKEN, AWS keys). Each task gets a private scratch directory, its
HOME and TMPDIR, removed by cleanup().
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from loguru import logger

from vocabulary import ids, json_text, pip_requirements, statuses as S
from vocabulary.memory_limit import InvalidMemoryLimit, parse_memory_limit_kb
from vocabulary.safe_yaml import YamlRefused, load_bounded
from vocabulary.tasks import RUN_MONITOR, TEST_CONNECTION, UnknownTask, task_class

from ..text import printable
from . import network_env
from .masking import Masker
from .rejection import TaskRejected
from .secrets import ChainedSecretStore, SecretError, find_secret_references
from .venvs import VenvCache, plugins_for

# libyaml's emitter when PyYAML has it (4x faster than the pure-Python one, same text).
SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# An ingestion report is a few hundred KB; past this it is not read (datahub_aspects ships at most
# 4M characters of it, compact: an indented file may be larger on disk than what it ships).
REPORT_READ_MAX_BYTES = 8 << 20
# Nor past this many values: parsed and masked in the master's own memory, 16 MiB of `[],[],...`
# took ~800 MiB and 20 s of CPU. A real report holds a few thousand.
REPORT_MAX_VALUES = 500_000
# Variables of the source's extra env that steer the executor and are not passed to the task.
EXECUTOR_VARIABLES = {"EXECUTOR_TASK_WEIGHT", "EXECUTOR_TASK_MEMORY_LIMIT"}
# The executor sets these for the task itself (the GMS address and the run's own ingest token).
FORBIDDEN_TASK_VARIABLES = re.compile(r"^(DATAHUB_GMS_TOKEN|DATAHUB_GMS_URL|DATAHUB_GMS_HOST|DATAHUB_GMS_PORT|"
                                      r"DATAHUB_EXECUTOR_.*|LD_PRELOAD|LD_LIBRARY_PATH)$")


def is_true(value: Any) -> bool:
    """DataHub's arguments are strings: "false" must not be true."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


@dataclass
class PreparedTask:
    argv: list[str]
    env: dict[str, str]
    stdin_bytes: bytes
    workdir: str
    masker: Masker
    report_path: str
    memory_limit_bytes: int | None
    secret_names: list[str] = field(default_factory=list)
    release_venv: Callable[[], None] | None = None  # the venv is held, never evicted, until then
    _cleaned: bool = field(default=False, init=False, repr=False)

    def structured_report(self) -> Any:
        """The ingestion report, when the pipeline completed and wrote one (never for a killed
        run), with every form of every secret masked: a source that puts a password into a
        warning must not ship it. Same JSON structure (Masker.mask_json); a report too deeply
        nested to parse or mask, or with more values than REPORT_MAX_VALUES, is no report."""
        data = read_task_file(self.report_path, REPORT_READ_MAX_BYTES)
        if data is None:
            return None
        if data.count(b",") + data.count(b"[") + data.count(b"{") > REPORT_MAX_VALUES:  # about one per value
            return None
        try:
            return self.masker.mask_json(json_text.loads(data.decode("utf-8", errors="replace")))
        except (ValueError, RecursionError):
            return None

    def cleanup(self) -> None:
        """The work directory removed and the venv let go, once. Once only: the execution's
        directory is named by its id, and after a release a new run of it may be in it already."""
        if self._cleaned:
            return
        self._cleaned = True
        remove_work_dir(self.workdir)
        release, self.release_venv = self.release_venv, None
        if release is not None:
            release()


def remove_work_dir(workdir: str) -> None:
    """WORKDIR and everything in it. rmtree needs a descriptor for each level, and out of them
    (EMFILE: what failed a task's log or start fails its cleanup too) it removed nothing, so the
    directory of a task that never ran stayed for good. That one holds only its empty tmp, and
    rmdir needs no descriptor: it goes. What still cannot go is said, not left unsaid."""
    failures: list[BaseException] = []
    shutil.rmtree(workdir, onerror=lambda _function, _path, info: failures.append(info[1]))
    if not os.path.lexists(workdir):
        return
    for path in (os.path.join(workdir, "tmp"), workdir):
        try:
            os.rmdir(path)
        except OSError:
            pass
    if os.path.lexists(workdir):
        why = next((os.strerror(f.errno) for f in failures if isinstance(f, OSError) and f.errno), "unknown")
        logger.warning("work directory {} not removed ({}); nothing removes it later: remove it by hand",
                       workdir, why)


def read_task_file(path: str, max_bytes: int) -> bytes | None:
    """The bytes of a file the task wrote, read by the (root) executor without trusting the
    task: the name may have been swapped for a link to a file only root may read (the
    executor's environment, its token), for a FIFO that blocks the reader, or for /dev/zero that
    never ends. Only a regular file, not a link, not linked elsewhere, up to MAX_BYTES, is read;
    anything else is None, and the executor's log says why."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # no report: the run did not get that far
            logger.warning("task file {} not read: {}", os.path.basename(path), os.strerror(exc.errno or 0))
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            logger.warning("task file {} not read: not a regular file of the task's own",
                           os.path.basename(path))
            return None
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        logger.warning("task file {} not read: over {} bytes", os.path.basename(path), max_bytes)
        return None
    return data


def parse_recipe(text: Any) -> dict:
    if not isinstance(text, str) or not text.strip():
        raise TaskRejected("INVALID_RECIPE", "the task has no recipe")
    try:
        recipe = load_bounded(text)
    except YamlRefused as exc:
        raise TaskRejected("INVALID_RECIPE", f"the recipe is refused: {exc}") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("source"), dict) or "type" not in recipe["source"]:
        raise TaskRejected("INVALID_RECIPE", "the recipe needs a source section with a type")
    # The plugins to install are read from these before the CLI ever sees the recipe.
    if recipe.get("sink") is not None and not isinstance(recipe["sink"], dict):
        raise TaskRejected("INVALID_RECIPE", "the recipe's sink section is not a mapping (type: ..., config: ...)")
    for section in ("source", "sink"):
        given = recipe.get(section) or {}
        if "type" in given and not (isinstance(given["type"], str) and given["type"]):
            raise TaskRejected("INVALID_RECIPE", f"the recipe's {section} type is not a name such as mysql")
    return recipe


def extra_env_of(args: dict) -> dict[str, str]:
    extra = args.get("extra_env_vars") or {}
    if isinstance(extra, str):
        try:
            extra = json_text.loads(extra)
        except ValueError:
            raise TaskRejected("INVALID_ARGUMENTS", "extra_env_vars is not a JSON object") from None
    if not isinstance(extra, dict):
        raise TaskRejected("INVALID_ARGUMENTS", "extra_env_vars is not a JSON object")
    clean = {str(k): str(v) for k, v in extra.items()}
    for key, value in clean.items():
        # What execve cannot carry: an empty name, '=' in a name, NUL anywhere. Refused here, as
        # the task's own fault; the spawner would otherwise fail on it after the claim.
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise TaskRejected("INVALID_ARGUMENTS", f"extra environment variable {printable(key)!r} cannot be passed to "
                                                    "a process: names must be non-empty without '=' or NUL, values "
                                                    "without NUL")
        try:
            (key + value).encode("utf-8")
        except UnicodeEncodeError:
            raise TaskRejected("INVALID_ARGUMENTS", f"extra environment variable {key.encode('utf-8', 'replace')!r} "
                                                    "holds text that is not valid Unicode") from None
    return clean


def prepare_task(task: str, args: dict, *, execution_id: str, secrets: ChainedSecretStore, venvs: VenvCache,
                 work_root: str, default_version: str, gms_url: str, ingest_token: str,
                 user: Any = None, network: dict[str, str] | None = None, stop: Any = None) -> PreparedTask:
    """The task's command, environment and stdin. GMS_URL and INGEST_TOKEN are where the task's
    default `datahub-rest` sink writes, with a token that can ingest metadata for this run and
    nothing else (the control plane revokes it when the run ends). USER (a sandbox.TaskUser, the
    task's) owns the task's private work directory and builds its virtualenv; NETWORK is the proxy
    and certificate settings the task needs (network_env.for_tasks); STOP ends a wait for its
    virtualenv and kills its build (VenvCache.datahub_cli)."""
    try:
        task_class(task)
        ids.execution_id(execution_id)
    except (UnknownTask, ids.InvalidId) as exc:
        raise TaskRejected(S.UNKNOWN_TASK if isinstance(exc, UnknownTask) else S.INVALID_ARGUMENTS, str(exc)) from None
    recipe = parse_recipe(args.get("recipe"))
    extra_env = extra_env_of(args)
    try:
        memory_limit = parse_memory_limit_kb(extra_env.get("EXECUTOR_TASK_MEMORY_LIMIT"))
    except InvalidMemoryLimit as exc:
        raise TaskRejected("INVALID_MEMORY_LIMIT", str(exc)) from None
    try:
        names = find_secret_references(args["recipe"], parsed=recipe)
        values = secrets.resolve(names.required)
        values.update(secrets.resolve_present(names.optional))
    except SecretError as exc:
        raise TaskRejected(exc.reason, str(exc)) from None
    extra_requirements = args.get("extra_pip_requirements") or []
    if isinstance(extra_requirements, str):
        try:
            extra_requirements = json_text.loads(extra_requirements or "[]")
        except ValueError:
            raise TaskRejected(S.INVALID_ARGUMENTS, "extra_pip_requirements is not a JSON list") from None
    try:
        extra_requirements = pip_requirements.check(extra_requirements)
    except pip_requirements.InvalidRequirements as exc:
        raise TaskRejected(S.INVALID_ARGUMENTS, str(exc)) from None
    version = str(args.get("version") or default_version)
    cli = venvs.datahub_cli(version, plugins_for(recipe), extra_requirements, user, stop=stop)
    try:
        prepared = _prepared(task, args, recipe, execution_id=execution_id, cli=cli, values=values, extra_env=extra_env,
                             memory_limit=memory_limit, work_root=work_root, gms_url=gms_url,
                             ingest_token=ingest_token, user=user, network=network)
    except BaseException:
        venvs.release(cli)
        raise
    prepared.release_venv = lambda: venvs.release(cli)
    return prepared


def _prepared(task: str, args: dict, recipe: dict, *, execution_id: str, cli: str, values: dict[str, str],
              extra_env: dict[str, str], memory_limit: int | None, work_root: str, gms_url: str, ingest_token: str,
              user: Any, network: dict[str, str] | None) -> PreparedTask:
    """The rest of prepare_task, once the venv is held: the work directory, argv and environment.
    The directory goes again if anything after its making fails (a reserved variable refused, a
    chown): no task will run there, and nothing else would remove it."""
    workdir = work_dir_of(work_root, execution_id)
    shutil.rmtree(workdir, ignore_errors=True)  # a previous attempt's leftovers (redelivery)
    try:
        return _prepared_in(task, args, recipe, workdir, execution_id=execution_id, cli=cli, values=values,
                            extra_env=extra_env, memory_limit=memory_limit, gms_url=gms_url,
                            ingest_token=ingest_token, user=user, network=network)
    except BaseException:
        remove_work_dir(workdir)
        raise


def work_dir_of(work_root: str, execution_id: str) -> str:
    """The execution's own directory under WORK_ROOT/executions (TaskRejected if the id would
    name anything else)."""
    executions_root = os.path.realpath(os.path.join(work_root, "executions"))
    workdir = os.path.join(executions_root, execution_id)
    if os.path.dirname(os.path.realpath(workdir)) != executions_root:
        raise TaskRejected(S.INVALID_ARGUMENTS, f"execution id {execution_id!r} does not name a directory under "
                                                f"{executions_root}")
    return workdir


def _prepared_in(task: str, args: dict, recipe: dict, workdir: str, *, execution_id: str, cli: str,
                 values: dict[str, str], extra_env: dict[str, str], memory_limit: int | None, gms_url: str,
                 ingest_token: str, user: Any, network: dict[str, str] | None) -> PreparedTask:
    executions_root = os.path.dirname(workdir)
    os.makedirs(executions_root, mode=0o711, exist_ok=True)  # tasks reach their own directory, list none
    os.chmod(executions_root, 0o711)
    os.makedirs(os.path.join(workdir, "tmp"), mode=0o700)
    os.chmod(workdir, 0o700)
    if user is not None:
        for path in (workdir, os.path.join(workdir, "tmp")):
            os.chown(path, user.uid, user.gid)
    report_path = os.path.join(workdir, "ingestion_report.json")
    recipe.setdefault("run_id", execution_id)
    envelope = {
        "__recipe_yaml__": yaml.dump(recipe, Dumper=SAFE_DUMPER, sort_keys=False),
        "__secrets__": values,
        "__report_out_file__": report_path,
        "__debug_mode__": is_true(args.get("debug_mode")),
    }
    argv = [cli]
    if is_true(args.get("debug_mode")):
        argv.append("--debug")
    # --report-to FILE alone: the file reporter takes the default (datahub) reporter's place.
    # --no-default-report would also drop the file (the CLI sets report_to to None).
    argv += ["ingest", "run", "-c", "-", "--report-to", report_path, "--no-spinner"]
    if task == TEST_CONNECTION:
        argv.append("--test-source-connection")
    elif task == RUN_MONITOR:
        argv += ["--dry-run", "--preview", "--preview-workunits", "100"]

    env = {
        **(network or {}),
        "PATH": f"{os.path.dirname(cli)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": os.path.join(workdir, "tmp"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "DATAHUB_TELEMETRY_ENABLED": "false",
        "DATAHUB_EXECUTION_ID": execution_id,
        "DATAHUB_GMS_URL": gms_url,
        "DATAHUB_GMS_TOKEN": ingest_token,
    }
    for key, value in extra_env.items():
        if key in EXECUTOR_VARIABLES:
            continue
        if FORBIDDEN_TASK_VARIABLES.match(key):
            raise TaskRejected("INVALID_ARGUMENTS", f"extra environment variable {key} is reserved for the executor")
        env[key] = value
    return PreparedTask(argv=argv, env=env, stdin_bytes=json.dumps(envelope).encode(), workdir=workdir,
                        masker=Masker([*values.values(), *network_env.credentials(network or {})], tokens=[ingest_token]),
                        report_path=report_path,
                        memory_limit_bytes=memory_limit, secret_names=list(values))
