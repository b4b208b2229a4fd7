"""`datahub-executor-admin`: the control plane from a terminal, with --json everywhere.

    datahub-executor-admin serve --state-dir DIR [--host H] [--port P] [--queue embedded|aws]
    datahub-executor-admin pools list|create|show|delete|set-default ...
    datahub-executor-admin sources list|create|show|set-pool|run ...
    datahub-executor-admin executions list|show|logs|cancel ...
    datahub-executor-admin executors list POOL
    datahub-executor-admin tokens list|create|revoke ...

The URL and admin token come from --url/--token-file or DATAHUB_CONTROLPLANE_URL and
DATAHUB_ADMIN_TOKEN (or <state-dir>/admin-token via --state-dir). Tokens are shown once, at creation.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

import requests


class AdminError(Exception):
    pass


class AdminClient:
    def __init__(self, url: str, token: str) -> None:
        self.base = url.rstrip("/") + "/gms/admin/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs):
        try:
            response = self.session.request(method, self.base + path, timeout=30, **kwargs)
        except requests.RequestException as exc:
            raise AdminError(f"control plane not reachable at {self.base}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text
            raise AdminError(f"{response.status_code}: {reason}")
        return response.json()


def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(r.get(c, "") if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datahub-executor-admin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("DATAHUB_CONTROLPLANE_URL", "http://127.0.0.1:9002"))
    parser.add_argument("--token-file", help="file holding an admin token")
    parser.add_argument("--state-dir", help="a control plane state dir: its admin-token and api-port are used")
    parser.add_argument("--json", action="store_true", help="print JSON")
    groups = parser.add_subparsers(dest="group", required=True)

    serve = groups.add_parser("serve", help="run the control plane")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9002)
    serve.add_argument("--queue", choices=["embedded", "aws"], default="embedded")
    serve.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))

    pools = groups.add_parser("pools").add_subparsers(dest="action", required=True)
    pools.add_parser("list")
    create = pools.add_parser("create")
    create.add_argument("pool_id")
    create.add_argument("--description", default="")
    create.add_argument("--default", action="store_true")
    create.add_argument("--visibility-timeout", type=int, default=60)
    create.add_argument("--max-receive-count", type=int, default=5)
    for name in ("show", "delete", "set-default"):
        pools.add_parser(name).add_argument("pool_id")

    sources = groups.add_parser("sources").add_subparsers(dest="action", required=True)
    sources.add_parser("list")
    create = sources.add_parser("create")
    create.add_argument("name")
    create.add_argument("--recipe-file", required=True)
    create.add_argument("--pool")
    create.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    create.add_argument("--version")
    sources.add_parser("show").add_argument("source")
    set_pool = sources.add_parser("set-pool")
    set_pool.add_argument("source")
    set_pool.add_argument("pool_id")
    run = sources.add_parser("run")
    run.add_argument("source")
    run.add_argument("--task", default="RUN_INGEST", choices=["RUN_INGEST", "TEST_CONNECTION", "RUN_MONITOR"])

    executions = groups.add_parser("executions").add_subparsers(dest="action", required=True)
    listing = executions.add_parser("list")
    listing.add_argument("--source")
    listing.add_argument("--status")
    for name in ("show", "logs", "cancel"):
        executions.add_parser(name).add_argument("execution_id")

    executors = groups.add_parser("executors").add_subparsers(dest="action", required=True)
    executors.add_parser("list").add_argument("pool_id")

    tokens = groups.add_parser("tokens").add_subparsers(dest="action", required=True)
    tokens.add_parser("list")
    create = tokens.add_parser("create")
    create.add_argument("--kind", choices=["executor", "admin"], default="executor")
    create.add_argument("--pool", action="append", help="scope to this pool (repeat); none: all pools")
    create.add_argument("--description", default="")
    tokens.add_parser("revoke").add_argument("token_id")
    return parser


def _client(args: argparse.Namespace) -> AdminClient:
    url, token = args.url, os.environ.get("DATAHUB_ADMIN_TOKEN")
    if args.state_dir:
        state = Path(args.state_dir)
        token = (state / "admin-token").read_text().strip()
        if (state / "api-port").exists() and "DATAHUB_CONTROLPLANE_URL" not in os.environ and args.url.endswith(":9002"):
            url = f"http://127.0.0.1:{(state / 'api-port').read_text().strip()}"
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
    if not token:
        raise AdminError("no admin token: use --token-file, --state-dir or DATAHUB_ADMIN_TOKEN")
    return AdminClient(url, token)


def _serve(args: argparse.Namespace) -> int:
    from .server import ControlPlaneServer, ServerConfig

    state_dir = Path(args.state_dir or ".state/controlplane")
    server = ControlPlaneServer(ServerConfig(state_dir=state_dir, host=args.host, port=args.port, queue=args.queue,
                                             region=args.region))
    server.start()
    print(f"control plane on {server.base_url} (web page: {server.base_url}/, API: {server.gms_url}); "
          f"admin token in {server.admin_token_path}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


def run(args: argparse.Namespace) -> object:
    c = _client(args)
    g, a = args.group, args.action
    if g == "pools":
        if a == "list":
            return c.call("GET", "/pools")
        if a == "create":
            return c.call("POST", "/pools", json={"id": args.pool_id, "description": args.description, "default": args.default,
                                                  "visibility_timeout_s": args.visibility_timeout,
                                                  "max_receive_count": args.max_receive_count})
        if a == "show":
            return c.call("GET", f"/pools/{args.pool_id}")
        if a == "delete":
            return c.call("DELETE", f"/pools/{args.pool_id}")
        return c.call("POST", f"/pools/{args.pool_id}/default")
    if g == "sources":
        if a == "list":
            return c.call("GET", "/sources")
        if a == "create":
            env = dict(item.split("=", 1) for item in args.env)
            return c.call("POST", "/sources", json={"name": args.name, "recipe": Path(args.recipe_file).read_text(),
                                                    "pool_id": args.pool, "extra_env": env, "version": args.version})
        if a == "show":
            return c.call("GET", f"/sources/{args.source}")
        if a == "set-pool":
            return c.call("PATCH", f"/sources/{args.source}", json={"pool_id": args.pool_id})
        return c.call("POST", f"/sources/{args.source}/run", json={"task": args.task})
    if g == "executions":
        if a == "list":
            params = {k: v for k, v in (("source", args.source), ("status", args.status)) if v}
            return c.call("GET", "/executions", params=params)
        if a == "show":
            return c.call("GET", f"/executions/{args.execution_id}")
        if a == "logs":
            return c.call("GET", f"/executions/{args.execution_id}/logs")
        return c.call("POST", f"/executions/{args.execution_id}/cancel")
    if g == "executors":
        return c.call("GET", f"/pools/{args.pool_id}/executors")
    if a == "list":
        return c.call("GET", "/tokens")
    if a == "create":
        return c.call("POST", "/tokens", json={"kind": args.kind, "pools": args.pool, "description": args.description})
    return c.call("DELETE", f"/tokens/{args.token_id}")


VIEWS = {
    ("pools", "list"): ["id", "is_default", "status", "online_executors", "description"],
    ("sources", "list"): ["id", "name", "pool_id", "last_status"],
    ("executions", "list"): ["id", "status", "reason", "task", "source_id", "executor_id", "peak_memory_bytes"],
    ("executors", "list"): ["executor_id", "status", "state", "hostname", "version", "last_seen_s_ago", "running"],
    ("tokens", "list"): ["id", "kind", "pools", "description"],
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.group == "serve":
        return _serve(args)
    try:
        result = run(args)
    except (AdminError, OSError) as exc:
        print(f"datahub-executor-admin: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    elif (args.group, args.action) == ("executions", "logs"):
        print(result["log"])
    elif isinstance(result, list) and (args.group, args.action) in VIEWS:
        for row in result:
            row["last_status"] = (row.get("last_execution") or {}).get("status")
            row["running"] = len(row.get("running_executions") or [])
        print(_table(result, VIEWS[(args.group, args.action)]))
    else:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
