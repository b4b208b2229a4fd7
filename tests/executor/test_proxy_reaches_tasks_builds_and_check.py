"""Networks with a proxy: the executor's HTTPS_PROXY, HTTP_PROXY and NO_PROXY reach each task's
environment and each step of a virtualenv build (wired as the master wires them, through
network_env), and `datahub-executor check` says on its DataHub, SQS, package index and Secrets
Manager lines which proxy it went through (credentials hidden), or that it went direct for a
NO_PROXY host. The check runs for real against the control plane (with its SQS) on 127.0.0.1,
through a recording forward proxy, also on 127.0.0.1, that only forwards to 127.0.0.1."""
from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from controlplane.testing import running_controlplane
from executor.runtime import network_env
from executor.runtime.secrets import ChainedSecretStore, EnvSecretStore
from executor.runtime.tasks import prepare_task
from executor.runtime.venvs import InstallStep, VenvCache
from tests.http_handler import QuietHandler

EXECUTOR = str(Path(sys.executable).parent / "datahub-executor")
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
# The executor's own environment on a proxied network, with what must never reach a task.
EXECUTOR_ENVIRON = {
    "HTTPS_PROXY": "http://proxy-user:proxy-pass-7@proxy.corp.example:3128",
    "HTTP_PROXY": "http://proxy.corp.example:3128",
    "NO_PROXY": "localhost,127.0.0.1,.corp.example,169.254.169.254",
    "SSL_CERT_FILE": "/etc/ssl/certs/corp-ca.pem",
    "PIP_INDEX_URL": "https://pypi.corp.example/simple/",
    "DATAHUB_GMS_TOKEN": "executor-own-token-7",
    "AWS_SECRET_ACCESS_KEY": "executor-aws-key-7",
    "PATH": "/usr/bin:/bin",
}
PROXY = {name: EXECUTOR_ENVIRON[name] for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")}
RECIPE = "source:\n  type: mysql\n  config: {password: '${DB_PASSWORD}'}\n"


class RecordingBuilder:
    """A virtualenv builder that records each install step instead of running it, leaving what a
    real install leaves that the cache checks: the datahub command."""

    def __init__(self) -> None:
        self.steps: list[InstallStep] = []

    def __call__(self, step: InstallStep) -> tuple[int, str]:
        self.steps.append(step)
        if step.argv[1:3] == ["pip", "install"]:
            cli = Path(step.cwd) / "bin" / "datahub"
            cli.parent.mkdir(parents=True, exist_ok=True)
            cli.write_text("#!/bin/sh\n")
            cli.chmod(0o755)
        return 0, ""


def test_the_proxy_reaches_the_task_and_every_step_of_its_virtualenv_build(tmp_path):
    builder = RecordingBuilder()
    venvs = VenvCache(str(tmp_path / "venvs"), builder=builder, network=network_env.for_builds(EXECUTOR_ENVIRON))
    prepared = prepare_task("RUN_INGEST", {"recipe": RECIPE, "version": "1.7.0.17"}, execution_id="exe_proxy",
                            secrets=ChainedSecretStore([EnvSecretStore({"DB_PASSWORD": "pw-7"})]), venvs=venvs,
                            work_root=str(tmp_path), default_version="native", gms_url="http://127.0.0.1:9/gms",
                            ingest_token="dhx_ingest-only", network=network_env.for_tasks(EXECUTOR_ENVIRON))
    assert [Path(step.argv[0]).name for step in builder.steps] == ["uv", "uv"], "uv venv, then uv pip install"
    assert builder.steps[1].argv[2] == "install" and "acryl-datahub[mysql]==1.7.0.17" in builder.steps[1].argv
    for env in (prepared.env, *(step.env for step in builder.steps)):
        assert {name: env.get(name) for name in PROXY} == PROXY
        assert env["SSL_CERT_FILE"] == "/etc/ssl/certs/corp-ca.pem", "a TLS-inspecting proxy's CA too"
        assert "executor-own-token-7" not in json.dumps(env) and "AWS_SECRET_ACCESS_KEY" not in env
    for step in builder.steps:
        assert step.env["PIP_INDEX_URL"] == "https://pypi.corp.example/simple/", "builds also get the index"
    assert "PIP_INDEX_URL" not in prepared.env, "tasks install nothing"
    prepared.cleanup()


class RecordingProxy:
    """A forward HTTP proxy on 127.0.0.1 that records what it is asked for (and by which proxy
    user) and forwards it, to 127.0.0.1 only."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        outer = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                target = urlsplit(self.path)
                credentials = self.headers.get("Proxy-Authorization", "").removeprefix("Basic ")
                user = base64.b64decode(credentials).decode().split(":")[0] if credentials else None
                outer.requests.append((self.command, self.path, user))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if target.hostname != "127.0.0.1":
                    self.answer(502, b"this test proxy forwards to 127.0.0.1 only")
                    return
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-authorization", "proxy-connection", "connection")}
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.request(self.command, path or "/", body=body, headers=headers)
                answer = upstream.getresponse()
                self.answer(answer.status, answer.read(), {k: v for k, v in answer.getheaders()
                                                           if k.lower() not in ("connection", "transfer-encoding",
                                                                                "content-length")})
                upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy():
    recording = RecordingProxy()
    try:
        yield recording
    finally:
        recording.close()


@pytest.fixture
def package_index(tmp_path):
    """A package index on 127.0.0.1 that knows acryl-datahub."""
    root = tmp_path / "index"
    (root / "simple" / "acryl-datahub").mkdir(parents=True)
    (root / "simple" / "acryl-datahub" / "index.html").write_text("<html></html>")

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def secretsmanager_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    try:
        yield endpoint
    finally:
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()


def test_check_names_the_proxy_each_probe_went_through_and_never_its_credentials(
        tmp_path, proxy, package_index, secretsmanager_endpoint):
    with running_controlplane(tmp_path / "controlplane") as cp:
        cp.create_pool("remote", default=True)
        secret_arn = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=secretsmanager_endpoint,
                                  aws_access_key_id="test", aws_secret_access_key="test").create_secret(
            Name="prod/db", SecretString=json.dumps({"password": "pw-7"}))["ARN"]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DATAHUB_", "AWS_")) and k.lower() not in PROXY_VARIABLES}
        (tmp_path / "secrets").mkdir()
        env.update({
            "DATAHUB_GMS_URL": cp.gms_url, "DATAHUB_GMS_TOKEN": cp.create_executor_token(["remote"]),
            "DATAHUB_EXECUTOR_POOL_ID": "remote", "PIP_INDEX_URL": package_index,
            "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(tmp_path / "secrets"), "DATAHUB_EXECUTOR_SANDBOX_MODE": "none",
            "DATAHUB_EXECUTOR_CGROUP_ROOT": f"test-check-{uuid.uuid4().hex[:8]}", "DATAHUB_EXECUTOR_TASK_USER": "none",
            "DATAHUB_EXECUTOR_TASK_PRIVATE_TMP": "false",
            "DATAHUB_EXECUTOR_AWS_SECRETS": f"DB_PASSWORD={secret_arn}:password::",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": secretsmanager_endpoint, "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            # Every destination here is http://127.0.0.1, so HTTP_PROXY is the one the clients take.
            "HTTP_PROXY": f"http://proxy-user:proxy-pass-7@127.0.0.1:{proxy.port}",
        })
        through = subprocess.run([EXECUTOR, "check"], env=env, capture_output=True, text=True, timeout=120)
        asked = list(proxy.requests)
        direct = subprocess.run([EXECUTOR, "check"], env={**env, "NO_PROXY": "localhost,127.0.0.1"},
                                capture_output=True, text=True, timeout=120)
    lines = {line[6:].split(":")[0]: line for line in through.stdout.splitlines()}
    via = f"; via proxy http://***@127.0.0.1:{proxy.port} (HTTP_PROXY)"
    for name in ("token and pool", "SQS", "package index", "secret stores"):
        assert lines[name].startswith("PASS  ") and lines[name].endswith(via), through.stdout
    assert "proxy-pass-7" not in through.stdout + through.stderr + direct.stdout + direct.stderr
    assert "pw-7" not in through.stdout + direct.stdout
    assert not lines["GMS URL"].endswith(via) and not lines["cgroups"].endswith(via), "no network, no route"
    # It really went that way: the proxy was asked for DataHub, both queues' endpoint, the index
    # and Secrets Manager, each time as the proxy's user.
    targets = {urlsplit(url).port for _, url, _ in asked}
    assert {urlsplit(cp.gms_url).port, urlsplit(package_index).port, urlsplit(secretsmanager_endpoint).port} <= targets
    assert urlsplit(cp.sqs_endpoint_url).port in targets
    assert {user for _, _, user in asked} == {"proxy-user"}
    direct_lines = {line[6:].split(":")[0]: line for line in direct.stdout.splitlines()}
    for name in ("token and pool", "SQS", "package index", "secret stores"):
        assert direct_lines[name].startswith("PASS  ") and direct_lines[name].endswith("; direct (NO_PROXY)")
    assert proxy.requests == asked, "with NO_PROXY, nothing more went through the proxy"


def test_without_a_proxy_check_lines_say_nothing_of_routes(tmp_path, package_index):
    """The lines stay as they were where no proxy is configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUB_", "AWS_"))
           and k.lower() not in PROXY_VARIABLES}
    env.update({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "tok-unused",
                "DATAHUB_EXECUTOR_POOL_ID": "remote", "PIP_INDEX_URL": package_index,
                "DATAHUB_EXECUTOR_SANDBOX_MODE": "none", "DATAHUB_EXECUTOR_TASK_USER": "none",
                "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(tmp_path / "absent")})
    done = subprocess.run([EXECUTOR, "check"], env=env, capture_output=True, text=True, timeout=120)
    assert f"PASS  package index: {package_index} reachable\n" in done.stdout
    assert "; via proxy" not in done.stdout and "; direct (" not in done.stdout


@pytest.mark.parametrize("environ, url, all_proxy, way", [
    ({"HTTPS_PROXY": "http://proxy-user:proxy-pass-7@proxy.corp:3128"}, "https://acme.acryl.io/gms", True,
     "via proxy http://***@proxy.corp:3128 (HTTPS_PROXY)"),
    ({"https_proxy": "http://lower.corp:3128", "HTTPS_PROXY": "http://upper.corp:3128"}, "https://acme.acryl.io/gms",
     False, "via proxy http://lower.corp:3128 (https_proxy)"),
    ({"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "localhost,.acryl.io"}, "https://acme.acryl.io/gms", True,
     "direct (NO_PROXY)"),
    ({"HTTP_PROXY": "http://proxy.corp:3128"}, "https://sqs.us-east-1.amazonaws.com", False,
     "direct (no HTTPS_PROXY)"),
    ({"ALL_PROXY": "socks5://u:proxy-pass-7@proxy.corp:1080"}, "https://acme.acryl.io/gms", True,
     "via proxy socks5://***@proxy.corp:1080 (ALL_PROXY)"),
    ({"ALL_PROXY": "socks5://proxy.corp:1080"}, "https://sqs.us-east-1.amazonaws.com", False,
     "direct (no HTTPS_PROXY)"),  # botocore and urllib take no ALL_PROXY; requests (DataHub) does
    ({}, "https://acme.acryl.io/gms", True, None),
])
def test_a_check_line_names_the_way_its_client_goes(monkeypatch, environ, url, all_proxy, way):
    from executor.check import _routes

    for name in list(os.environ):
        if name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert _routes([url], all_proxy=all_proxy) == way


def test_check_with_an_env_file_takes_the_proxy_and_aws_credentials_written_in_it(
        tmp_path, proxy, package_index, secretsmanager_endpoint):
    """The first hour's check, `datahub-executor --env-file /etc/datahub-executor/executor.env
    check`, read only the executor's settings from the file: the proxy and the AWS credentials the
    docs say to write there (systemd's EnvironmentFile= gives the service every line of it) were
    dropped, so check probed DataHub, SQS, the index and Secrets Manager direct, without the
    credentials, and failed (or passed) unlike the service it checks."""
    with running_controlplane(tmp_path / "controlplane") as cp:
        cp.create_pool("remote", default=True)
        secret_arn = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=secretsmanager_endpoint,
                                  aws_access_key_id="test", aws_secret_access_key="test").create_secret(
            Name="prod/db", SecretString=json.dumps({"password": "pw-7"}))["ARN"]
        (tmp_path / "secrets").mkdir()
        in_file = {
            "DATAHUB_GMS_URL": cp.gms_url, "DATAHUB_GMS_TOKEN": cp.create_executor_token(["remote"]),
            "DATAHUB_EXECUTOR_POOL_ID": "remote", "PIP_INDEX_URL": package_index,
            "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(tmp_path / "secrets"), "DATAHUB_EXECUTOR_SANDBOX_MODE": "none",
            "DATAHUB_EXECUTOR_CGROUP_ROOT": f"test-check-{uuid.uuid4().hex[:8]}", "DATAHUB_EXECUTOR_TASK_USER": "none",
            "DATAHUB_EXECUTOR_TASK_PRIVATE_TMP": "false", "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0",
            "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path / "work"),
            "DATAHUB_EXECUTOR_VENV_CACHE_DIR": str(tmp_path / "venvs"),
            "DATAHUB_EXECUTOR_AWS_SECRETS": f"DB_PASSWORD={secret_arn}:password::",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": secretsmanager_endpoint, "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "HTTP_PROXY": f"http://proxy-user:proxy-pass-7@127.0.0.1:{proxy.port}",
        }
        env_file = tmp_path / "executor.env"
        env_file.write_text("".join(f"{name}={value}\n" for name, value in in_file.items()))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DATAHUB_", "AWS_", "UV_", "PIP_")) and k.lower() not in PROXY_VARIABLES}
        done = subprocess.run([EXECUTOR, "--env-file", str(env_file), "check"], env=env, capture_output=True,
                              text=True, timeout=120)
    lines = {line[6:].split(":")[0]: line for line in done.stdout.splitlines()}
    via = f"; via proxy http://***@127.0.0.1:{proxy.port} (HTTP_PROXY)"
    for name in ("token and pool", "SQS", "package index", "secret stores"):
        assert lines[name].startswith("PASS  ") and lines[name].endswith(via), done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    assert urlsplit(cp.gms_url).port in {urlsplit(url).port for _, url, _ in proxy.requests}
    assert "proxy-pass-7" not in done.stdout + done.stderr and "pw-7" not in done.stdout
