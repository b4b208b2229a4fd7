"""Secret stores and ${NAME} discovery.

Resolution order: files under the base directory (re-read on every lookup, so a Kubernetes
secret update applies without a restart), the executor's environment (what ECS injects from
Secrets Manager), then AWS Secrets Manager by name where enabled. A name is \\w+ only, so it
can never address a path outside the base directory; a file that resolves outside it (a
symlink to /etc/shadow) or is larger than the cap is refused with an error naming the secret
and never its value. DataHub substitutes "" for a missing secret; we fail the task instead.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Mapping
from typing import Protocol

SECRET_REFERENCE = re.compile(r"\$\{(\w+)\}")
# Any ${...}, and the variable name in it before a shell-style modifier (${NAME:-default}).
ANY_REFERENCE = re.compile(r"\$\{([^}]*)\}")
REFERENCE_NAME = re.compile(r"^(.*?)(?::?[-=?+].*)?$", re.S)
VALID_NAME = re.compile(r"^\w+$")


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


class SecretStore(Protocol):
    description: str

    def get(self, name: str) -> str | None: ...


def find_secret_names(text: str) -> list[str]:
    """The distinct ${NAME} references in TEXT, in order of first appearance.

    A reference that names no possible variable, such as ${../../etc/shadow}, is refused here
    rather than passed through for datahub to expand as it likes: it can only be a mistake or a
    probe, and the user should hear which."""
    for reference in ANY_REFERENCE.findall(text):
        name = REFERENCE_NAME.match(reference).group(1)
        if not VALID_NAME.match(name):
            shown = reference if len(reference) <= 60 else reference[:57] + "..."
            raise SecretRefused(name, f"secret reference ${{{shown}}} is refused: names are letters, digits and '_' only")
    return list(dict.fromkeys(SECRET_REFERENCE.findall(text)))


def _check_name(name: str) -> None:
    if not VALID_NAME.match(name):
        raise SecretRefused(name, f"secret name {name!r} is refused: names are letters, digits and '_' only")


class FileSecretStore:
    """One file per secret under BASEDIR (a mounted Kubernetes Secret); trailing newline stripped."""

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
            data = os.read(fd, self.max_bytes + 1)
            if len(data) > self.max_bytes:
                raise SecretRefused(name, f"secret file for {name} is over the {self.max_bytes}-byte cap")
        finally:
            os.close(fd)
        return data.decode("utf-8", errors="replace").rstrip("\r\n")


class EnvSecretStore:
    def __init__(self, environ: Mapping[str, str], reserved: Iterable[str] = ()) -> None:
        self._environ = environ
        self._reserved = set(reserved)
        self.description = "environment"

    def get(self, name: str) -> str | None:
        _check_name(name)
        if name in self._reserved:
            # The executor's own credentials are not secrets a recipe may ask for.
            raise SecretRefused(name, f"{name} is the executor's own setting and cannot be used as a recipe secret")
        return self._environ.get(name)


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
            raise SecretError(name, f"AWS Secrets Manager could not be asked for {name}: {type(exc).__name__}") from None
        return answer.get("SecretString")


class ChainedSecretStore:
    def __init__(self, stores: list[SecretStore]) -> None:
        self.stores = stores
        self.description = ", ".join(s.description for s in stores)

    def get(self, name: str) -> str | None:
        for store in self.stores:
            value = store.get(name)
            if value is not None:
                return value
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
