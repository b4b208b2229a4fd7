"""The proxy's and the package index's credentials are the operator's, not the task's: the
executor passes the proxy URL to every task and both URLs to every virtualenv build
(network_env), so they are masked in what leaves the executor as a secret is. Before, a task that
printed its environment, or an HTTP client's debug output with its Basic Proxy-Authorization
header, shipped the proxy's password in clear in its result's report and full log; and a failed
build's output, quoted in the run's report, could carry the index's. A real TaskRunner, a real
sandbox and a real task that prints them."""
from __future__ import annotations

import base64
import uuid
from types import SimpleNamespace

import pytest

from executor.leases import Leases, QueueRef
from executor.runner import TaskRunner
from executor.runtime import network_env
from executor.runtime.rejection import TaskRejected
from executor.runtime.venvs import InstallStep, VenvCache
from sandbox import Sandbox

from .runner_harness import RecordingControlPlane, RecordingUploads, runner_services, stand_in_prepare

EXECUTION = "exe_prints_its_proxy"
PROXY_PASSWORD = "proxy-p@ss-7f3"  # percent-encoded in the URL, as a password with '@' must be
ENVIRON = {"HTTPS_PROXY": "http://svc-ingest:proxy-p%40ss-7f3@proxy.corp.example:3128",
           "HTTP_PROXY": "http://proxy.corp.example:3128",
           "PIP_INDEX_URL": "https://builder:index-secret-9c1@pypi.corp.example/simple/",
           "UV_EXTRA_INDEX_URL": "https://extra-token-4d2@extra.corp.example/simple/"}
BASIC = base64.b64encode(f"svc-ingest:{PROXY_PASSWORD}".encode()).decode()
# What a task could print: its proxy variable as set, decoded by a tool that logs the URL it
# uses, and the header an HTTP client's debug output shows.
TASK = (f"#!/bin/sh\necho \"proxy: $HTTPS_PROXY\"\necho 'connecting as svc-ingest:{PROXY_PASSWORD}'\n"
        f"echo 'send: Proxy-Authorization: Basic {BASIC}'\necho done\n")
SHOWN = ("proxy-p%40ss-7f3", PROXY_PASSWORD, BASIC)


def test_credentials_are_found_in_each_url_the_executor_passes_on():
    found = network_env.credentials({**ENVIRON, "PIP_FIND_LINKS": "https://a.example/x https://u:links-pw@b.example/y"})
    assert {"proxy-p%40ss-7f3", PROXY_PASSWORD, f"svc-ingest:{PROXY_PASSWORD}", "index-secret-9c1",
            "builder:index-secret-9c1", "extra-token-4d2", "links-pw"} <= set(found)
    assert not any("corp.example" in value for value in found), "hosts are not credentials"
    assert network_env.credentials({"HTTPS_PROXY": "http://proxy.corp.example:3128", "NO_PROXY": "u:p@x"}) == []


def test_a_task_printing_the_proxy_credentials_ships_them_masked(tmp_path):
    work = tmp_path / "work"
    sandbox = Sandbox.open(f"test-{uuid.uuid4().hex[:10]}", mode="none")
    control_plane, uploads, leases = RecordingControlPlane(EXECUTION), RecordingUploads(), Leases()
    lease, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
    prepare = stand_in_prepare(tmp_path, TASK, work=work, network=network_env.for_tasks(ENVIRON))
    services = runner_services(client=control_plane, sandbox=sandbox, prepare=prepare, leases=leases,
                               logs_dir=work / "logs", logs=uploads, acks=SimpleNamespace(ack=lambda lease: None))
    try:
        runner = TaskRunner(lease, services)
        runner.start()
        runner.join(timeout=60)
    finally:
        sandbox.close()
    final = control_plane.results[-1]
    assert final["status"] == "SUCCESS", final["status"]
    shipped = [final["report"], *(log.decode("utf-8", "replace") for log in uploads.logs)]
    assert "done" in final["report"] and "proxy.corp.example:3128" in final["report"], "the rest is shown"
    leaked = [form for form in SHOWN for text in shipped if form in text]
    assert leaked == [], f"{len(leaked)} form(s) of the proxy's credentials shipped in clear"


def test_a_failed_builds_output_in_the_report_has_the_index_credentials_masked(tmp_path):
    def failing_build(step: InstallStep) -> tuple[int, str]:
        url = step.env["PIP_INDEX_URL"]
        return 1, f"Resolving...\nerror: Failed to fetch: `{url}acryl-datahub/`\n  Caused by: HTTP status 503\n"

    venvs = VenvCache(str(tmp_path / "venvs"), builder=failing_build, network=network_env.for_builds(ENVIRON))
    with pytest.raises(TaskRejected) as rejected:
        venvs.datahub_cli("1.2.0", [], [])
    message = str(rejected.value)
    assert "Failed to fetch" in message and "pypi.corp.example" in message, "the failure is still explained"
    assert "index-secret-9c1" not in message, "the index's password was quoted in clear"
