"""${NAME} references in a recipe: the one rule for what names a secret, shared by the executor
(which resolves them from its stores) and the control plane (which fetches those an upstream
DataHub keeps, and stores DataHub secrets under names a recipe can reference).

A name is letters, digits and '_' only (\\w+), so it can never address a path outside a secrets
directory. DataHub's CLI expands ${NAME} itself; shell-style modifiers (${NAME:-default}) name
NAME too.
"""
from __future__ import annotations

import re

SECRET_REFERENCE = re.compile(r"\$\{(\w+)\}")
# Any ${...}, and the variable name in it before a shell-style modifier (${NAME:-default}).
ANY_REFERENCE = re.compile(r"\$\{([^}]*)\}")
REFERENCE_NAME = re.compile(r"^(.*?)(?::?[-=?+].*)?$", re.S)
VALID_NAME = re.compile(r"^\w+\Z")  # \Z: no name ends in a newline


def is_secret_name(name: str) -> bool:
    return bool(VALID_NAME.match(name))


def referenced_names(text: str) -> list[str]:
    """The distinct valid ${NAME} references in TEXT, in order of first appearance (invalid ones
    are the executor's to refuse, with a message)."""
    return list(dict.fromkeys(SECRET_REFERENCE.findall(text)))
