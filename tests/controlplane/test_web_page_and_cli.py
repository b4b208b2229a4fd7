"""The web page in a real headless browser (Debian's chromium, driven by Playwright: typing and
clicking as an operator does), and the admin CLI as an operator runs it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.emitter.rest_emitter import DatahubRestEmitter
import datahub.metadata.schema_classes as model

from .conftest import RECIPE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ADMIN = [str(Path(sys.executable).parent / "datahub-executor-admin")]
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: bin/install-system-deps --tests installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def row_of(page, table: str, text: str):
    return page.locator(f"#{table} tr", has_text=text).first


def test_an_operator_creates_a_pool_assigns_a_source_runs_watches_and_cancels(cp, browser, executor_double, tmp_path):
    cp.create_pool("remote", default=True, description="VPC in eu-west-1")
    source = cp.create_source("mysql-prod", RECIPE)
    scheduled = {**cp.cp.sources.get(source["id"])["info"], "schedule": {"interval": "0 * * * *", "timezone": "UTC"}}
    cp.ingest(source["urn"], "dataHubIngestionSourceInfo", scheduled)
    page = browser.new_page()
    page.goto(f"{cp.base_url}/")
    page.fill("#token", cp.admin_token)
    page.click("#save")
    page.wait_for_selector("#pools >> text=remote (default)")
    page.reload()  # the token is remembered for the session: no second login
    page.wait_for_selector("#pools >> text=remote (default)")
    assert page.locator("#login").is_hidden()
    assert cp.admin_token not in page.content()

    page.fill("#pool-id", "eu-west")
    page.fill("#pool-description", "second region")
    page.click("#new-pool button[type=submit]")
    page.wait_for_selector("#message >> text=pool eu-west created")
    page.wait_for_selector("#pools >> text=second region")
    assert "NO_ONLINE_EXECUTOR" in row_of(page, "pools", "eu-west").inner_text()
    assert cp.cp.pools.get("eu-west")["description"] == "second region"

    row_of(page, "sources", "mysql-prod").locator("select[name=pool]").select_option("eu-west")
    page.wait_for_selector("#message >> text=now runs on pool eu-west")
    assert cp.cp.sources.get(source["id"])["info"]["config"]["executorId"] == "eu-west"
    # DataHub's update replaces the whole info: the page sends back the schedule it did not change.
    assert cp.cp.sources.get(source["id"])["info"]["schedule"] == {"interval": "0 * * * *", "timezone": "UTC"}

    executor = executor_double("eu-west", "exec-7", interval_s=30)
    executor.heartbeat()
    row_of(page, "sources", "mysql-prod").locator("button[name=run]").click()
    page.wait_for_selector("#message >> text=requested")
    (execution,) = cp.cp.executions.list()[1]
    claimed = executor.claim(execution["id"])
    executor.heartbeat(running=[execution["id"]])
    executor.progress(claimed, "ingesting table 42")
    page.wait_for_selector(f"#executions >> text={execution['id']}")
    row = row_of(page, "executions", execution["id"])
    page.wait_for_function("() => document.querySelector('#executions').innerText.includes('RUNNING')")
    row.locator("text=log").click()
    page.wait_for_selector("#log >> text=ingesting table 42")
    assert "live" in page.inner_text("#logkind")
    executor.progress(claimed, "ingesting table 42\ningesting table 43")
    page.wait_for_selector("#log >> text=ingesting table 43", timeout=10_000)  # it follows the running task
    page.wait_for_selector("#pools >> text=exec-7")
    assert "ingestion 0.25/1.0 (1 running)" in page.inner_text("#pools")

    row_of(page, "executions", execution["id"]).locator("button[name=cancel]").click()
    page.wait_for_selector("#message >> text=cancel of")
    assert executor.client.cancel_requested(execution["id"])
    executor.finish(claimed, "CANCELLED", "CANCELLED")
    page.wait_for_function("() => document.querySelector('#executions').innerText.includes('CANCELLED')")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_the_page_shows_what_a_run_wrote_with_each_aspects_json(cp, browser, executor_double):
    cp.create_pool("remote", default=True)
    source = cp.create_source("mock", RECIPE)
    execution = cp.run_source(source["id"])
    executor = executor_double("remote", "e1")
    executor.heartbeat()
    claimed = executor.claim(execution["id"])
    run_emitter = DatahubRestEmitter(cp.gms_url, token=claimed.ingest_token)  # what the task's default sink does
    urns = [f"urn:li:dataset:(urn:li:dataPlatform:hive,db.t{i},PROD)" for i in range(3)]
    run_emitter.emit_mcps([MetadataChangeProposalWrapper(entityUrn=u, aspect=a) for u in urns
                           for a in (model.StatusClass(removed=False), model.SubTypesClass(typeNames=["Table"]))])
    executor.finish(claimed)
    page = browser.new_page()
    page.goto(f"{cp.base_url}/#token={cp.admin_token}")
    page.wait_for_selector(f"#executions >> text={execution['id']}")
    row_of(page, "executions", execution["id"]).locator("text=metadata").click()
    page.wait_for_selector("#metasummary >> text=3 entities, 6 aspects")
    row_of(page, "metadata", urns[1]).locator("a", has_text="subTypes").click()
    page.wait_for_selector("#aspect >> text=typeNames")
    assert json.loads(page.inner_text("#aspect").split("\n", 1)[1]) == {"com.linkedin.common.SubTypes": {"typeNames": ["Table"]}}
    assert page.url.endswith("/"), "the #token= shortcut is removed from the address"


def test_without_a_token_the_page_asks_for_one(cp, browser):
    page = browser.new_page()
    page.goto(f"{cp.base_url}/")
    page.wait_for_selector("#login", state="visible")
    assert page.locator("#content").is_hidden()


def admin_cli(cp, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATAHUB_CONTROLPLANE_URL": cp.base_url, "DATAHUB_ADMIN_TOKEN": cp.admin_token}
    return subprocess.run([*ADMIN, *args], env=env, capture_output=True, text=True, timeout=60)


def test_the_admin_cli_manages_pools_sources_executions_and_tokens(cp, tmp_path, executor_double):
    assert admin_cli(cp, "pools", "create", "remote", "--default", "--description", "main").returncode == 0
    pools = json.loads(admin_cli(cp, "--json", "pools", "list").stdout)
    assert [(p["id"], p["is_default"], p["status"]) for p in pools] == [("remote", True, "NO_ONLINE_EXECUTOR")]
    shown = json.loads(admin_cli(cp, "--json", "pools", "show", "remote").stdout)
    assert shown["queue_arn"].startswith("arn:aws:sqs:") and shown["monitors_queue_url"].endswith("-monitors")
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(RECIPE)
    created = json.loads(admin_cli(cp, "--json", "sources", "create", "pg", "--recipe-file", str(recipe),
                                   "--env", "EXECUTOR_TASK_WEIGHT=0.5").stdout)
    assert created["pool_id"] == "default" and created["extra_env"] == {"EXECUTOR_TASK_WEIGHT": "0.5"}
    execution = json.loads(admin_cli(cp, "--json", "sources", "run", "pg").stdout)
    table = admin_cli(cp, "executions", "list").stdout
    assert execution["id"] in table and "PENDING" in table
    monitor = json.loads(admin_cli(cp, "--json", "sources", "run", "pg", "--task", "RUN_MONITOR").stdout)
    assert monitor["task"] == "RUN_MONITOR" and monitor["pool_id"] == "remote"
    cancelled = json.loads(admin_cli(cp, "--json", "executions", "cancel", execution["id"]).stdout)
    assert cancelled["status"] == "CANCELLED"
    executor = executor_double("remote", "exec-9", interval_s=30)
    executor.heartbeat()
    listed = admin_cli(cp, "executors", "list").stdout  # no pool: every executor
    assert "exec-9" in listed and "ONLINE" in listed
    token = json.loads(admin_cli(cp, "--json", "tokens", "create", "--pool", "remote").stdout)
    assert token["token"].startswith("dhx_") and token["pools"] == ["remote"]
    assert token["token"] not in admin_cli(cp, "--json", "tokens", "list").stdout
    refused = admin_cli(cp, "pools", "delete", "remote")
    assert refused.returncode == 1 and "used by sources: pg" in refused.stderr
    unknown = admin_cli(cp, "executions", "show", "exe_nope")
    assert unknown.returncode == 1 and "404" in unknown.stderr


@pytest.mark.parametrize("args, says", [
    (["sources", "create", "s", "--recipe-file", "RECIPE", "--env", "NAME"], "--env 'NAME' is not NAME=VALUE"),
    (["sources", "create", "s", "--recipe-file", "LATIN1"], "is not UTF-8 text"),
    (["sources", "frobnicate"], "invalid choice"),
    (["pools", "queues", "p", "--visibility-timeout", "soon"], "invalid int value"),
    (["--token-file", "MISSING", "pools", "list"], "--token-file MISSING cannot be read (No such file or directory)"),
    (["executions", "list", "--status", "DONE"], "invalid choice: 'DONE'"),
    (["serve", "--datahub-url", "http://127.0.0.1:1/gms"], "upstream mode needs --datahub-url, --datahub-token-file"),
    (["serve", "--datahub-url", "127.0.0.1:1", "--datahub-token-file", "RECIPE", "--datahub-ingest-token-file",
      "RECIPE"], "is not an http(s) URL"),
    (["serve", "--datahub-url", "http://127.0.0.1:1/gms", "--datahub-token-file", "MISSING",
      "--datahub-ingest-token-file", "RECIPE"], "--datahub-token-file MISSING cannot be read"),
])
def test_bad_arguments_get_one_line_and_exit_code_2(cp, tmp_path, args, says):
    (tmp_path / "RECIPE").write_text(RECIPE)
    (tmp_path / "LATIN1").write_bytes("source: {type: caf\xe9}\n".encode("latin-1"))
    args = [str(tmp_path / a) if a in ("RECIPE", "LATIN1") else a for a in args]
    done = admin_cli(cp, *args)
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_a_source_put_on_a_pool_that_does_not_exist_is_saved_with_a_warning(cp, tmp_path):
    """DataHub saves any Executor ID; ours used to say nothing, and the runs waited PENDING for good."""
    cp.create_pool("remote", default=True)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(RECIPE)
    created = admin_cli(cp, "sources", "create", "pg", "--recipe-file", str(recipe), "--pool", "remtoe")
    assert created.returncode == 0 and json.loads(created.stdout)["pool_id"] == "remtoe"
    assert "warning: there is no pool remtoe" in created.stderr and "pools create remtoe" in created.stderr
    moved = admin_cli(cp, "sources", "set-pool", "pg", "remote")
    assert moved.returncode == 0 and moved.stderr == ""
    moved_back = admin_cli(cp, "sources", "set-pool", "pg", "nowhere")
    assert moved_back.returncode == 0 and "warning: there is no pool nowhere" in moved_back.stderr


def test_set_pool_moves_a_source_and_keeps_its_schedule(cp, graph):
    """An update replaces the whole source info; set-pool rebuilt it from what GraphQL shows and
    dropped the schedule, so a scheduled source silently stopped running on time."""
    cp.create_pool("first", default=True)
    cp.create_pool("remote")
    urn = "urn:li:dataHubIngestionSource:nightly"
    graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=urn, aspect=model.DataHubIngestionSourceInfoClass(
        name="nightly", type="datahub-mock-data",
        schedule=model.DataHubIngestionSourceScheduleClass(interval="0 3 * * *", timezone="Europe/Paris"),
        config=model.DataHubIngestionSourceConfigClass(recipe=json.dumps({"source": {"type": "datahub-mock-data"}}),
                                                       executorId="default", extraArgs={"extra_env_vars": "{}"}))))
    moved = admin_cli(cp, "--json", "sources", "set-pool", "nightly", "remote")
    assert moved.returncode == 0, moved.stderr
    info = graph.get_aspect(urn, model.DataHubIngestionSourceInfoClass)
    assert info.config.executorId == "remote" and info.schedule is not None
    assert (info.schedule.interval, info.schedule.timezone) == ("0 3 * * *", "Europe/Paris")
    assert info.config.extraArgs == {"extra_env_vars": "{}"}
    assert json.loads(moved.stdout)["schedule"] == {"interval": "0 3 * * *", "timezone": "Europe/Paris"}


def test_a_pool_named_default_that_is_not_the_default_gets_no_runs_and_can_be_deleted(cp, tmp_path):
    """After the quickstart (its pool is named default) an admin made another pool the default:
    executorId `default` routes to that one, so deleting the pool named default was refused for
    sources whose runs never went there. Only a source naming that pool's urn keeps it."""
    cp.create_pool("default", default=True, description="quickstart pool")
    cp.create_pool("remote")
    assert admin_cli(cp, "pools", "set-default", "remote").returncode == 0
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(RECIPE)
    created = json.loads(admin_cli(cp, "--json", "sources", "create", "pg", "--recipe-file", str(recipe),
                                   "--pool", "default").stdout)
    assert cp.execution(cp.run_source(created["id"])["id"])["pool_id"] == "remote"

    def listed(pool_id: str) -> list[str]:
        pools = cp.graphql("{ listRemoteExecutorPools(input: {start: 0, count: 10}) { remoteExecutorPools { executorPoolId "
                           "ingestionSources(input: {start: 0, count: 10, hideSystemSources: false}) "
                           "{ ingestionSources { name } } } } }")
        (pool,) = [p for p in pools["listRemoteExecutorPools"]["remoteExecutorPools"] if p["executorPoolId"] == pool_id]
        return [s["name"] for s in pool["ingestionSources"]["ingestionSources"]]

    assert listed("default") == [] and listed("remote") == ["pg"]
    pinned = cp.create_source("pinned", RECIPE, pool_id="urn:li:dataHubRemoteExecutorPool:default")
    assert listed("default") == ["pinned"]
    refused = admin_cli(cp, "pools", "delete", "default")
    assert refused.returncode == 1 and "used by sources: pinned;" in refused.stderr, refused.stderr
    assert admin_cli(cp, "sources", "delete", pinned["urn"]).returncode == 0
    deleted = admin_cli(cp, "pools", "delete", "default")
    assert deleted.returncode == 0, deleted.stderr
    assert cp.cp.pools.ids() == ["remote"]
    refused = admin_cli(cp, "pools", "delete", "remote")
    assert refused.returncode == 1 and "used by sources: pg;" in refused.stderr


def test_sources_create_refuses_a_name_a_source_has(cp, tmp_path):
    """A second `sources create pg` made a second source named pg, and every command that finds
    a source by its name (run, show, set-pool, delete) then asked for the urn instead."""
    cp.create_pool("remote", default=True)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(RECIPE)
    first = json.loads(admin_cli(cp, "--json", "sources", "create", "pg", "--recipe-file", str(recipe)).stdout)
    again = admin_cli(cp, "sources", "create", "pg", "--recipe-file", str(recipe), "--pool", "remote")
    _one_line_refusal(again, f"409: a source named pg exists ({first['urn']}): choose another name")
    assert [s["name"] for s in json.loads(admin_cli(cp, "--json", "sources", "list").stdout)] == ["pg"]
    ran = admin_cli(cp, "--json", "sources", "run", "pg")
    assert ran.returncode == 0 and json.loads(ran.stdout)["source"] == first["urn"], ran.stderr
    assert admin_cli(cp, "sources", "create", "pg2", "--recipe-file", str(recipe)).returncode == 0


def test_serve_takes_its_state_dir_after_the_word_serve(tmp_path):
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([*ADMIN, "serve", "--state-dir", str(tmp_path / "cp"), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        assert f"127.0.0.1:{port}" in line and str(tmp_path / "cp") in line, line
        deadline = time.monotonic() + 10
        while not (tmp_path / "cp" / "admin-token").exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        listed = subprocess.run([*ADMIN, "--state-dir", str(tmp_path / "cp"), "--json", "pools", "list"],
                                capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0 and json.loads(listed.stdout) == []
    finally:
        server.terminate()
        server.wait(30)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _one_line_refusal(done: subprocess.CompletedProcess, says: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and says in done.stderr, done.stderr
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1, done.stderr


def test_serve_on_a_port_something_listens_on_says_so_in_one_line(cp, tmp_path):
    """It printed uvicorn's bind error and a traceback ending in 'did not start'."""
    port = cp.base_url.rsplit(":", 1)[1]
    done = subprocess.run([*ADMIN, "serve", "--state-dir", str(tmp_path / "other"), "--port", port],
                          capture_output=True, text=True, timeout=60)
    _one_line_refusal(done, f"cannot listen on 127.0.0.1:{port}")
    assert "--port" in done.stderr


def test_a_second_control_plane_on_the_same_state_dir_is_refused_at_once(cp, tmp_path):
    """Its embedded SQS server's remembered port was the first one's, and the start waited for
    it for ever, deaf to Ctrl-C and SIGTERM (a second bin/quickstart in another terminal)."""
    state = str(cp.server.state_dir)
    serve = subprocess.run([*ADMIN, "serve", "--state-dir", state, "--port", str(_free_port())],
                           capture_output=True, text=True, timeout=30)
    _one_line_refusal(serve, f"another control plane (pid {os.getpid()}) is using {state}")
    from controlplane.testing import running_controlplane

    with running_controlplane(tmp_path / "quickstart" / "controlplane"):  # as a first bin/quickstart leaves it
        quickstart = subprocess.run([sys.executable, "-m", "controlplane.quickstart", "--state-dir",
                                     str(tmp_path / "quickstart"), "--port", "0", "--exit-after-run"],
                                    cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=30)
    assert quickstart.returncode == 1 and "Traceback" not in quickstart.stderr, quickstart.stderr
    assert f"cannot start: another control plane (pid {os.getpid()}) is using" in quickstart.stdout, quickstart.stdout


def test_a_restart_whose_remembered_queue_port_was_taken_meanwhile_starts_on_another(tmp_path):
    """The embedded SQS server's port is remembered across restarts; another program on it
    made the start wait for ever."""
    import socket

    from controlplane.testing import running_controlplane

    with running_controlplane(tmp_path / "cp") as first:
        first.create_pool("remote", default=True)
    taken = int((tmp_path / "cp" / "sqs-port").read_text())
    with socket.socket() as squatter:
        # As listening programs do: a connection the first run's server closed first (a refused
        # request, a client gone mid-body) holds the port in TIME_WAIT for a minute, which refuses
        # a bind without it (seen once in CI) but never a listener's.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        serve = subprocess.Popen([*ADMIN, "serve", "--state-dir", str(tmp_path / "cp"), "--port", str(_free_port())],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            import select

            readable, _, _ = select.select([serve.stdout], [], [], 60)
            started = serve.stdout.readline() if readable else "(nothing in 60 s)"
            assert "control plane on http://127.0.0.1:" in started, serve.stderr.read() if serve.poll() is not None else started
            shown = subprocess.run([*ADMIN, "--state-dir", str(tmp_path / "cp"), "--json", "pools", "show", "remote"],
                                   capture_output=True, text=True, timeout=30)
            assert shown.returncode == 0, shown.stderr
            assert f":{taken}/" not in json.loads(shown.stdout)["queue_url"], "the pool's queue moved with the server"
        finally:
            serve.terminate()
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:  # the old hang was deaf to SIGTERM
                serve.kill()
                serve.wait()


def test_output_piped_into_a_reader_that_stopped_ends_quietly_not_with_a_traceback(cp):
    """`executions logs ID | head`, or quitting `less` early: the reader is gone before the CLI writes."""
    cp.create_pool("remote", default=True)
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "DATAHUB_CONTROLPLANE_URL": cp.base_url, "DATAHUB_ADMIN_TOKEN": cp.admin_token}
    try:
        done = subprocess.run([*ADMIN, "--json", "pools", "list"], env=env, stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    finally:
        os.close(write_end)
    assert done.stderr == "" and done.returncode == 1, done.stderr


def test_a_state_dir_whose_control_plane_stopped_while_another_took_its_port_says_so_not_just_401(tmp_path):
    """The quickstart stopped, then `serve --state-dir .state/cp` took 9002: the quickstart's own
    `--state-dir` command reached the other control plane, and the newcomer read only `401: unknown token`."""
    from controlplane.testing import running_controlplane

    port = _free_port()
    with running_controlplane(tmp_path / "first", port=port):
        pass
    with running_controlplane(tmp_path / "second", port=port):
        env = {k: v for k, v in os.environ.items() if k not in ("DATAHUB_CONTROLPLANE_URL", "DATAHUB_ADMIN_TOKEN")}
        done = subprocess.run([*ADMIN, "--state-dir", str(tmp_path / "first"), "pools", "list"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "401" in done.stderr and f"serve --state-dir {tmp_path / 'first'}" in done.stderr, done.stderr
    assert (tmp_path / "first" / "admin-token").read_text().strip() not in done.stderr
