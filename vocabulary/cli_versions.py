"""Which acryl-datahub a run installs: a source's CLI version and the plugins its recipe needs,
made into the one requirement given to uv (`acryl-datahub[mysql]==1.2.0.4`).

Checked where a source is saved (the control plane refuses what no run could install) and again
before the build (the executor trusts no message: a run can come from a DataHub that checked
nothing). A version is `latest`, `native` (the acryl-datahub installed beside the executor), a
release such as 1.2.0.4, or an http(s) URL of a wheel. A plugin is an extra's name: anything else
would be requirement text of the recipe's, such as `x] @ file:///srv/project#`, which installs
another acryl-datahub from the executor's disk.
"""
from __future__ import annotations

import re

# Plugins whose dependencies acryl-datahub itself installs (datahub-rest is the default sink of a
# recipe without one): no extra, so such recipes share the plain venv.
BUILTIN_PLUGINS = {"file", "console", "datahub-mock-data", "demo-data", "datahub-rest"}
RELEASE = re.compile(r"^\d+(\.\d+){1,4}([a-z]+\d*)?(\.post\d+)?$")
# An extra's name (PEP 685), dots aside: a dotted type is a class.
PLUGIN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?")
LATEST, NATIVE = "latest", "native"


class InvalidVersion(ValueError):
    """The version names nothing uv could install (the message says what a version may be)."""


class InvalidPlugin(ValueError):
    """A recipe's source or sink type is neither a plugin name nor a class."""


def plugins_for(recipe: dict) -> list[str]:
    """acryl-datahub extras for the recipe's source and sink; custom classes (a.b.C) need none."""
    wanted = set()
    for section in ("source", "sink"):
        given = recipe.get(section) or {}
        if not isinstance(given, dict):
            raise InvalidPlugin(f"the recipe's {section} section is not a mapping ({section}: {{type: ..., config: ...}})")
        kind = given.get("type", "")
        if not isinstance(kind, str):
            raise InvalidPlugin(f"the recipe's {section} type {str(kind)[:60]!r} is not a plugin name (letters, digits, "
                                "- and _, such as mysql) nor a class (a.b.Source)")
        if kind and "." not in kind and kind not in BUILTIN_PLUGINS:
            if not PLUGIN.fullmatch(kind):
                raise InvalidPlugin(f"the recipe's {section} type {kind!r} is neither a plugin name (letters, digits, "
                                    "- and _, such as mysql) nor a class (a.b.Source)")
            wanted.add(kind)
    return sorted(wanted)


def check_version(version: str, extra_requirements: list[str] | None = None) -> None:
    """InvalidVersion unless VERSION is one a venv can be built for, or `native` without extra
    requirements (native installs nothing)."""
    if version == NATIVE:
        if extra_requirements:
            raise InvalidVersion("version native cannot take extra pip requirements; pin a version")
        return
    requirement(version, [])


def requirement(version: str, plugins: list[str]) -> str:
    """The requirement uv installs for VERSION (not `native`) with PLUGINS as extras."""
    for plugin in plugins:
        if not PLUGIN.fullmatch(plugin):
            raise InvalidPlugin(f"plugin {plugin!r} is not a plugin name (letters, digits, - and _, such as mysql)")
    extras = f"[{','.join(plugins)}]" if plugins else ""
    if version == LATEST:
        return f"acryl-datahub{extras}"
    if RELEASE.fullmatch(version):
        return f"acryl-datahub{extras}=={version}"
    # Nothing after the URL: text after a space would be the requirement's, not the version's.
    if version.startswith(("https://", "http://")) and version.endswith(".whl") and version.isprintable() \
            and " " not in version:
        return f"acryl-datahub{extras} @ {version}"
    raise InvalidVersion(f"version {version!r} is not latest, native, a version such as 1.2.0.4, or a wheel URL")
