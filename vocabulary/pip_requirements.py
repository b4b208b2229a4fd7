"""A source's extra_pip_requirements: requirement specifiers (PEP 508), nothing else.

They are handed to `uv pip install` when the task's virtualenv is built, after the executor's own
options. An entry that is an option instead (`--python /usr/bin/python3`, `--target /`,
`--index-url http://...`, `-r /etc/shadow`) would turn the build against the machine: install into
the executor's own interpreter, write outside the cache, or fetch from anywhere. A PEP 508
specifier cannot be an option and still says all a recipe needs: a name, extras, versions,
markers, or a direct reference (`name @ https://...`, `name @ git+https://...`). Checked where a
source is saved (the control plane) and again before the build (the executor trusts no message).
"""
from __future__ import annotations

from packaging.requirements import InvalidRequirement, Requirement

MAX_REQUIREMENTS = 100
MAX_LENGTH = 1000


class InvalidRequirements(ValueError):
    """What is wrong, naming the entry (cut short: it is the user's text)."""


def check(requirements: object) -> list[str]:
    """REQUIREMENTS as strings, each a PEP 508 specifier; InvalidRequirements otherwise."""
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise InvalidRequirements("extra_pip_requirements must be a JSON list of requirement strings")
    if len(requirements) > MAX_REQUIREMENTS:
        raise InvalidRequirements(f"extra_pip_requirements has {len(requirements)} entries; at most {MAX_REQUIREMENTS}")
    for entry in requirements:
        shown = ascii(entry[:80])
        if len(entry) > MAX_LENGTH:
            raise InvalidRequirements(f"extra pip requirement {shown}... is over {MAX_LENGTH} characters")
        if entry.strip().startswith("-"):
            raise InvalidRequirements(f"extra pip requirement {shown} is a pip option, not a requirement: only "
                                      "requirement specifiers (PEP 508) are taken, such as 'name[extra]>=1.0' or "
                                      "'name @ https://...'")
        try:
            Requirement(entry)
        except InvalidRequirement as exc:
            raise InvalidRequirements(f"extra pip requirement {shown} is not a requirement specifier (PEP 508): "
                                      f"{str(exc).splitlines()[0][:200]}") from None
    return list(requirements)
