"""Secret stores and ${NAME} discovery.

Resolution order: files under the base directory (re-read on every lookup, so a Kubernetes
secret update applies without a restart), the executor's environment (what ECS injects from
Secrets Manager), the secrets DATAHUB_EXECUTOR_AWS_SECRETS names (NAME=ARN, with ECS's optional
JSON key and version), then AWS Secrets Manager by name where enabled. A name is \\w+ only, so it
can never address a path outside the base directory; a file that resolves outside it (a
symlink to /etc/shadow) or is larger than the cap is refused with an error naming the secret
and never its value. DataHub substitutes "" for a missing secret; we fail the task instead. The
name of a shell-style form (${NAME:-default}), and every name inside a default, is looked up too,
and only a missing one is left to the CLI (vocabulary.secret_references has the grammar). The environment never serves a name the executor reserves (its own settings and
AWS credentials); another store's secret of that name (a DataHub secret AWS_ACCESS_KEY_ID) is
served, and a reserved name no other store has is refused, saying why.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from vocabulary.safe_yaml import YamlRefused, load_bounded
from vocabulary.secret_references import (REFERENCE_NAME, VALID_NAME, SecretNames, any_references, recipe_secret_names,
                                          secret_names, string_values)


class SecretError(Exception):
    """A secret could not be resolved. `reason` is what the result reports."""

    reason = "SECRET_ERROR"

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class SecretNotFound(SecretError):
    reason = "SECRET_NOT_FOUND"

    def __init__(self, name: str, searched: str) -> None:
        super().__init__(name, f"secret {name} was not found (searched: {searched})")


class SecretRefused(SecretError):
    reason = "SECRET_REFUSED"


class SecretReserved(SecretRefused):
    """The name is the executor's own setting or credential: never a recipe's secret."""


class SecretStore(Protocol):
    description: str

    def get(self, name: str) -> str | None: ...


def find_secret_references(text: str, parsed: Any = None) -> SecretNames:
    """The names the recipe TEXT references (vocabulary.secret_references: `required` a store must
    have, `optional` left to the CLI where none has them), each once, in order of first appearance.
    PARSED is TEXT already parsed by the caller (prepare_task has it), so it is not parsed twice.

    A reference that names no possible variable, such as ${../../etc/shadow}, is refused here
    rather than passed through for datahub to expand as it likes: it can only be a mistake or a
    probe, and the user should hear which. It is looked for where datahub expands, in the
    recipe's string values: not in its comments (gone once the recipe is handed to the CLI),
    nor in its keys, nor from a '${' in one value to a '}' in a later one, which DataHub's
    executor runs as they are. Text that is not a recipe's YAML is one value."""
    if parsed is None:
        try:
            parsed = load_bounded(text)
        except YamlRefused:
            parsed = text
    values = string_values(parsed) if isinstance(parsed, (dict, list)) else [text]
    for reference in (reference for value in values for reference in any_references(value)):
        name = REFERENCE_NAME.match(reference).group(1)
        if not VALID_NAME.match(name):
            shown = reference if len(reference) <= 60 else reference[:57] + "..."
            raise SecretRefused(name, f"secret reference ${{{shown}}} is refused: names are letters, digits and '_' only")
    return secret_names(parsed) if isinstance(parsed, (dict, list)) else recipe_secret_names(text)



def find_secret_names(text: str) -> list[str]:
    """The names the recipe TEXT requires (find_secret_references)."""
    return find_secret_references(text).required


def _check_name(name: str) -> None:
    if not VALID_NAME.match(name):
        raise SecretRefused(name, f"secret name {name!r} is refused: names are letters, digits and '_' only")


class FileSecretStore:
    """One file per secret under BASEDIR (a mounted Kubernetes Secret). Trailing whitespace is
    stripped, as DataHub's own FileSecretStore does (`.rstrip()`): a file written by `echo` or an
    editor ends in a newline, and the same file must give the same value on either executor."""

    def __init__(self, basedir: str, max_bytes: int) -> None:
        self.basedir = basedir
        self.max_bytes = max_bytes
        self.description = f"files in {basedir}"

    def get(self, name: str) -> str | None:
        _check_name(name)
        path = os.path.join(self.basedir, name)
        try:
            real_base = os.path.realpath(self.basedir)
            real = os.path.realpath(path)
        except OSError:
            return None
        if not real.startswith(real_base + os.sep):
            # Kubernetes mounts secrets as symlinks into ..data/ inside the directory: allowed.
            # A link that leaves the directory (to /etc/shadow, say) is not.
            raise SecretRefused(name, f"secret file for {name} resolves outside {self.basedir}; refused")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise SecretRefused(name, f"secret file for {name} cannot be read: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SecretRefused(name, f"secret file for {name} is not a regular file; refused")
            if info.st_size > self.max_bytes:
                raise SecretRefused(
                    name, f"secret file for {name} is {info.st_size} bytes, over the {self.max_bytes}-byte cap "
                    "(DATAHUB_EXECUTOR_FILE_SECRET_MAXLEN)"
                )
            data = _read_at_most(fd, self.max_bytes + 1)
            if len(data) > self.max_bytes:
                raise SecretRefused(name, f"secret file for {name} is over the {self.max_bytes}-byte cap")
        finally:
            os.close(fd)
        return data.decode("utf-8", errors="replace").rstrip()


READ_CHUNK = 1 << 20


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to LIMIT bytes of FD, read a chunk at a time: one os.read allocates what it is asked
    for first, and the cap (DATAHUB_EXECUTOR_FILE_SECRET_MAXLEN, up to 8 EiB) asked for 1T raised
    MemoryError, and for more OverflowError, on a file of a few bytes."""
    chunks: list[bytes] = []
    while limit > 0:
        chunk = os.read(fd, min(limit, READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


# Where the executor's own AWS credentials come from, never a recipe's secret whatever else is
# reserved: on ECS the relative URI alone fetches the executor's role credentials from
# 169.254.170.2, which tasks reach like the executor does; EKS Pod Identity's token likewise.
AWS_CREDENTIAL_VARIABLES = frozenset({
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
})


class EnvSecretStore:
    def __init__(self, environ: Mapping[str, str], reserved: Iterable[str] = ()) -> None:
        self._environ = environ
        self._reserved = set(reserved) | AWS_CREDENTIAL_VARIABLES
        self.description = "environment"

    def get(self, name: str) -> str | None:
        """NAME's value in the environment; None for a name the executor reserves, whatever the
        environment holds: the executor's own settings and credentials are never served. Another
        store may still have a secret of that name (a DataHub secret AWS_ACCESS_KEY_ID, say)."""
        _check_name(name)
        if self.reserves(name):
            return None
        return self._environ.get(name)

    def reserves(self, name: str) -> bool:
        """Whether NAME is the executor's own setting or credential (never served from here)."""
        return name in self._reserved


# Secrets Manager ARNs as ECS takes them in a container's `secrets` (valueFrom): one grammar for
# DATAHUB_EXECUTOR_AWS_SECRETS and the CloudFormation template's SecretNames, whose AllowedPattern
# runs on Java's regular expressions (so: plain groups, nothing Python-only). A full ARN is the
# secret's name, '-' and the six characters Secrets Manager appends; a name holds no ':', so the
# first seven ':'-separated fields are always the secret's own ARN, the one IAM grants on.
SECRET_ARN_PATTERN = r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+.@-]+-[A-Za-z0-9]{6}"
# ECS's optional ":JSON_KEY:VERSION_STAGE:VERSION_ID": the three colons written, each part possibly
# empty ("...:password::", "...::AWSPREVIOUS:"), never a stage and an id together (ECS refuses
# that). No ',' or '=' in a part, as the lists are split on them; no ':' or blank either.
SECRET_SELECTOR_PATTERN = r"(:[^\s:,=]*:([^\s:,=]+:|:([A-Za-z0-9-]{32,64})?))?"
SECRET_VALUE_FROM_PATTERN = SECRET_ARN_PATTERN + SECRET_SELECTOR_PATTERN
# A NAME of NAME=ARN is an environment variable's name on ECS: the same rule everywhere.
SECRET_ENTRY_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
SECRET_VALUE_FROM = re.compile(SECRET_VALUE_FROM_PATTERN)
SECRET_ENTRY_NAME = re.compile(SECRET_ENTRY_NAME_PATTERN)


@dataclass(frozen=True)
class AwsSecretReference:
    """${NAME} is this secret: its whole SecretString, or the value of JSON_KEY in it, of the
    version VERSION_STAGE or VERSION_ID names (AWSCURRENT when neither does)."""

    name: str
    arn: str
    json_key: str | None = None
    version_stage: str | None = None
    version_id: str | None = None

    @property
    def region(self) -> str:
        return self.arn.split(":")[3]

    def __str__(self) -> str:
        """The ARN and what is read from it, for messages (never a value)."""
        selected = [f"JSON key {self.json_key}"] if self.json_key else []
        selected += [f"version stage {self.version_stage}"] if self.version_stage else []
        selected += [f"version id {self.version_id}"] if self.version_id else []
        return self.arn + (f" ({', '.join(selected)})" if selected else "")


def parse_aws_secrets(text: str) -> tuple[AwsSecretReference, ...]:
    """NAME=ARN[:JSON_KEY:VERSION_STAGE:VERSION_ID], comma-separated (DATAHUB_EXECUTOR_AWS_SECRETS).
    A ValueError says which entry is wrong and how; ARNs name secrets, they are not secret."""
    references: dict[str, AwsSecretReference] = {}
    for number, entry in enumerate(text.split(","), 1):
        name, sep, value_from = (part.strip() for part in entry.partition("="))
        if not sep or not SECRET_ENTRY_NAME.fullmatch(name):
            shown = repr(entry.strip()[:60]) if entry.strip() else "empty"
            raise ValueError(f"entry {number} ({shown}) is not NAME=ARN with NAME of letters, digits and '_', not "
                             "starting with a digit")
        if not SECRET_VALUE_FROM.fullmatch(value_from):
            raise ValueError(f"entry {number} ({name}): {value_from[:200]!r} is not a full Secrets Manager ARN (ending "
                             "in '-' and the 6 characters Secrets Manager appends), optionally followed by ECS's "
                             ":JSON_KEY:VERSION_STAGE:VERSION_ID with all three colons (e.g. <arn>:password::)")
        if name in references:
            raise ValueError(f"{name} is named twice")
        fields = value_from.split(":")
        json_key, stage, version_id = (fields[7:] + ["", "", ""])[:3]
        references[name] = AwsSecretReference(name, ":".join(fields[:7]), json_key or None, stage or None,
                                              version_id or None)
    return tuple(references.values())


def json_key_value(name: str, where: str, secret_string: str, key: str) -> str:
    """The value of KEY in the JSON object SECRET_STRING, as ECS injects it: a string as it is,
    anything else as its JSON text. (ECS's agent prints other values with Go's %v, which turns an
    object into "map[a:1]"; JSON is what a recipe can use.) Errors name the secret and the key,
    never the text: a secret that is not JSON may be the credential itself."""
    try:
        document = json.loads(secret_string)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        raise SecretRefused(name, f"secret {name}: {where} is not a JSON object, so it has no key {key}: store the "
                                  "secret as key/value pairs, or name the whole secret (no JSON key)")
    if key not in document:
        raise SecretRefused(name, f"secret {name}: {where} has no JSON key {key}")
    value = document[key]
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class AwsSecretMissing(SecretError):
    reason = "SECRET_NOT_FOUND"


def aws_problem(exc: Exception, where: str, grant_on: str,
                endpoint: str | None = None) -> tuple[type[SecretError], str]:
    """What went wrong asking Secrets Manager for WHERE, and the fix. botocore's own message is
    left out (only its error code): the message is ours, so it can name no value."""
    from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError, PartialCredentialsError
    from botocore.exceptions import ConnectionError as AwsConnectionError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "") or "an error"
        if code == "ResourceNotFoundException":
            return AwsSecretMissing, f"{where} does not exist, or has no such version: fix DATAHUB_EXECUTOR_AWS_SECRETS"
        grant = (f"grant the executor's role secretsmanager:GetSecretValue on {grant_on} (and kms:Decrypt on the "
                 "secret's KMS key if it is customer-managed)")
        if code.startswith("AccessDenied"):
            return SecretError, f"{code} reading {where}: {grant}"
        if code == "DecryptionFailure":
            return SecretError, f"DecryptionFailure reading {where}: grant kms:Decrypt on the secret's KMS key"
        if code in ("UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
                    "ExpiredTokenException", "ExpiredToken"):
            return SecretError, f"{code}: AWS refused the executor's credentials reading {where}: renew or fix them"
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
            # A 403 without Secrets Manager's own error code: a VPC endpoint's policy, a proxy.
            return SecretError, (f"denied (HTTP 403) reading {where}: {grant}; a VPC endpoint policy or a proxy may "
                                 "also deny it")
        return SecretError, f"AWS Secrets Manager answered {code} reading {where}"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return SecretError, (f"no AWS credentials to read {where}: give the executor a role (ECS task role, IRSA, "
                             "instance profile) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, (AwsConnectionError, HTTPClientError)):
        return SecretError, (f"AWS Secrets Manager unreachable reading {where} ({type(exc).__name__}): allow outbound "
                             f"HTTPS to {endpoint or 'secretsmanager.<region>.amazonaws.com'} (or use a VPC endpoint), "
                             "through HTTPS_PROXY where the network requires a proxy")
    return SecretError, f"AWS Secrets Manager could not be asked for {where}: {type(exc).__name__}"


class SecretsManagerClients:
    """One Secrets Manager client per region (None: the region of the executor's AWS
    configuration), made on first use and kept. botocore's clients are thread-safe once made;
    making them from the default session is not, and tasks are prepared on many threads: hence
    a session of our own and a lock. Retries and timeouts are set here, once."""

    def __init__(self) -> None:
        self._clients: dict[str | None, Any] = {}
        self._lock = threading.Lock()
        self._session = None

    def __call__(self, region: str | None) -> Any:
        with self._lock:
            if region not in self._clients:
                import boto3
                from botocore.config import Config

                if self._session is None:
                    self._session = boto3.session.Session()
                self._clients[region] = self._session.client(
                    "secretsmanager", region_name=region,
                    config=Config(connect_timeout=10, read_timeout=30, retries={"mode": "standard", "max_attempts": 3}))
            return self._clients[region]


class AwsSecretArnStore:
    """The secrets DATAHUB_EXECUTOR_AWS_SECRETS names, read as ECS would inject them, for executors
    ECS does not start (VMs, Kubernetes with IRSA). Read on every lookup, so a rotation applies to
    the next task."""

    def __init__(self, references: Iterable[AwsSecretReference], clients: Callable[[str | None], Any]) -> None:
        self.references = {reference.name: reference for reference in references}
        self._clients = clients
        self.description = "AWS Secrets Manager (DATAHUB_EXECUTOR_AWS_SECRETS)"

    def get(self, name: str) -> str | None:
        _check_name(name)
        reference = self.references.get(name)
        return None if reference is None else self.read(reference)

    def endpoint(self, reference: AwsSecretReference) -> str:
        return self._clients(reference.region).meta.endpoint_url

    def read(self, reference: AwsSecretReference) -> str:
        ask = {"SecretId": reference.arn}
        if reference.version_stage:
            ask["VersionStage"] = reference.version_stage
        if reference.version_id:
            ask["VersionId"] = reference.version_id
        client = self._clients(reference.region)
        try:
            answer = client.get_secret_value(**ask)
        except Exception as exc:  # botocore's errors: permissions, credentials, network, throttling
            kind, problem = aws_problem(exc, str(reference), reference.arn, client.meta.endpoint_url)
            raise kind(reference.name, f"secret {reference.name}: {problem}") from None
        text = answer.get("SecretString")
        if text is None:
            raise SecretRefused(reference.name, f"secret {reference.name}: {reference} holds binary data "
                                                "(SecretBinary); recipes take text: store it as a SecretString")
        if reference.json_key is None:
            return text
        return json_key_value(reference.name, reference.arn, text, reference.json_key)

    def probe(self) -> str:
        """Reads every secret it names, as a task would, and drops the values. GetSecretValue and
        not DescribeSecret: a least-privilege role may only read its secrets (the ECS template's
        task role grants GetSecretValue and nothing else), so DescribeSecret would fail where tasks
        work; and only a read shows that the JSON key and the version are there. Each failure
        names its secret by NAME and says what to grant or open."""
        failures = []
        for reference in self.references.values():
            try:
                self.read(reference)
            except SecretError as exc:
                failures.append(str(exc))
        if failures:
            raise RuntimeError("; ".join(failures))
        names = ", ".join(self.references)
        return f"{len(self.references)} secret(s) of DATAHUB_EXECUTOR_AWS_SECRETS readable ({names})"


class AwsSecretsManagerStore:
    """Secrets Manager by secret name, through a boto3 `secretsmanager` client."""

    def __init__(self, client) -> None:
        self._client = client
        self.description = "AWS Secrets Manager"

    def get(self, name: str) -> str | None:
        _check_name(name)
        try:
            answer = self._client.get_secret_value(SecretId=name)
        except self._client.exceptions.ResourceNotFoundException:
            return None
        except Exception as exc:  # botocore's errors: credentials, network, throttling
            _, problem = aws_problem(exc, f"the secret named {name}", f"the secret named {name}",
                                     self._client.meta.endpoint_url)
            raise SecretError(name, f"secret {name}: {problem}") from None
        return answer.get("SecretString")

    def probe(self) -> str:
        """Whether Secrets Manager is reached and takes the credentials, knowing no name: asks for
        a secret that cannot exist. ResourceNotFoundException, or AccessDeniedException from a
        role that may read only its own secrets, both mean yes."""
        try:
            self._client.get_secret_value(SecretId=f"datahub-executor-check-{secrets.token_hex(8)}")
        except Exception as exc:
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
            if code != "ResourceNotFoundException" and not str(code).startswith("AccessDenied"):
                raise RuntimeError(aws_problem(exc, "a secret by name", "the secrets recipes name",
                                               self._client.meta.endpoint_url)[1]) from None
        return f"by name: {self._client.meta.endpoint_url} reachable, credentials accepted"


class ProvidedSecretStore:
    """Values the control plane handed over with a claim (an upstream DataHub's secret store,
    docs/datahub-oss.md): for that one task, in memory only."""

    description = "DataHub's secret store (fetched with the claim)"

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def get(self, name: str) -> str | None:
        return self._values.get(name)


class ChainedSecretStore:
    def __init__(self, stores: list[SecretStore]) -> None:
        self.stores = stores
        self.description = ", ".join(s.description for s in stores)

    def get(self, name: str) -> str | None:
        """The first store's value of NAME; None where no store has it. A name the executor
        reserves (its own setting or credential, which the environment store never serves) that no
        other store has is SecretReserved, which says why, rather than a plain "not found"."""
        for store in self.stores:
            value = store.get(name)
            if value is not None:
                return value
        if any(getattr(store, "reserves", lambda _: False)(name) for store in self.stores):
            raise SecretReserved(name, f"{name} is the executor's own setting and cannot be used as a recipe secret")
        return None

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        """Every name's value, or SecretNotFound naming the first missing one (never a value)."""
        resolved = {}
        for name in names:
            value = self.get(name)
            if value is None:
                raise SecretNotFound(name, self.description)
            resolved[name] = value
        return resolved

    def resolve_present(self, names: Iterable[str]) -> dict[str, str]:
        """The values of those NAMES a store has (the names of ${NAME:-default} forms, whose
        default stands in for a missing one). A store that cannot answer still fails the task:
        the default is for a secret that does not exist, not for one that could not be read. A
        name the executor reserves that no store other than the environment has is left to the
        CLI, which sees the task's own value (its GMS address, its ingest token) or the default."""
        found = {}
        for name in names:
            try:
                value = self.get(name)
            except SecretReserved:
                continue
            if value is not None:
                found[name] = value
        return found
