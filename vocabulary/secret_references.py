"""${NAME} references in a recipe: the one rule for what names a secret, shared by the executor
(which resolves them from its stores) and the control plane (which fetches those an upstream
DataHub keeps, and stores DataHub secrets under names a recipe can reference).

A name is letters, digits and '_' only (\\w+), so it can never address a path outside a secrets
directory.

Which names a recipe references is decided by the grammar `datahub ingest` expands recipes with
(the `expandvars` package, through datahub.configuration.config_loader.EnvResolver), read the way
DataHub's own executor finds the names to fetch (EnvResolver.list_referenced_variables with
strict_env_syntax=True, in datahub.secret.secret_common.resolve_recipe): every string value (not
a key) holding `${` ... `}` is expanded whole, so a bare $NAME beside a ${...} in that value is a
reference too, and so is every name inside a modifier (${A:-$B}, ${A:-${B}}), which is expanded
whether or not A is set. A value without `${` is not expanded for secrets: its $NAME is none.

`required` are the names the CLI fails without (a plain ${NAME} or $NAME outside any modifier,
and ${NAME:?...}): a store must have them. `optional` are the rest (the NAME of ${NAME:-default},
${NAME:+alt}, ${NAME:=default}, ${#NAME}, ${NAME:offset}, and every name inside a modifier):
looked up, and left to the CLI (an empty value or the default) where no store has them. The
grammar is implemented here rather than imported: the executor runs where acryl-datahub is not
installed; tests/vocabulary/test_secret_reference_grammar.py holds it to expandvars and DataHub.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vocabulary.safe_yaml import YamlRefused, load_bounded

# The variable name in a ${...} before a shell-style modifier (${NAME:-default}).
REFERENCE_NAME = re.compile(r"^(.*?)(?::?[-=?+].*)?$", re.S)
VALID_NAME = re.compile(r"^\w+\Z")  # \Z: no name ends in a newline
# How deep modifiers may nest (${A:-${B:-${C}}} is 3) before a value is taken as one the CLI
# cannot expand: expandvars recurses at each level, as the scan below does (two frames a level),
# and fails a few hundred levels deep; ~500 levels (a 3 KB value) were a RecursionError here
# that escaped the scan's callers. Real recipes nest two or three.
MAX_NESTING = 200


def any_references(text: str) -> Iterator[str]:
    """The inside of every ${...} in TEXT, up to its first '}', left to right (what the regex
    \\$\\{([^}]*)\\} finds), in one pass. The regex tried each '${' against all the text after
    it: a value of '${' repeated with no '}' took time quadratic in its length (80 KB, 40 s),
    holding the GIL, so the master's other threads stood still meanwhile."""
    at = 0
    while (start := text.find("${", at)) != -1:
        end = text.find("}", start + 2)
        if end == -1:
            return  # no '}' after this '${': none after any later one either
        yield text[start + 2:end]
        at = end + 1


def is_expanded(value: str) -> bool:
    """Whether EnvResolver expands VALUE (its _resolve_element's `(\\$\\{).+(\\})`, '.' without
    DOTALL): a '${' and, later on the same line, a '}' with something between. Checked line by
    line with the line's first '${' and last '}' (the regex was quadratic on '${' repeated)."""
    for line in value.split("\n"):
        start = line.find("${")
        if start != -1 and line.rfind("}") >= start + 3:
            return True
    return False


def string_values(value: Any) -> Iterator[str]:
    """Every string value in VALUE's dicts and lists, in order (keys are never expanded), as
    EnvResolver walks a recipe; iteratively, whatever the nesting."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            pending.extend(reversed(item))
        elif isinstance(item, str):
            yield item


def is_secret_name(name: str) -> bool:
    return bool(VALID_NAME.match(name))


@dataclass
class SecretNames:
    """The names a recipe references, each once, in order of first appearance."""

    required: list[str] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)


def recipe_secret_names(text: str) -> SecretNames:
    """The names the recipe TEXT (YAML or JSON) references. Text that is not a recipe's YAML is
    read as one value, so a fragment still gives its names."""
    try:
        recipe = load_bounded(text)
    except YamlRefused:
        recipe = text
    if not isinstance(recipe, (dict, list)):
        recipe = text
    return secret_names(recipe)


def secret_names(recipe: Any) -> SecretNames:
    """The names the parsed RECIPE references: its string values, in dicts and lists, as
    EnvResolver walks them (keys are never expanded)."""
    scan = _Scan()
    scan.walk(recipe)
    optional = [name for name in scan.order if name not in scan.required]
    return SecretNames(required=list(scan.required), optional=optional)


# expandvars' modifier types and reader states (its _read_var, transcribed).
_DEFAULT, _SET_DEFAULT, _SUBSTITUTE, _OFFSET, _STRICT, _LENGTH = range(1, 7)
_VAR, _MODIFIER_VAR, _MODIFIER, _DONE = range(4)


class _Malformed(Exception):
    """expandvars would raise (a missing '}', an empty name): the CLI fails on the value itself."""


def _valid_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class _Scan:
    def __init__(self) -> None:
        self.order: dict[str, None] = {}
        self.required: dict[str, None] = {}
        self.assigned: set[str] = set()  # ${NAME:=default} sets NAME for the values after it

    def walk(self, value: Any) -> None:
        for text in string_values(value):
            if is_expanded(text):
                try:
                    self.expand(text, nounset=True)
                except _Malformed:
                    pass

    def note(self, name: str, required: bool) -> None:
        if not VALID_NAME.match(name):
            return  # "$$x" looks up "$x": no store can hold it
        self.order.setdefault(name)
        if required and name not in self.assigned:
            self.required.setdefault(name)

    def expand(self, text: str, nounset: bool, nesting: int = 0) -> None:
        """expandvars.expand's scan: the names it looks up, and whether a missing one fails it.
        NESTING is how many modifiers the text lies in."""
        if nesting > MAX_NESTING:
            raise _Malformed()
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            following = text[i + 1] if i + 1 < n else None
            if c == "\\":
                if following is None:
                    raise _Malformed()
                i += 2  # \$ and \\ are escapes; any other pair is kept as it is
            elif c == "$" and following is not None and (_valid_char(following) or following in "{$"):
                i = self.variable(text, i + 1, nounset, nesting)
            else:
                i += 1

    def variable(self, text: str, i: int, nounset: bool, nesting: int) -> int:
        """expandvars' _read_var and _expand_var from TEXT[i] (after the '$'); the index after."""
        n = len(text)
        name: list[str] = []
        modifier: list[str] = []
        kind = None
        state, depth, indirect = _VAR, 0, False
        while state != _DONE:
            nxt = text[i] if i < n else None
            if nxt is None:
                if state in (_MODIFIER_VAR, _MODIFIER):
                    raise _Malformed()
                state = _DONE
            elif nxt == "{" and state == _VAR:
                i += 1
                peek = text[i] if i < n else None
                if peek == "!":
                    indirect = True
                    i += 1
                elif peek == "#":
                    kind = _LENGTH
                    i += 1
                state = _MODIFIER_VAR
            elif nxt == "}" and state == _MODIFIER_VAR:
                i += 1
                state = _DONE
            elif (_valid_char(nxt) or (nxt == "$" and not name)) and state in (_VAR, _MODIFIER_VAR):
                name.append(nxt)
                i += 1
            elif nxt == ":" and state == _MODIFIER_VAR:
                state = _MODIFIER
                i += 1
            elif state == _MODIFIER_VAR or (state == _MODIFIER and kind is None):
                state, modifier, kind = _MODIFIER, [], None
                if nxt == "-":
                    kind = _DEFAULT
                elif nxt == "=":
                    kind = _SET_DEFAULT
                elif nxt == "+":
                    kind = _SUBSTITUTE
                elif nxt == "?":
                    kind = _STRICT
                elif nxt == "}":
                    kind, state = _OFFSET, _DONE
                else:
                    kind = _OFFSET
                    modifier.append(nxt)
                i += 1
            elif state == _MODIFIER:
                i += 1
                if nxt == "{":
                    depth += 1
                    modifier.append(nxt)
                elif nxt == "}":
                    if depth == 0:
                        state = _DONE
                    else:
                        modifier.append(nxt)
                        depth -= 1
                else:
                    modifier.append(nxt)
            else:  # _VAR, on a character that ends a bare $NAME
                state = _DONE
        var = "".join(name)
        if not var:
            raise _Malformed()
        # Missing, these fail the expansion: a plain reference under nounset (the top level; a
        # modifier is expanded without it), ${NAME:?} and ${!NAME} anywhere.
        required = indirect or kind == _STRICT or (nounset and kind is None)
        if var != "$":  # "$$" is the process id, no variable
            self.note(var, required)
        self.expand("".join(modifier), nounset=False, nesting=nesting + 1)
        if kind == _SET_DEFAULT:
            self.assigned.add(var)
        if (kind == _LENGTH and modifier) or (kind == _OFFSET and not modifier):
            raise _Malformed()
        return i
