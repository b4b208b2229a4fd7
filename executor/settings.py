"""The one definition of every executor setting: environment name, type, default, docs.

Validation at start-up, the generated table in docs/settings.md (`python -m executor.settings
--table`) and the CLI's help all come from SETTINGS. Every error names the setting and the fix,
on one line, because operators read it in a container log at 3 a.m.

Precedence: explicit overrides (CLI flags) > process environment > environment file > default.
"""
from __future__ import annotations

import difflib
import math

import os
import re
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlparse

from sandbox.sizes import parse_size
from vocabulary import ids
from vocabulary.cli_versions import check_version
from vocabulary.message import MAX_VISIBILITY_S
from vocabulary.tasks import INGESTION, MONITORS

from .runtime.secrets import AwsSecretReference, parse_aws_secrets


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it and says how to fix it."""


def _text(value: str) -> str:
    return value.strip()


class _RefusedWithoutValue(ValueError):
    """A refusal whose message never contains the value: the one kind shown for a secret setting."""


def _token(value: str) -> str:
    """A bearer token is one word of visible ASCII (RFC 6750's b64token; DataHub's JWTs and our
    dhx_ tokens). One pasted with a line break, or two tokens side by side, used to reach the HTTP
    client, whose refusal of the header printed it (a traceback from `run`)."""
    token = value.strip()
    if any(c in "\r\n" for c in token):
        raise _RefusedWithoutValue("it holds a line break: a token is one line; copy it again, whole")
    if any(c.isspace() for c in token):
        raise _RefusedWithoutValue("it holds a space or tab: a token is one word; set the token alone")
    if not all("!" <= c <= "~" for c in token):
        raise _RefusedWithoutValue("it holds a control or non-ASCII character: a token is visible ASCII; copy it again")
    return token


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise ValueError(f"{number} must be at least 1")
    return number


# The most a cgroup's pids.max takes: the kernel's PID_MAX_LIMIT on 64-bit kernels (pids.max
# refuses it and more with ERANGE or EINVAL).
MAX_TASK_PIDS = 4 * 1024 * 1024


def _task_pids(value: str) -> int:
    """As _positive_int, at most MAX_TASK_PIDS: a larger limit passed the start, and every task's
    sandbox then failed writing it (SANDBOX_ERROR), with the executor ONLINE and taking work."""
    number = _positive_int(value)
    if number > MAX_TASK_PIDS:
        raise ValueError(f"{number} is over {MAX_TASK_PIDS}, the most a cgroup's pids.max takes")
    return number


def _heartbeat_seconds(value: str) -> float:
    """As _seconds, at most an hour: the control plane refuses a longer interval (HTTP 400), and
    the executor would pass `check` and then stop at registration."""
    number = _seconds(value)
    if number > 3600:
        raise ValueError(f"{number:g} is over 3600 seconds, the longest interval the control plane takes")
    return number


def _visibility_seconds(value: str) -> int:
    """A whole number of seconds SQS takes as a visibility timeout: at most 43200 (12 hours).
    Over it, every receive fails with InvalidParameterValue, which the intake takes for SQS
    being down: the executor would take no work and blame the network."""
    number = _positive_int(value)
    if number > MAX_VISIBILITY_S:
        raise ValueError(f"{number} is over {MAX_VISIBILITY_S} seconds, the longest visibility timeout SQS takes")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(number) or number <= 0:  # nan, inf: every wait on them raises or never ends
        raise ValueError(f"{value!r} must be a finite number of seconds, greater than zero")
    if number > threading.TIMEOUT_MAX:
        # A wait on it raises OverflowError: 1e10 passed here, and killed the loop that first waited on it.
        raise ValueError(f"{value!r} is over {threading.TIMEOUT_MAX:.0f} seconds, the longest wait this platform takes")
    return number


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def _size(value: str) -> int:
    return parse_size(value)


def _http_url(value: str, example: str) -> tuple[str, str]:
    """VALUE as an http(s) URL with a host and, if it names one, a port in range, and its path.
    The HTTP client and boto3 refused the others at their first call, in a traceback."""
    url = value.strip().rstrip("/")
    try:
        parsed = urlparse(url)
    except ValueError:  # an unclosed IPv6 bracket
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL (e.g. {example})")
    if not parsed.hostname:
        raise ValueError(f"{value!r} names no host (e.g. {example})")
    try:
        port = parsed.port  # raises for one that is not a number from 0 to 65535
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{value!r} has a port that is not a number from 1 to 65535 (e.g. {example})")
    return url, parsed.path


def _gms_url(value: str) -> str:
    url, path = _http_url(value, "https://<your-company>.acryl.io/gms")
    if not path.endswith("/gms"):
        raise ValueError(f"{value!r} must end in /gms (e.g. https://<your-company>.acryl.io/gms)")
    return url


def _endpoint_url(value: str) -> str:
    return _http_url(value, "https://vpce-<id>.sqs.<region>.vpce.amazonaws.com, http://127.0.0.1:4566")[0]


def _identifier(value: str) -> str:
    text = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", text):
        raise ValueError(f"{value!r} is not a valid identifier (letters, digits, '.', '_', '-'; 1 to 128 characters)")
    return text


def _host_port(value: str) -> tuple[str, int]:
    """HOST:PORT, an IPv6 host in brackets ([::]:9087, as in a URL); the host comes back bare."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9087, [::]:9087; port 0 picks a free one)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: an IPv6 address is written in brackets, as [{host}]:{port}")
    return host, int(port)


def _aws_secrets(value: str) -> tuple[AwsSecretReference, ...]:
    references = parse_aws_secrets(value)
    own = {s.env for s in SETTINGS} & {r.name for r in references}
    if own:
        # A recipe's ${DATAHUB_GMS_TOKEN:-...} means the task's own value: a secret of that name would
        # replace it. (AWS credential names are allowed: the environment never serves them, this store does.)
        raise ValueError(f"{', '.join(sorted(own))} is the executor's own setting, not a recipe secret: "
                         "use another NAME")
    return references


def _s3_bucket(value: str) -> str:
    """A bucket's name (or an access point's ARN), as botocore takes it. A URL (s3://bucket/prefix)
    passed here, and botocore then refused every task's log before sending it: each run's full
    log was lost, with a warning."""
    bucket = value.strip()
    if bucket.startswith("arn:") or re.fullmatch(r"[A-Za-z0-9._-]{1,255}", bucket):
        return bucket
    raise ValueError(f"{value!r} is not an S3 bucket name: name the bucket alone (e.g. my-executor-logs), without "
                     "s3:// or a path")


def _cli_version(value: str) -> str:
    """A version a recipe naming none can run with: checked as the executor checks a task's own
    before its build. Free text passed `check` and then failed every such recipe at run time."""
    version = value.strip()
    check_version(version)
    return version


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"{value!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    return level


def _sandbox_mode(value: str) -> str:
    mode = value.strip()
    if mode not in ("auto", "cgroup-v2", "cgroup-v1", "none"):
        raise ValueError(f"{value!r} is not a sandbox mode (auto, cgroup-v2, cgroup-v1, none)")
    return mode


@dataclass(frozen=True)
class Setting:
    env: str
    attr: str
    parse: Callable[[str], Any]
    default: str | None
    doc: str
    required: bool = False
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("DATAHUB_GMS_URL", "gms_url", _gms_url, None,
            "DataHub base URL, including the trailing /gms.", required=True),
    Setting("DATAHUB_GMS_TOKEN", "gms_token", _token, None,
            "Remote Executor access token (Settings > Access Tokens > Remote Executor). Never logged.",
            required=True, secret=True),
    # The vocabulary's rule and message, as the control plane, the Helm chart and the CloudFormation
    # template apply them. Not stripped: " remote" is not the pool "remote" (nor would the chart or
    # the template accept it).
    Setting("DATAHUB_EXECUTOR_POOL_ID", "pool_id", ids.pool_id, None,
            f"The executor pool to take tasks from; {ids.POOL_ID_RULE}.", required=True),
    Setting("DATAHUB_EXECUTOR_ID", "executor_id", _identifier, None,
            "This executor process's identity; defaults to the host name and a random suffix, new at every "
            "start. A second live process with the same id is refused."),
    Setting("DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS", "ingestion_max_workers", _positive_int, "4",
            "Concurrent ingestion tasks at default weight (each weighs 1/this)."),
    Setting("DATAHUB_EXECUTOR_MONITORS_MAX_WORKERS", "monitors_max_workers", _positive_int, "10",
            "Concurrent monitor tasks at default weight (a separate ledger)."),
    Setting("DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR", "file_secret_basedir", _text, "/mnt/secrets",
            "Directory of file secrets, one file per secret name; re-read on every task."),
    Setting("DATAHUB_EXECUTOR_FILE_SECRET_MAXLEN", "file_secret_maxlen", _size, "1048576",
            "Largest secret file accepted, in bytes (suffixes K, M accepted)."),
    Setting("DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER", "aws_secrets_manager", _bool, "false",
            "Also resolve ${NAME} from AWS Secrets Manager, by secret name, after files and environment."),
    Setting("DATAHUB_EXECUTOR_AWS_SECRETS", "aws_secrets", _aws_secrets, None,
            "Recipe secrets from AWS Secrets Manager for executors not on ECS, in ECS's form: NAME=ARN, "
            "comma-separated, each a full secret ARN, optionally with :JSON_KEY:VERSION_STAGE:VERSION_ID (e.g. "
            "DB_PASSWORD=ARN:password::). ${NAME} is the secret's text or that key's value, read for every task, "
            "after files and environment and before the lookup by name."),
    Setting("DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL", "heartbeat_interval_s", _heartbeat_seconds, "15",
            "Seconds between heartbeats; the control plane judges liveness by it."),
    Setting("DATAHUB_EXECUTOR_PROGRESS_INTERVAL", "progress_interval_s", _seconds, "3",
            "Seconds between progress reports (log tail, cancel check) of a running task, and between cancel "
            "checks of claimed tasks not yet started."),
    Setting("DATAHUB_EXECUTOR_DRAIN_TIMEOUT", "drain_timeout_s", _seconds, "300",
            "On SIGTERM, how long running tasks may take to finish before they are killed and reported ABORTED."),
    Setting("DATAHUB_EXECUTOR_CANCEL_GRACE", "cancel_grace_s", _seconds, "60",
            "Seconds between SIGTERM and SIGKILL when a task is cancelled."),
    Setting("DATAHUB_EXECUTOR_TASK_TIMEOUT", "task_timeout_s", _seconds, "86400",
            "Longest a task may run before it ends as TIMEOUT."),
    Setting("DATAHUB_EXECUTOR_TASK_PIDS_MAX", "task_pids_max", _task_pids, "4096",
            f"Most processes and threads one task may have at once (cgroup pids.max, at most {MAX_TASK_PIDS}); stops "
            "a fork bomb."),
    Setting("DATAHUB_EXECUTOR_TASK_USER", "task_user", _text, "datahub-task",
            "The unprivileged user tasks run as (a name or UID[:GID]), never the executor's own; FIRST-LAST (e.g. "
            "3000000-3000031, uids no account or group has) gives each running task a uid and group of its own, so "
            "tasks cannot read each other's environment or files either (each task class keeps its ledger's size of "
            "the range, so monitors never wait for ingestion's uids); `none` runs them as the executor's user. "
            "An unprivileged executor (a container) cannot switch, and says so."),
    Setting("DATAHUB_EXECUTOR_TASK_PRIVATE_TMP", "task_private_tmp", _bool, "true",
            "Give each task its own /tmp, /var/tmp and /dev/shm (and a read-only cgroup filesystem), gone with it; "
            "needs a root executor."),
    Setting("DATAHUB_EXECUTOR_TASK_PYTHON", "task_python", _text, None,
            "The Python interpreter task virtualenvs are built with; the executor's own when unset. It must be "
            "readable by the task user."),
    Setting("DATAHUB_EXECUTOR_SANDBOX_MODE", "sandbox_mode", _sandbox_mode, "auto",
            "Confinement: auto, cgroup-v2, cgroup-v1 or none (best effort, no cgroups)."),
    Setting("DATAHUB_EXECUTOR_CGROUP_ROOT", "cgroup_root", _identifier, "datahub-executor",
            "Name of the cgroup, below the executor's own, that holds its task cgroups. One per executor."),
    Setting("DATAHUB_EXECUTOR_WORK_DIR", "work_dir", _text, "/var/lib/datahub-executor",
            "Per-task scratch directories and task log files."),
    Setting("DATAHUB_EXECUTOR_VENV_CACHE_DIR", "venv_cache_dir", _text, "/var/cache/datahub-executor/venvs",
            "Virtualenvs per (acryl-datahub version, plugins, extra requirements), shared between tasks."),
    Setting("DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION", "default_cli_version", _cli_version, "native",
            "acryl-datahub version for recipes that name none: native (the executor's own), latest, or a version."),
    Setting("PIP_INDEX_URL", "pip_index_url", _text, None,
            "Package index (or internal mirror) for task virtualenvs; the installer's default when unset."),
    Setting("DATAHUB_EXECUTOR_HEALTH_ADDRESS", "health_address", _host_port, "127.0.0.1:9087",
            "Where /health and /metrics listen; loopback by default."),
    Setting("DATAHUB_EXECUTOR_LOG_JSON", "log_json", _bool, "false",
            "Log JSON lines instead of human-readable ones."),
    Setting("DATAHUB_EXECUTOR_LOG_LEVEL", "log_level", _log_level, "INFO", "Log level of the executor's own log."),
    Setting("DATAHUB_EXECUTOR_LOG_S3_BUCKET", "log_s3_bucket", _s3_bucket, None,
            "Upload full task logs to this S3 bucket (its name alone, e.g. my-executor-logs) instead of the control "
            "plane."),
    Setting("DATAHUB_EXECUTOR_VISIBILITY_TIMEOUT", "visibility_timeout_s", _visibility_seconds, "60",
            "Seconds a received message stays invisible before it is extended (at most 43200, SQS's ceiling); used "
            "when the pool names none."),
    Setting("DATAHUB_EXECUTOR_SQS_ENDPOINT_URL", "sqs_endpoint_url", _endpoint_url, None,
            "Override the SQS endpoint the pool names (VPC endpoints, local testing)."),
)


@dataclass(frozen=True)
class Settings:
    gms_url: str
    gms_token: str = field(repr=False)
    pool_id: str
    executor_id: str
    ingestion_max_workers: int
    monitors_max_workers: int
    file_secret_basedir: str
    file_secret_maxlen: int
    aws_secrets_manager: bool
    aws_secrets: tuple[AwsSecretReference, ...] | None
    heartbeat_interval_s: float
    progress_interval_s: float
    drain_timeout_s: float
    cancel_grace_s: float
    task_timeout_s: float
    task_pids_max: int
    task_user: str
    task_private_tmp: bool
    task_python: str | None
    sandbox_mode: str
    cgroup_root: str
    work_dir: str
    venv_cache_dir: str
    default_cli_version: str
    pip_index_url: str | None
    health_address: tuple[str, int]
    log_json: bool
    log_level: str
    log_s3_bucket: str | None
    visibility_timeout_s: int
    sqs_endpoint_url: str | None

    def tasks_at_once(self) -> dict[str, int]:
        """How many tasks of each class run at once at the default weight (each ledger's size)."""
        return {INGESTION: self.ingestion_max_workers, MONITORS: self.monitors_max_workers}


assert {s.attr for s in SETTINGS} == {f.name for f in fields(Settings)}, "SETTINGS and Settings disagree"


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines as in a systemd EnvironmentFile; '#' comments; optional quotes."""
    values: dict[str, str] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from exc
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def environment_with_file(environ: Mapping[str, str] | None = None, *, file: str | None = None) -> dict[str, str]:
    """The environment file (--env-file) under the process environment, whose empty variables
    hide nothing of the file's: what every command reads its settings from."""
    environ = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    if file:
        sources.update(read_env_file(file))
    sources.update({k: v for k, v in environ.items() if v != ""})
    return sources


def load_settings(
    environ: Mapping[str, str] | None = None, *, file: str | None = None, overrides: Mapping[str, str] | None = None
) -> Settings:
    sources = environment_with_file(environ, file=file)
    sources.update(overrides or {})
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = sources.get(setting.env)
        if raw is None or raw.strip() == "":
            if setting.required:
                raise SettingsError(f"{setting.env} is not set: {setting.doc}")
            values[setting.attr] = None if setting.default is None else setting.parse(setting.default)
            continue
        try:
            values[setting.attr] = setting.parse(raw)
        except ValueError as exc:
            # never echo a secret: only a refusal written not to hold the value is shown
            reason = str(exc) if not setting.secret or isinstance(exc, _RefusedWithoutValue) else "the value is not accepted"
            raise SettingsError(f"{setting.env} is invalid: {reason}") from None
    if values["executor_id"] is None:
        values["executor_id"] = default_executor_id()
    return Settings(**values)


PREFIX = "DATAHUB_EXECUTOR_"


def unknown_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line for each DATAHUB_EXECUTOR_ variable that names no setting, with the setting it
    most likely meant: a misspelt name (DATAHUB_EXECUTOR_INGESTION_MAX_WORKER) was ignored in
    silence, and its default taken, where the Helm chart's schema refuses the same mistake."""
    names = {setting.env for setting in SETTINGS}
    # Compared without the prefix every name shares, which made any two look alike.
    stems = sorted(name.removeprefix(PREFIX) for name in names)
    said = []
    for name in sorted(os.environ if environ is None else environ):
        if name.startswith(PREFIX) and name not in names:
            close = difflib.get_close_matches(name.removeprefix(PREFIX), stems, n=1, cutoff=0.8)
            meant = f" (did you mean {PREFIX}{close[0]}?)" if close else ""
            said.append(f"{name} names no setting and is ignored{meant}; `datahub-executor --help` lists them")
    return said


def default_executor_id() -> str:
    """The host name and a random suffix: two processes on one host (or two hosts of one name)
    never share an id, so each heartbeat and each claim speaks for exactly one process."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0])[:100].strip("-.") or "executor"
    return _identifier(f"{host}-{secrets.token_hex(3)}")


def settings_table() -> str:
    """The Markdown table of docs/settings.md, generated from SETTINGS."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = "*required*" if s.required else (f"`{s.default}`" if s.default is not None else "unset")
        rows.append(f"| `{s.env}` | {default} | {s.doc} |")
    header = (
        "# Executor settings\n\n"
        "Generated from `executor/settings.py` by `python -m executor.settings --table`; do not edit by hand.\n"
        "Each is an environment variable (or a line of the environment file). Per-source variables\n"
        "`EXECUTOR_TASK_WEIGHT` and `EXECUTOR_TASK_MEMORY_LIMIT` are set on the source, not here.\n\n"
    )
    return header + "\n".join(rows) + "\n"


def env_template() -> str:
    """An environment file (systemd EnvironmentFile=, docker --env-file) with every setting
    documented and commented out at its default; the required ones are left to fill in."""
    lines = ["# datahub-executor settings: generated from executor/settings.py", ""]
    for s in SETTINGS:
        lines.append(f"# {s.doc}")
        if s.required:
            lines.append(f"{s.env}=")
        else:
            lines.append(f"# {s.env}={s.default or ''}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        sys.stdout.write(settings_table())
    else:
        print("usage: python -m executor.settings --table", file=sys.stderr)
        sys.exit(2)
