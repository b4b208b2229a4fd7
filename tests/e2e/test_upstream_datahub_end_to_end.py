"""A self-hosted DataHub behind the control plane (upstream mode, docs/datahub-oss.md), for real:
a second control plane in embedded mode plays DataHub, untouched by the executor (its GraphQL,
Rest.li and ingest endpoints as any DataHub client uses them). A source is created and run on
it with DataHub's GraphQL; the upstream-mode control plane and a real executor run it; the
stand-in shows what DataHub's UI shows, read with DataHub's own client."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import yaml
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig
from datahub.metadata.schema_classes import (ExecutionRequestInputClass, ExecutionRequestResultClass,
                                             ExecutionRequestSourceClass)
from loguru import logger

from controlplane import entities as E
from controlplane.quickstart import SAMPLE_RECIPE
from controlplane.testing import ControlPlaneHandle, running_controlplane
from controlplane.upstream.sync import UpstreamConfig

from .conftest import System, custom_env, custom_recipe, remove_cgroup_roots, stop_all_without_draining

POOL = "remote"
SAMPLE = json.dumps(yaml.safe_load(SAMPLE_RECIPE))  # DataHub's UI saves recipes as JSON


class Upstream:
    """The stand-in DataHub, seen as DataHub's UI and client see it."""

    def __init__(self, datahub: ControlPlaneHandle) -> None:
        self.datahub = datahub
        self.graph = DataHubGraph(DatahubClientConfig(server=datahub.gms_url, token=datahub.admin_token))

    def create_source(self, name: str, source_type: str, recipe: str, executor_id: str = POOL,
                      extra_args: dict | None = None) -> str:
        """As DataHub's UI saves a source: the recipe as JSON text, the Executor ID under advanced."""
        config = {"recipe": recipe, "executorId": executor_id}
        if extra_args:
            config["extraArgs"] = [{"key": k, "value": v} for k, v in extra_args.items()]
        return self.graph.execute_graphql(
            "mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }",
            variables={"i": {"name": name, "type": source_type, "config": config}})["createIngestionSource"]

    def run(self, source_urn: str) -> str:
        return self.graph.execute_graphql(
            "mutation($u: String!) { createIngestionExecutionRequest(input: {ingestionSourceUrn: $u}) }",
            variables={"u": source_urn})["createIngestionExecutionRequest"]

    def cancel(self, source_urn: str, execution_urn: str) -> None:
        self.graph.execute_graphql(
            "mutation($i: CancelIngestionExecutionRequestInput!) { cancelIngestionExecutionRequest(input: $i) }",
            variables={"i": {"ingestionSourceUrn": source_urn, "executionRequestUrn": execution_urn}})

    def result(self, execution_urn: str) -> ExecutionRequestResultClass | None:
        return self.graph.get_aspect(execution_urn, ExecutionRequestResultClass)

    def report(self, execution_urn: str) -> str:
        result = self.result(execution_urn)
        return (result.report or "") if result is not None else ""

    def statuses_until(self, execution_urn: str, final: set[str], timeout_s: float) -> list[str]:
        """Every distinct status DataHub showed, polled fast, until one in FINAL."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.result(execution_urn)
            if result is not None and (not seen or seen[-1] != result.status):
                seen.append(result.status)
            if seen and seen[-1] in final:
                return seen
            time.sleep(0.1)
        raise TimeoutError(f"{execution_urn} showed {seen}, never one of {sorted(final)}")


def write_secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


@pytest.fixture
def upstream_system(tmp_path):
    """(stand-in DataHub, upstream-mode control plane's System with one executor)."""
    (tmp_path / "secrets").mkdir()
    with running_controlplane(tmp_path / "datahub") as datahub:
        ingest_token = datahub._admin("POST", "/tokens", json={"kind": "ingest", "description": "upstream tasks"})
        ingest_file = write_secret_file(tmp_path / "ingest-token", ingest_token["token"])
        config = UpstreamConfig(url=datahub.gms_url, token_file=datahub.server.admin_token_path,
                                ingest_token_file=ingest_file, poll_interval_s=0.5)
        with running_controlplane(tmp_path / "controlplane", upstream=config) as cp:
            cp.create_pool(POOL, visibility_timeout_s=30)
            system = System(cp, tmp_path)
            try:
                yield Upstream(datahub), system
            finally:
                stop_all_without_draining(system.executors)
                left = remove_cgroup_roots(system.cgroup_roots)
    assert not left, f"executors left task cgroups behind: {left}"


def test_a_run_started_in_datahub_runs_on_our_pool_and_datahub_shows_it(upstream_system):
    upstream, system = upstream_system
    source = upstream.create_source("sample", "datahub-mock-data", SAMPLE)
    elsewhere = upstream.create_source("not ours", "datahub-mock-data", SAMPLE, executor_id="someone-else")
    untouched = upstream.run(elsewhere)
    execution_urn = upstream.run(source)
    execution_id = E.key_of(execution_urn, E.EXECUTION)
    deadline = time.monotonic() + 30
    while not system.cp.cp.executions.list(pool_id=POOL)[0]:
        assert time.monotonic() < deadline, "the request was never taken"
        time.sleep(0.1)
    time.sleep(1)
    assert system.cp.execution(execution_id)["status"] == "PENDING", "no executor yet: it waits"
    assert upstream.result(execution_urn) is None, "DataHub shows it pending, as its own runs before they start"
    system.start_executor()

    seen = upstream.statuses_until(execution_urn, {"SUCCESS", "FAILURE"}, timeout_s=300)
    result = upstream.result(execution_urn)
    assert seen[-1] == "SUCCESS", result.report[-3000:]
    assert "RUNNING" in seen, "DataHub showed the run while it ran"
    assert result.validate() and result.startTimeMs and result.durationMs and result.durationMs > 0
    assert result.structuredReport.type == "CLI_INGEST", "the type DataHub's own executor gives it"
    report = json.loads(result.structuredReport.serializedValue)
    assert report["source"]["report"]["events_produced"] > 0
    assert "Pipeline finished" in result.report or "events_produced" in result.report

    ours = system.cp.execution(execution_id)
    assert ours["status"] == "SUCCESS" and ours["pool_id"] == POOL, "the same run, here"
    written = upstream.datahub.cp.executions.run_summary(execution_id)
    assert written["entities"] > 0, "the metadata went to DataHub"
    dataset = next(e["urn"] for e in written["entity_list"] if e["type"] == "dataset")
    assert upstream.graph.get_entity_raw(dataset, ["status"]), "read back with DataHub's client"
    assert system.cp.cp.executions.run_summary(execution_id)["entities"] == 0, "nothing of it landed here"

    assert upstream.result(untouched) is None, "another executor's request is never touched"
    assert upstream.graph.get_aspect(untouched, ExecutionRequestInputClass).executorId == "someone-else"
    with pytest.raises(Exception):
        system.cp.execution(E.key_of(untouched, E.EXECUTION))


def test_a_cancel_in_datahub_reaches_the_task(upstream_system, tmp_path):
    upstream, system = upstream_system
    system.start_executor()
    recipe = custom_recipe("SleepySource", tmp_path / "s.json", seconds=120)
    source = upstream.create_source("long", "e2e_test_sources.SleepySource", recipe,
                                    extra_args={"extra_env_vars": json.dumps(custom_env())})
    execution_urn = upstream.run(source)
    execution_id = E.key_of(execution_urn, E.EXECUTION)
    deadline = time.monotonic() + 120
    while "sleepy tick" not in upstream.report(execution_urn):
        assert time.monotonic() < deadline, "the task never started, or DataHub never saw its log tail"
        time.sleep(0.2)
    asked = time.monotonic()
    upstream.cancel(source, execution_urn)
    assert upstream.statuses_until(execution_urn, {"CANCELLED", "SUCCESS", "FAILURE"}, timeout_s=30)[-1] == "CANCELLED"
    assert time.monotonic() - asked < 10
    assert system.cp.execution(execution_id)["status"] == "CANCELLED"


def starts_in(executor, execution_id: str) -> int:
    """How many times the executor started a task for EXECUTION_ID (its own log says so)."""
    return sum(1 for line in executor.lines if execution_id in line and "started: RUN_INGEST" in line)


def test_datahub_unreachable_for_a_minute_loses_nothing_and_dispatches_nothing_twice(upstream_system, tmp_path):
    upstream, system = upstream_system
    executor = system.start_executor()
    recipe = custom_recipe("SleepySource", tmp_path / "s.json", seconds=8)
    source = upstream.create_source("sleepy", "e2e_test_sources.SleepySource", recipe,
                                    extra_args={"extra_env_vars": json.dumps(custom_env())})
    running = upstream.run(source)
    assert upstream.statuses_until(running, {"RUNNING"}, timeout_s=120)[-1] == "RUNNING"
    sample = upstream.create_source("sample", "datahub-mock-data", SAMPLE)
    late = upstream.run(sample)  # maybe not seen yet when DataHub goes away
    upstream.datahub.stop()
    went = time.monotonic()
    ran = system.cp.wait_for_status(E.key_of(running, E.EXECUTION), {"SUCCESS", "FAILURE"}, timeout_s=60)
    assert ran["status"] == "SUCCESS", "the run went on without DataHub"
    time.sleep(max(0.0, 60 - (time.monotonic() - went)))
    upstream.datahub.start()
    assert upstream.statuses_until(running, {"SUCCESS", "FAILURE"}, timeout_s=60)[-1] == "SUCCESS", "late, not lost"
    assert upstream.statuses_until(late, {"SUCCESS", "FAILURE"}, timeout_s=300)[-1] == "SUCCESS"
    for execution_urn in (running, late):
        execution_id = E.key_of(execution_urn, E.EXECUTION)
        assert starts_in(executor, execution_id) == 1, "taken once, run once"
    assert len(system.cp.cp.executions.list()[1]) == 2


def test_a_control_plane_restarted_mid_run_finishes_the_run_in_datahub(upstream_system, tmp_path):
    upstream, system = upstream_system
    executor = system.start_executor()
    recipe = custom_recipe("SleepySource", tmp_path / "s.json", seconds=10)
    source = upstream.create_source("sleepy", "e2e_test_sources.SleepySource", recipe,
                                    extra_args={"extra_env_vars": json.dumps(custom_env())})
    execution_urn = upstream.run(source)
    assert upstream.statuses_until(execution_urn, {"RUNNING"}, timeout_s=120)[-1] == "RUNNING"
    system.cp.stop()
    time.sleep(3)
    system.cp.start()
    assert upstream.statuses_until(execution_urn, {"SUCCESS", "FAILURE"}, timeout_s=120)[-1] == "SUCCESS"
    assert starts_in(executor, E.key_of(execution_urn, E.EXECUTION)) == 1


def test_requests_no_executor_could_run_are_failed_in_datahub_and_never_queued(upstream_system):
    """Written as DataHub stores them (DataHub checks nothing): a recipe that is not YAML or JSON,
    a task we do not know, extraArgs that do not parse. Each ends FAILURE in DataHub, saying why,
    without reaching a queue; a good request after them still runs."""
    upstream, system = upstream_system
    system.start_executor()
    bad = {"not-yaml": ("RUN_INGEST", {"recipe": "source: [unclosed", "version": ""}, "INVALID_RECIPE"),
           "unknown-task": ("RUN_SOMETHING_ELSE", {"recipe": SAMPLE}, "UNKNOWN_TASK"),
           "bad-extra-args": ("RUN_INGEST", {"recipe": SAMPLE, "extra_env_vars": "{not json"}, "INVALID_ARGUMENTS")}
    for name, (task, args, _) in bad.items():
        upstream.graph.emit_mcp(MetadataChangeProposalWrapper(
            entityUrn=E.execution_urn(f"bad-{name}"), aspect=ExecutionRequestInputClass(
                task=task, args=args, executorId=POOL, requestedAt=int(time.time() * 1000),
                source=ExecutionRequestSourceClass(type="MANUAL_INGESTION_SOURCE"))))
    good = upstream.run(upstream.create_source("sample", "datahub-mock-data", SAMPLE))
    for name, (_, _, reason) in bad.items():
        urn = E.execution_urn(f"bad-{name}")
        assert upstream.statuses_until(urn, {"FAILURE", "SUCCESS"}, timeout_s=30)[-1] == "FAILURE"
        result = upstream.result(urn)
        assert json.loads(result.structuredReport.serializedValue)["executor"]["reason"] == reason
        assert reason in result.report
        with pytest.raises(Exception):
            system.cp.execution(f"bad-{name}")
    assert upstream.statuses_until(good, {"FAILURE", "SUCCESS"}, timeout_s=300)[-1] == "SUCCESS"


def test_a_refused_token_is_named_by_its_file_and_read_again_once_fixed(tmp_path):
    (tmp_path / "secrets").mkdir()
    said: list[str] = []
    sink = logger.add(lambda message: said.append(str(message)), level="WARNING")
    try:
        with running_controlplane(tmp_path / "datahub") as datahub:
            token_file = write_secret_file(tmp_path / "datahub-token", "dhx_not-a-token-datahub-knows")
            ingest_file = write_secret_file(tmp_path / "ingest-token", "dhx_unused-here")
            config = UpstreamConfig(url=datahub.gms_url, token_file=token_file, ingest_token_file=ingest_file,
                                    poll_interval_s=0.2)
            with running_controlplane(tmp_path / "controlplane", upstream=config) as cp:
                cp.create_pool(POOL)
                upstream = Upstream(datahub)
                request = upstream.run(upstream.create_source("sample", "datahub-mock-data", SAMPLE))
                deadline = time.monotonic() + 30
                while not any(str(token_file) in line and "401" in line for line in said):
                    assert time.monotonic() < deadline, said
                    time.sleep(0.1)
                assert not any("not-a-token" in line for line in said), "the token itself is never shown"
                write_secret_file(token_file, datahub.admin_token)
                deadline = time.monotonic() + 30
                while E.key_of(request, E.EXECUTION) not in {e["id"] for e in cp.cp.executions.list()[1]}:
                    assert time.monotonic() < deadline, "the fixed token was not read again"
                    time.sleep(0.1)
    finally:
        logger.remove(sink)


def test_a_secret_kept_in_datahub_reaches_the_task_and_nothing_else(upstream_system, tmp_path):
    """${DB_PASSWORD} is in DataHub's secret store only: the control plane fetches it with the
    claim and hands it to the executor; it is never queued, stored or logged here, and DataHub's
    view of the run shows it masked."""
    upstream, system = upstream_system
    said: list[str] = []
    sink = logger.add(lambda message: said.append(str(message)))
    try:
        password = "dh-secret-" + os.urandom(8).hex()
        upstream.graph.execute_graphql("mutation($i: CreateSecretInput!) { createSecret(input: $i) }",
                                       variables={"i": {"name": "DB_PASSWORD", "value": password}})
        executor = system.start_executor()
        recipe = custom_recipe("SecretEchoSource", tmp_path / "s.json", value="${DB_PASSWORD}")
        source = upstream.create_source("echo", "e2e_test_sources.SecretEchoSource", recipe,
                                        extra_args={"extra_env_vars": json.dumps(custom_env())})
        execution_urn = upstream.run(source)
        assert upstream.statuses_until(execution_urn, {"SUCCESS", "FAILURE"}, timeout_s=300)[-1] == "SUCCESS"
        report = upstream.report(execution_urn)
        assert f"secret sha256 {hashlib.sha256(password.encode()).hexdigest()[:16]}" in report, "the right value"
        assert "secret itself: " in report and password not in report, "masked (by the CLI's filter, or ours)"
        execution_id = E.key_of(execution_urn, E.EXECUTION)
        assert password not in system.cp.logs(execution_id)["log"]
        assert not any(password in line for line in executor.lines + said), "in no log"
        for path in (tmp_path / "controlplane").rglob("*"):
            if path.is_file():
                assert password.encode() not in path.read_bytes(), f"in {path.name}"
    finally:
        logger.remove(sink)
