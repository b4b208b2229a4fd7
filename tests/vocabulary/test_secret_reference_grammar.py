"""The names a recipe references, held to the code that expands them: DataHub's own executor
(datahub.secret.secret_common.resolve_recipe, which fetches what
EnvResolver.list_referenced_variables(strict_env_syntax=True) lists) and the expandvars grammar
`datahub ingest` expands recipes with. All values are fake."""
from __future__ import annotations

import json

import pytest

expandvars = pytest.importorskip("expandvars")
config_loader = pytest.importorskip("datahub.configuration.config_loader")
secret_common = pytest.importorskip("datahub.secret.secret_common")
from datahub.secret.secret_store import SecretStore  # noqa: E402

from vocabulary.secret_references import recipe_secret_names, secret_names  # noqa: E402

VALUES = [
    "${PLAIN}", "${NAME:-literal}", "${NAME-literal}", "${NAME:+alt}", "${NAME:=set} then ${NAME}",
    "${META_DIR}/$META_FILE", "${META_PATH:-$FALLBACK_META_PATH}", "${META_PATH:-${OLD_META_PATH}}",
    "${A:-${B:-${C}}}/$D", "${A:?needed $B}", "${#A} ${B}", "${A:1:2} ${B}", "$$ ${A}", "$${A} ${B}",
    "\\${ESCAPED} ${A}", "\\\\$A ${B}", "no braces $BARE", "$BARE alone", "pre ${A}post$B-$C_D",
    "${A}\n$B", "${A:-x}${B}", "${A:-{x}} $B",
]


def datahub_lists(value: str) -> set[str]:
    return config_loader.EnvResolver.list_referenced_variables({"v": value}, strict_env_syntax=True)


@pytest.mark.parametrize("value", VALUES)
def test_the_names_are_those_datahubs_executor_fetches(value):
    found = secret_names({"source": {"config": {"v": value}}})
    assert set(found.required) | set(found.optional) == {n for n in datahub_lists(value) if n.isidentifier()}
    assert not set(found.required) & set(found.optional)


@pytest.mark.parametrize("value", VALUES)
def test_a_name_is_required_exactly_when_the_cli_fails_without_it(value):
    """`datahub ingest` expands with nounset: a required name missing fails the value; an optional
    one missing is left to its default (or empty)."""
    found = secret_names({"v": value})
    for name in found.required + found.optional:
        environ = {other: "fake-value" for other in found.required + found.optional if other != name}
        try:
            expandvars.expand(value, nounset=True, environ=environ)
            failed = False
        except (expandvars.UnboundVariable, expandvars.ParameterNullOrNotSet):
            failed = True
        assert failed == (name in found.required), name


def test_a_value_without_braces_is_not_expanded_for_secrets():
    assert datahub_lists("no braces $BARE") == set()
    assert secret_names({"v": "no braces $BARE", "w": "$ALSO_BARE"}) == secret_names({})


def test_a_value_the_cli_cannot_expand_names_nothing():
    """A missing '}': DataHub's executor and the CLI both fail on the value itself."""
    with pytest.raises(expandvars.MissingClosingBrace):
        datahub_lists("${A:-${B}")
    assert secret_names({"v": "${A:-${B}"}) == secret_names({})


def test_keys_are_not_references():
    assert secret_names({"${KEY}": "x"}).required == []


def test_recipe_text_in_yaml_or_json():
    recipe = {"source": {"type": "file", "config": {"path": "${META_DIR}/$META_FILE",
                                                    "other": "${META_PATH:-${OLD_META_PATH}}"}}}
    for text in (json.dumps(recipe), "source:\n  type: file\n  config:\n    path: ${META_DIR}/$META_FILE\n"
                 "    other: ${META_PATH:-${OLD_META_PATH}}\n"):
        found = recipe_secret_names(text)
        assert (found.required, found.optional) == (["META_DIR", "META_FILE"], ["META_PATH", "OLD_META_PATH"])


class Stub(SecretStore):
    def __init__(self, values):
        self.values = values

    @classmethod
    def create(cls, configs):
        raise NotImplementedError

    def get_secret_values(self, names):
        return {name: self.values.get(name) for name in names}

    def get_id(self):
        return "stub"

    def close(self):
        pass


@pytest.mark.parametrize("value, stored, resolved", [
    ("${META_DIR}/$META_FILE", {"META_DIR": "/fake", "META_FILE": "m.json"}, "/fake/m.json"),
    ("${META_PATH:-$FALLBACK_META_PATH}", {"FALLBACK_META_PATH": "/fake/f.json"}, "/fake/f.json"),
    ("${META_PATH:-${OLD_META_PATH}}", {"META_PATH": "/fake/m.json"}, "/fake/m.json"),
    ("${PLAIN}", {"PLAIN": "fake-plain"}, "fake-plain"),
    ("${NAME:-literal}", {}, "literal"),
    ("${NAME:-literal}", {"NAME": "fake-name"}, "fake-name"),
])
def test_what_we_pass_resolves_the_recipe_as_datahubs_executor_does(value, stored, resolved):
    """DataHub's resolve_recipe over a store with STORED, and the same expansion over only the
    values our names would pass (required all stored, optional where stored)."""
    recipe = json.dumps({"source": {"type": "file", "config": {"path": value}}})
    assert secret_common.resolve_recipe(recipe, [Stub(stored)])["source"]["config"]["path"] == resolved
    found = recipe_secret_names(recipe)
    assert set(found.required) <= set(stored)
    ours = {name: stored[name] for name in found.required + found.optional if name in stored}
    assert ours == stored
    assert config_loader.EnvResolver(ours).resolve({"v": value})["v"] == resolved


def test_finding_references_is_linear_in_a_value_of_openings_without_a_close():
    """'${' repeated with no '}': both scans tried every '${' against the rest of the text, so
    80 KB took 40 s (a 1 MiB recipe, hours) holding the GIL; the executor's other threads (its
    heartbeat, other tasks' log relays) stood still meanwhile."""
    import time

    from executor.runtime.secrets import find_secret_references

    value = "${" * 400_000  # 800 KB, within the recipe size limit
    started = time.monotonic()
    assert secret_names({"v": value}) == secret_names({})
    assert find_secret_references(f"source:\n  config:\n    v: '{value}'\n").required == []
    assert time.monotonic() - started < 10, "quadratic again: the old scans took hours here"


@pytest.mark.parametrize("depth", [3, 150, 500, 5_000])
def test_modifiers_nested_deeply_never_raise_out_of_the_scan(depth):
    """~500 levels of ${A:-${A:-...}} (3 KB) raised RecursionError out of the scan, which the
    executor's preparation does not catch: the run failed as an executor error, not a recipe's."""
    value = "${A:-" * depth + "x" + "}" * depth
    found = secret_names({"v": value})
    assert found.required == [] and found.optional in (["A"], [])


def test_the_one_pass_scans_agree_with_the_expressions_they_replace():
    import random
    import re

    from vocabulary.secret_references import any_references, is_expanded

    generator = random.Random(13)
    for _ in range(20_000):
        text = "".join(generator.choice("${}\nab:-") for _ in range(generator.randrange(0, 14)))
        assert list(any_references(text)) == re.findall(r"\$\{([^}]*)\}", text), repr(text)
        assert is_expanded(text) == bool(re.search(r"(\$\{).+(\})", text)), repr(text)
