"""`datahub-executor-admin` took most of a second per call, `--help` too, before it did anything:
its module imported the control plane's ingest (DataHub's schema classes) and executions
(boto3, the store, the life cycle) for three strings and one function that two commands use.
A command now loads only its own; each is run here in a fresh interpreter, which says what it
imported. No time is measured: what is held is which modules load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# What the cheap commands must never load: the server side, DataHub's schema classes, AWS's SDK.
HEAVY = ("datahub", "boto3", "botocore", "moto", "fastapi", "starlette", "uvicorn", "ariadne", "graphql",
         "controlplane.ingest", "controlplane.executions", "controlplane.server", "controlplane.store")

# Runs each command given (a JSON list of argument lists) in this one interpreter and prints, for
# each, which of the watched modules (HEAVY, and requests) are loaded after it.
PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from controlplane import admin_cli
    watched = json.loads(sys.argv[1])
    loaded = {}
    for argv in json.loads(sys.argv[2]):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                code = admin_cli.main(argv)
            except SystemExit as exc:
                code = exc.code
        loaded[" ".join(argv)] = {"code": code, "modules": [m for m in watched if m in sys.modules]}
    print(json.dumps(loaded))
""")


def probe(commands: list[list[str]], env: dict[str, str] | None = None) -> dict[str, dict]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([*HEAVY, "requests"]), json.dumps(commands)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_help_and_a_usage_error_load_nothing_but_the_parser():
    loaded = probe([["--help"], ["pools", "frobnicate"], ["sources", "create", "x"]])
    assert {command: found["code"] for command, found in loaded.items()} == {
        "--help": 0, "pools frobnicate": 2, "sources create x": 2}
    assert {command: found["modules"] for command, found in loaded.items()} == {
        command: [] for command in loaded}


def test_listings_and_shows_load_no_server_schema_classes_or_aws_sdk(cp):
    cp.create_pool("imports")
    commands = [["pools", "list"], ["pools", "show", "imports"], ["sources", "list"], ["executions", "list"],
                ["executors", "list"], ["tokens", "list"], ["executions", "show", "no-such-run"]]
    loaded = probe(commands, {"DATAHUB_CONTROLPLANE_URL": cp.base_url, "DATAHUB_ADMIN_TOKEN": cp.admin_token})
    assert {command: found["code"] for command, found in loaded.items()} == {
        **{" ".join(c): 0 for c in commands}, "executions show no-such-run": 1}
    assert {command: [m for m in found["modules"] if m != "requests"]
            for command, found in loaded.items()} == {command: [] for command in loaded}
