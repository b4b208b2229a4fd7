"""The web page in a real headless browser (Debian's chromium), and the admin CLI as an
operator runs it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import RECIPE, executor_api, heartbeat_body

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ADMIN = [str(Path(sys.executable).parent / "datahub-executor-admin")]


def render(url: str, profile: Path, screenshot: Path | None = None) -> str:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: bin/install-system-deps installs it")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=8000"]
    if screenshot is not None:
        subprocess.run([CHROMIUM, *flags, f"--screenshot={screenshot}", "--window-size=1400,900", url],
                       capture_output=True, timeout=120)
    done = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return done.stdout


def test_the_page_shows_pools_executors_sources_and_executions_with_status(cp, tmp_path):
    cp.create_pool("remote", default=True, description="VPC in eu-west-1")
    cp.create_pool("empty")
    call = executor_api(cp, cp.create_executor_token(["remote"]))
    call("PUT", "/pools/remote/executors/exec-7", json=heartbeat_body(interval=30))
    source = cp.create_source("mysql-prod", RECIPE)
    execution = cp.run_source(source["id"])
    call("POST", f"/executions/{execution['id']}/claim", json={"executor_id": "exec-7"})
    call("POST", f"/executions/{execution['id']}/progress", json={"executor_id": "exec-7", "log_tail": "ingesting table 42"})
    dom = render(f"{cp.base_url}/#token={cp.admin_token}", tmp_path / "profile", tmp_path / "page.png")
    assert "remote (default)" in dom
    assert "exec-7" in dom and "host-1" in dom and "ingestion 0.25/1.0 (1 running)" in dom
    assert "NO_ONLINE_EXECUTOR" in dom, "a pool with no online executor says so"
    assert "mysql-prod" in dom
    assert execution["id"] in dom and ">RUNNING<" in dom
    assert cp.admin_token not in dom, "the token is taken from the address and not shown"
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_without_a_token_the_page_asks_for_one(cp, tmp_path):
    dom = render(f"{cp.base_url}/", tmp_path / "profile")
    assert '<section id="login">' in dom, "the token form is shown (no longer hidden)"
    assert '<div id="content" hidden="">' in dom


def admin_cli(cp, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATAHUB_CONTROLPLANE_URL": cp.base_url, "DATAHUB_ADMIN_TOKEN": cp.admin_token}
    return subprocess.run([*ADMIN, *args], env=env, capture_output=True, text=True, timeout=60)


def test_the_admin_cli_manages_pools_sources_executions_and_tokens(cp, tmp_path):
    assert admin_cli(cp, "pools", "create", "remote", "--default", "--description", "main").returncode == 0
    pools = json.loads(admin_cli(cp, "--json", "pools", "list").stdout)
    assert [p["id"] for p in pools] == ["remote"]
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(RECIPE)
    created = json.loads(admin_cli(cp, "--json", "sources", "create", "pg", "--recipe-file", str(recipe),
                                   "--env", "EXECUTOR_TASK_WEIGHT=0.5").stdout)
    assert created["pool_id"] == "remote" and created["extra_env"] == {"EXECUTOR_TASK_WEIGHT": "0.5"}
    execution = json.loads(admin_cli(cp, "--json", "sources", "run", "pg").stdout)
    table = admin_cli(cp, "executions", "list").stdout
    assert execution["id"] in table and "PENDING" in table
    cancelled = json.loads(admin_cli(cp, "--json", "executions", "cancel", execution["id"]).stdout)
    assert cancelled["status"] == "CANCELLED"
    token = json.loads(admin_cli(cp, "--json", "tokens", "create", "--pool", "remote").stdout)
    assert token["token"].startswith("dhx_") and token["pools"] == ["remote"]
    listed = admin_cli(cp, "--json", "tokens", "list").stdout
    assert token["token"] not in listed
    refused = admin_cli(cp, "pools", "delete", "remote")
    assert refused.returncode == 1 and "used by sources: pg" in refused.stderr
    unknown = admin_cli(cp, "executions", "show", "exe_nope")
    assert unknown.returncode == 1 and "404" in unknown.stderr
