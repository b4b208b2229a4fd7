"""${NAME} references in a recipe: the one rule for what names a secret, shared by the executor
(which resolves them from its stores) and the control plane (which fetches those an upstream
DataHub keeps, and stores DataHub secrets under names a recipe can reference).

A name is letters, digits and '_' only (\\w+), so it can never address a path outside a secrets
directory. DataHub's CLI expands ${NAME} itself; shell-style modifiers (${NAME:-default}) name
NAME too, and NAME's value wins over the default wherever a store has it, as in DataHub's
executor (which looks every such name up in its secret stores) and `datahub ingest` (which reads
it from the environment).
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


def defaulted_names(text: str) -> list[str]:
    """The distinct valid names of shell-style ${NAME<modifier>} references in TEXT
    (${NAME:-default}, ${NAME-default}, ${NAME:+alternative}, ...), in order of first appearance:
    looked up like secrets, and left to the modifier where no store has them."""
    found = []
    for reference in ANY_REFERENCE.findall(text):
        name = REFERENCE_NAME.match(reference).group(1)
        if name != reference and VALID_NAME.match(name):
            found.append(name)
    return list(dict.fromkeys(found))
