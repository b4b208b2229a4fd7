"""The control-plane client's HTTP (executor/controlplane_http.py) against a real HTTP/1.1 server
on 127.0.0.1: connections are kept and reused, a redirect is refused with where it pointed (and
nothing, the token least, is sent there), and an answer that declares more than the cap is
refused before its body is read. Routes through a proxy are tested with `datahub-executor check`
(test_proxy_reaches_tasks_builds_and_check.py), outages and hostile answers in tests/faults."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from executor.controlplane_client import MAX_ANSWER_BYTES, ControlPlaneClient, ControlPlaneError
from tests.http_handler import QuietHandler

EXECUTOR = str(Path(sys.executable).parent / "datahub-executor")


class Recorder:
    """What the server saw: each request's client port, path and Authorization header."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, str, str | None]] = []
        self.lock = threading.Lock()


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with recorder.lock:
                recorder.requests.append((self.client_address[1], self.path, self.headers.get("Authorization")))
            if "redirected" in self.path or self.path.startswith("/moved/"):
                self.answer(301, b"", {"Location": "http://127.0.0.1:9/elsewhere"})
            elif "huge" in self.path:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(MAX_ANSWER_BYTES + 1))
                self.end_headers()
                self.wfile.write(b'{"pad": "')  # and no more: the client must not wait for the rest
                self.close_connection = True
            elif "listy" in self.path:
                self.answer(200, b"[]", {"Content-Type": "application/json"})
            elif "shapeless" in self.path:
                self.answer(200, json.dumps({"aspect": ["KILL"]}).encode(), {"Content-Type": "application/json"})
            elif "/entitiesV2/" in self.path and "slowpool" in self.path:
                # Another DataHub's pool naming a visibility timeout over SQS's ceiling.
                envelope = {"value": {"queueUrl": "http://127.0.0.1:9/1/q"},
                            "systemMetadata": {"properties": {"visibilityTimeoutSeconds": "86400"}}}
                self.answer(200, json.dumps({"aspects": {"dataHubRemoteExecutorPoolInfo": envelope}}).encode(),
                            {"Content-Type": "application/json"})
            elif "/entitiesV2/" in self.path:
                self.answer(200, json.dumps({"aspects": []}).encode(), {"Content-Type": "application/json"})
            else:
                self.answer(200, json.dumps({"aspect": {}}).encode(), {"Content-Type": "application/json"})

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}/gms", recorder
    finally:
        http.shutdown()
        http.server_close()


def test_calls_share_one_kept_connection_and_carry_the_token(server):
    url, recorder = server
    client = ControlPlaneClient(url, "token-under-test", retries=0, timeout_s=5)
    for _ in range(20):
        assert client.cancel_requested("run-1") is False  # 200 with no KILL signal
    ports = {port for port, _, _ in recorder.requests}
    assert len(recorder.requests) == 20 and len(ports) == 1, f"{len(ports)} connections for 20 calls"
    assert all(path.startswith("/gms/aspects/") for _, path, _ in recorder.requests)
    assert {auth for _, _, auth in recorder.requests} == {"Bearer token-under-test"}


def test_a_redirect_is_not_followed_and_says_where_it_pointed(server):
    url, recorder = server
    client = ControlPlaneClient(url, "token-under-test", retries=2, timeout_s=5)
    with pytest.raises(ControlPlaneError) as refused:
        client.cancel_requested("redirected")
    assert refused.value.status == 301 and refused.value.final
    assert "http://127.0.0.1:9/elsewhere" in str(refused.value) and "DATAHUB_GMS_URL" in str(refused.value)
    assert len(recorder.requests) == 1, "asked once, not retried, not followed"


def test_an_answer_declared_over_the_cap_is_refused_unread(server):
    url, _ = server
    client = ControlPlaneClient(url, "token-under-test", retries=0, timeout_s=30)
    with pytest.raises(ControlPlaneError) as refused:
        client.cancel_requested("huge")
    assert "answer refused" in str(refused.value) and "(Content-Length)" in str(refused.value)
    assert client.cancel_requested("run-2") is False, "the next call gets a fresh connection"


def test_answers_of_the_wrong_shape_are_errors_like_an_outage_never_attribute_errors(server):
    """A runner polls for cancellation while its task runs; an answer that is JSON but not the
    object asked for must be a ControlPlaneError (the runner carries on), not an AttributeError
    (the runner fails and ends its task)."""
    url, _ = server
    client = ControlPlaneClient(url, "token-under-test", retries=0, timeout_s=5)
    for execution_id in ("listy", "shapeless"):
        with pytest.raises(ControlPlaneError) as broken:
            client.cancel_requested(execution_id)
        assert "not a JSON object" in str(broken.value) and not broken.value.final
    with pytest.raises(ControlPlaneError) as broken:
        client.pool("remote")
    assert "aspects is not a JSON object" in str(broken.value)
    assert client.cancel_requested("run-3") is False, "the next good answer is read as before"


def test_check_says_the_datahub_url_redirects_and_where(server, tmp_path):
    url, _ = server
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATAHUB_", "AWS_")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    (tmp_path / "secrets").mkdir()
    env.update({"DATAHUB_GMS_URL": url.replace("/gms", "/moved/gms"), "DATAHUB_GMS_TOKEN": "token-under-test",
                "DATAHUB_EXECUTOR_POOL_ID": "remote", "PIP_INDEX_URL": "http://127.0.0.1:9/simple/",
                "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(tmp_path / "secrets"),
                "DATAHUB_EXECUTOR_SANDBOX_MODE": "none", "DATAHUB_EXECUTOR_TASK_USER": "none",
                "DATAHUB_EXECUTOR_CGROUP_ROOT": f"test-check-{uuid.uuid4().hex[:8]}",
                "DATAHUB_EXECUTOR_TASK_PRIVATE_TMP": "false", "AWS_EC2_METADATA_DISABLED": "true"})
    done = subprocess.run([EXECUTOR, "check"], env=env, capture_output=True, text=True, timeout=120)
    (line,) = [line for line in done.stdout.splitlines() if line[6:].startswith("token and pool:")]
    assert line.startswith("FAIL  ") and "HTTP 301: redirected to http://127.0.0.1:9/elsewhere" in line, line
    assert "set DATAHUB_GMS_URL to where it points" in line and "network connectivity" not in line, line
    assert "token-under-test" not in done.stdout + done.stderr


def test_a_pool_naming_a_visibility_timeout_over_sqss_ceiling_gets_the_ceiling(server):
    """Every receive with a visibility timeout over 43200 s fails (InvalidParameterValue), which
    the intake takes for SQS being down: the executor took no work and blamed the network."""
    url, _ = server
    client = ControlPlaneClient(url, "token-under-test", retries=0, timeout_s=5)
    assert client.pool("slowpool").visibility_timeout_s == 43200
