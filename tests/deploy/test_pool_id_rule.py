"""One rule for pool ids across the product. The same list of good and bad ids goes to
vocabulary.ids.pool_id (what the control plane checks), the executor's DATAHUB_EXECUTOR_POOL_ID
setting, the Helm chart (rendered by Helm) and the CloudFormation template's AllowedPattern (run by
Python's re and by java.util.regex, the engine CloudFormation uses): all four take the good ones
unchanged, refuse the bad ones, and say why in the vocabulary's words."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from executor.settings import SettingsError, load_settings
from vocabulary import ids

from .test_cloudformation import java_matches
from .test_cloudformation import load as load_template
from .test_helm_chart import CHART, REQUIRED, helm

POOL = "global.datahub.executor.pool_id"
POOL_IDS = [  # (pool id, valid)
    ("remote", True),
    ("r", True),
    ("7", True),
    ("007", True),
    ("Pool_1-eu", True),
    ("a" * 48, True),
    ("", False),
    ("a" * 49, False),
    ("-remote", False),
    ("_remote", False),
    ("pool.eu", False),
    ("re mote", False),
    (" remote", False),
    ("remote ", False),
    ("bad/pool", False),
    ("pool:1", False),
    ("pool,1", False),
    ("pool*", False),
    ("pool?", False),
    ("rémote", False),
    ("٣", False),  # a digit to Unicode, not to the rule
    ("remote\n", False),
    ("remote-monitors", False),  # pool remote's monitors queue
    ("remote-dlq", False),  # pool remote's dead-letter queue
    ("remote-monitors-2", True),
    ("monitors", True),
]
EXECUTOR_BASE = {"DATAHUB_GMS_URL": "https://acme.acryl.io/gms", "DATAHUB_GMS_TOKEN": "x"}


def by_vocabulary(pool: str) -> tuple[bool, str]:
    try:
        return ids.pool_id(pool) == pool, ""
    except ids.InvalidId as refusal:
        return False, str(refusal)


def by_executor(pool: str) -> tuple[bool, str]:
    try:
        settings = load_settings({**EXECUTOR_BASE, "DATAHUB_EXECUTOR_POOL_ID": pool})
    except SettingsError as refusal:
        return False, str(refusal)
    return settings.pool_id == pool, ""


def by_chart(env: dict[str, str], pool: str, tmp_path) -> tuple[bool, str]:
    """The id in a values file as JSON (a YAML string, whatever its characters); accepted means
    rendered into DATAHUB_EXECUTOR_POOL_ID unchanged."""
    values = tmp_path / "pool.yaml"
    values.write_text(json.dumps({"global": {"datahub": {"executor": {"pool_id": pool}}}}))
    result = helm(env, "template", "acme", values={k: v for k, v in REQUIRED.items() if k != POOL}, values_file=values)
    if result.returncode != 0:
        return False, result.stderr
    (deployment,) = [doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (value,) = [e["value"] for e in container["env"] if e["name"] == "DATAHUB_EXECUTOR_POOL_ID"]
    return value == pool, ""


@pytest.fixture(scope="module")
def by_java(tmp_path_factory) -> dict[str, bool]:
    """The template's pattern over every id, in one JVM."""
    pattern = load_template()["Parameters"]["ExecutorPoolId"]["AllowedPattern"]
    pools = [pool for pool, _ in POOL_IDS]
    verdicts = java_matches(tmp_path_factory.mktemp("java"), [(pattern, pool) for pool in pools])
    if verdicts is None:
        pytest.fail("java is not installed: bin/install-system-deps installs it")
    return dict(zip(pools, verdicts))


@pytest.mark.parametrize("pool, valid", POOL_IDS)
def test_vocabulary_executor_chart_and_template_take_and_refuse_the_same_pool_ids(
        helm_env, by_java, tmp_path, pool, valid):
    pattern = load_template()["Parameters"]["ExecutorPoolId"]["AllowedPattern"]
    verdicts = {
        "vocabulary": by_vocabulary(pool),
        "executor": by_executor(pool),
        "chart": by_chart(helm_env, pool, tmp_path),
        "template (Python re)": (re.fullmatch(pattern, pool) is not None, ""),
        "template (Java)": (by_java[pool], ""),
    }
    assert {name: accepted for name, (accepted, _) in verdicts.items()} == dict.fromkeys(verdicts, valid)
    if not valid and pool:
        for name in ("vocabulary", "executor", "chart"):
            assert ids.POOL_ID_RULE in verdicts[name][1], f"{name} does not state the rule: {verdicts[name][1]}"


def test_the_template_and_the_chart_carry_the_vocabulary_rule_verbatim():
    parameter = load_template()["Parameters"]["ExecutorPoolId"]
    assert parameter["AllowedPattern"] == ids.POOL_ID_PATTERN
    assert parameter["ConstraintDescription"] == ids.POOL_ID_RULE, "CloudFormation's refusal states the rule"
    helper = (CHART / "templates" / "_helpers.tpl").read_text()
    pool_id = helper[helper.index('define "executor.poolId"'):]
    pool_id = pool_id[:pool_id.index("{{- end -}}\n{{- $pool -}}")]
    assert re.findall(r'regexMatch "([^"]*)"', pool_id) == [ids.POOL_ID_CHARS_PATTERN]
    assert re.findall(r'hasSuffix "([^"]*)"', pool_id) == list(ids.RESERVED_POOL_SUFFIXES), "RE2 has no lookahead"
    assert ids.POOL_ID_RULE in pool_id
    schema = json.loads((CHART / "values.schema.json").read_text())
    executor = schema["properties"]["global"]["properties"]["datahub"]["properties"]["executor"]
    assert ids.POOL_ID_RULE in executor["properties"]["pool_id"]["description"].lower()
