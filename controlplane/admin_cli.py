"""`datahub-executor-admin`: the control plane from a terminal, through DataHub's API (GraphQL and
Rest.li) and, where DataHub has no operation, ours; --json everywhere.

    datahub-executor-admin serve [--state-dir DIR] [--host H] [--port P] [--queue embedded|aws]
                                 [--datahub-url URL --datahub-token-file F --datahub-ingest-token-file F]
    datahub-executor-admin pools list | create ID [--default] [--description D] | show ID | delete ID
                                 | set-default ID | describe ID TEXT | queues ID [--visibility-timeout S] [--max-receive-count N]
    datahub-executor-admin sources list | create NAME --recipe-file F [--pool P] [--env NAME=VALUE]... [--version V]
                                   | show NAME | set-pool NAME POOL | run NAME [--task T] | delete NAME
    datahub-executor-admin executions list [--source NAME] [--status S] | show ID | logs ID | cancel ID
    datahub-executor-admin executors list [POOL]
    datahub-executor-admin runs show RUN_ID
    datahub-executor-admin tokens list | create [--kind executor|admin|ingest] [--pool P]... | revoke ID

The URL and admin token come from --url/--token-file, or DATAHUB_CONTROLPLANE_URL and
DATAHUB_ADMIN_TOKEN, or a control plane's --state-dir (its admin-token and api-port). Tokens are
shown once, at creation. Bad arguments: one line, exit 2; a refusal from the control plane:
one line, exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

from vocabulary import statuses as S
from vocabulary.results import executor_details
from vocabulary.tasks import RUN_INGEST, TASKS

from . import entities as E
from .liveness import ONLINE, liveness

# Only what every command needs is imported above; the rest where it is used, so that a command
# loads only its own. Imported here, .ingest (DataHub's schema classes) and .executions (boto3,
# the store, the life cycle) made every call, `--help` too, take most of a second before it did
# anything, for three strings and one function that two commands use. .server (FastAPI, the
# GraphQL stack) is serve's alone, and requests is left to the commands that call the control
# plane. tests/controlplane/test_admin_cli_imports.py holds the cheap commands to this.


class AdminError(Exception):
    pass


class VersionConflict(AdminError):
    """A write refused because the aspect is no longer the version it named (If-Version-Match):
    someone changed it since it was read."""


SET_POOL_ATTEMPTS = 5


def _versioning() -> ModuleType:
    """The module that defines GMS's conditional writes (If-Version-Match) once, for the server
    and this client; it loads DataHub's schema classes, so only set-pool and a 422 import it."""
    from . import ingest

    return ingest


class UsageError(Exception):
    """Bad arguments: exit 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints the whole usage
        raise UsageError(f"{self.prog}: {message} (see --help)")


class AdminClient:
    def __init__(self, url: str, token: str, *, state_dir: Path | None = None) -> None:
        import requests

        self.gms = url.rstrip("/") + "/gms"
        self.state_dir = state_dir  # where the token came from, to say why it may be refused
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        import requests

        try:
            response = self.session.request(method, url, timeout=30, **kwargs)
        except requests.RequestException as exc:
            raise AdminError(f"control plane not reachable at {self.gms}: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:300]}
        if response.status_code >= 400:
            reason = body.get("error") or body.get("message") if isinstance(body, dict) else body
            # A conditional write whose If-Version-Match no longer holds: 422 as GMS's Rest.li answers it.
            refused = response.status_code == 422 and _versioning().VERSION_REFUSED in str(reason)
            if response.status_code == 401 and self.state_dir is not None:
                # The state dir's api-port outlives its control plane: another one may listen there now.
                reason = (f"{reason}: the control plane at {self.gms} refused the token in {self.state_dir}/admin-token; "
                          f"either it is not this state dir's (start that one: datahub-executor-admin serve "
                          f"--state-dir {self.state_dir}) or that token was revoked (restart the control plane: "
                          f"its next start writes a new one)")
            raise (VersionConflict if refused else AdminError)(f"{response.status_code}: {reason}")
        return body

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = self._request("POST", f"{self.gms}/api/graphql", json={"query": query, "variables": variables})
        if body.get("errors"):
            raise AdminError("; ".join(e.get("message", str(e)) for e in body["errors"]))
        return body["data"]

    def ingest(self, urn: str, aspect: str, value: dict[str, Any], *, if_version: str | None = None) -> None:
        """Write ASPECT of URN; with IF_VERSION, only if it is still that version (else VersionConflict)."""
        proposal = {"entityType": urn.split(":", 3)[2], "entityUrn": urn, "changeType": "UPSERT", "aspectName": aspect,
                    "aspect": {"value": json.dumps(value), "contentType": "application/json"}}
        if if_version is not None:
            proposal["headers"] = {_versioning().VERSION_HEADER: if_version}
        self._request("POST", f"{self.gms}/aspects?action=ingestProposal", json={"proposal": proposal})

    def versioned(self, urn: str, aspect: str) -> tuple[dict[str, Any], str]:
        """The latest ASPECT of URN and its version (its systemMetadata.version), for ingest's IF_VERSION."""
        found = self.restli("GET", f"/entitiesV2/{quote(urn, safe='')}?aspects=List({aspect})")["aspects"].get(aspect)
        if found is None:
            raise AdminError(f"404: {aspect} of {urn} not found")
        return found["value"], (found.get("systemMetadata") or {}).get("version") or _versioning().UNVERSIONED_STORED

    def restli(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, f"{self.gms}{path}", **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, f"{self.gms}/admin/v1{path}", **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="datahub-executor-admin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("DATAHUB_CONTROLPLANE_URL", "http://127.0.0.1:9002"))
    parser.add_argument("--token-file", help="file holding an admin token")
    parser.add_argument("--state-dir", help="a control plane state dir: its admin-token and api-port are used")
    parser.add_argument("--json", action="store_true", help="print JSON")
    groups = parser.add_subparsers(dest="group", required=True, parser_class=OneLineParser)

    serve = groups.add_parser("serve", help="run the control plane")
    serve.add_argument("--state-dir", dest="serve_state_dir", help="where its database and admin token live")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9002)
    serve.add_argument("--queue", choices=["embedded", "aws"], default="embedded")
    serve.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    serve.add_argument("--datahub-url", help="upstream mode: a DataHub GMS whose runs for our pools run here "
                                            "(docs/datahub-oss.md)")
    serve.add_argument("--datahub-token-file", help="upstream mode: file holding a DataHub token that manages "
                                                   "ingestion and secrets")
    serve.add_argument("--datahub-ingest-token-file", help="upstream mode: file holding the DataHub token tasks "
                                                          "ingest metadata with")
    serve.add_argument("--datahub-sink-url", help="upstream mode: the GMS URL as executors reach it (default: "
                                                 "--datahub-url)")
    serve.add_argument("--datahub-poll-interval", type=float, default=2.0, metavar="SECONDS",
                       help="upstream mode: how often DataHub is asked for new runs")

    pools = groups.add_parser("pools", help="executor pools and their queues").add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    pools.add_parser("list", help="every pool, its status and ONLINE executors")
    create = pools.add_parser("create", help="a pool and its SQS queues")
    create.add_argument("pool_id")
    create.add_argument("--description", default="")
    create.add_argument("--default", action="store_true")
    for name, what in (("show", "one pool, its queues and executors"), ("delete", "delete a pool"),
                       ("set-default", "make it the pool of sources that name none (Executor ID 'default')")):
        pools.add_parser(name, help=what).add_argument("pool_id")
    describe = pools.add_parser("describe", help="set the pool's description to TEXT")
    describe.add_argument("pool_id")
    describe.add_argument("description")
    queues = pools.add_parser("queues", help="change its queues' visibility timeout or redrive count")
    queues.add_argument("pool_id")
    queues.add_argument("--visibility-timeout", type=int)
    queues.add_argument("--max-receive-count", type=int)

    sources = groups.add_parser("sources", help="ingestion sources (recipes) and their runs").add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    sources.add_parser("list", help="every source, its pool and last run's status")
    create = sources.add_parser("create", help="a source from a recipe file (a name no source has)")
    create.add_argument("name")
    create.add_argument("--recipe-file", required=True)
    create.add_argument("--pool")
    create.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    create.add_argument("--version")
    for name, what in (("show", "one source, by name or urn"), ("delete", "delete a source")):
        sources.add_parser(name, help=what).add_argument("source")
    set_pool = sources.add_parser("set-pool", help="route the source's runs to another pool")
    set_pool.add_argument("source")
    set_pool.add_argument("pool_id")
    run = sources.add_parser("run", help="run the source now (an execution, PENDING until an executor takes it)")
    run.add_argument("source")
    run.add_argument("--task", default=RUN_INGEST, choices=sorted(TASKS))

    executions = groups.add_parser("executions", help="runs: list, show, logs, cancel").add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    listing = executions.add_parser("list", help="the latest runs (--count of them, 50 by default)")
    listing.add_argument("--source")
    listing.add_argument("--status", type=str.upper, choices=sorted(S.ALL))
    listing.add_argument("--count", type=int, default=50)
    for name, what in (("show", "one run and its result"), ("logs", "a run's log, as the executor uploaded it"),
                       ("cancel", "cancel a run (PENDING or RUNNING)")):
        executions.add_parser(name, help=what).add_argument("execution_id")

    executors = groups.add_parser("executors", help="executors and their live status").add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    executors.add_parser("list", help="executors (of POOL, or all) and their status").add_argument("pool_id", nargs="?")

    runs = groups.add_parser("runs", help="what a run wrote (its run id is the execution id)").add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    runs.add_parser("show", help="the entities and aspects a run wrote").add_argument("run_id")

    tokens = groups.add_parser("tokens", help="access tokens (shown once, at creation)").add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    tokens.add_parser("list", help="tokens, never their values")
    create = tokens.add_parser("create", help="a token, printed once")
    create.add_argument("--kind", choices=["executor", "admin", "ingest"], default="executor",
                        help="ingest: writes metadata and nothing else (e.g. for an upstream-mode control plane's tasks)")
    create.add_argument("--pool", action="append", help="scope to this pool (repeat); none: all pools")
    create.add_argument("--description", default="")
    tokens.add_parser("revoke", help="revoke a token by its id").add_argument("token_id")
    return parser


def _client(args: argparse.Namespace) -> AdminClient:
    url, token, from_state_dir = args.url, os.environ.get("DATAHUB_ADMIN_TOKEN"), None
    if args.state_dir:
        state = Path(args.state_dir)
        try:
            token = (state / "admin-token").read_text().strip()
        except OSError as exc:
            raise AdminError(f"no admin token in {state} ({exc.strerror}): is it a control plane's state dir?") from None
        from_state_dir = state
        if (state / "api-port").exists() and "DATAHUB_CONTROLPLANE_URL" not in os.environ and args.url.endswith(":9002"):
            url = f"http://127.0.0.1:{(state / 'api-port').read_text().strip()}"
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"--token-file {args.token_file} cannot be read ({exc.strerror})") from None
        from_state_dir = None
    if not token:
        raise AdminError("no admin token: use --token-file, --state-dir or DATAHUB_ADMIN_TOKEN")
    return AdminClient(url, token, state_dir=from_state_dir)


def _upstream_config(args: argparse.Namespace):
    """Upstream mode's settings, or None; the token files must be readable now (one-line refusal).
    Checked before anything heavy is imported: a typo is refused at once, not after DataHub's client loads."""
    given = [args.datahub_url, args.datahub_token_file, args.datahub_ingest_token_file]
    if not any(given) and not args.datahub_sink_url:
        return None
    if not all(given):
        raise UsageError("upstream mode needs --datahub-url, --datahub-token-file and --datahub-ingest-token-file")
    if not args.datahub_url.startswith(("http://", "https://")):
        raise UsageError(f"--datahub-url {args.datahub_url!r} is not an http(s) URL")
    for flag, path in (("--datahub-token-file", args.datahub_token_file),
                       ("--datahub-ingest-token-file", args.datahub_ingest_token_file)):
        try:
            if not Path(path).read_text().strip():
                raise UsageError(f"{flag} {path} is empty")
        except OSError as exc:
            raise UsageError(f"{flag} {path} cannot be read ({exc.strerror})") from None
    if not args.datahub_poll_interval > 0:
        raise UsageError("--datahub-poll-interval must be above 0")
    from .upstream.sync import UpstreamConfig

    return UpstreamConfig(url=args.datahub_url, token_file=Path(args.datahub_token_file),
                          ingest_token_file=Path(args.datahub_ingest_token_file), sink_url=args.datahub_sink_url,
                          poll_interval_s=args.datahub_poll_interval)


def _serve(args: argparse.Namespace) -> int:
    # First, before the imports and the start, which take seconds on a busy machine. A stop signal
    # during them was lost where SIGINT comes in ignored (a command started with `&` by a script:
    # `serve & ...; kill -INT $!`), so the control plane started and ran on until a second one; in
    # a terminal, Ctrl-C ended it with a traceback. Now it is remembered: nothing starts, or what
    # started stops at once.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    upstream = _upstream_config(args)
    from .log_setup import configure_logging
    from .server import ControlPlaneServer, ServerConfig, StartRefused

    configure_logging()

    state_dir = Path(args.serve_state_dir or args.state_dir or ".state/controlplane")
    server = ControlPlaneServer(ServerConfig(state_dir=state_dir, host=args.host, port=args.port, queue=args.queue,
                                             region=args.region, upstream=upstream))
    if stop.is_set():
        print("control plane not started: stop signal received while starting", flush=True)
        return 0
    try:
        server.start()
    except StartRefused as exc:
        raise AdminError(str(exc)) from None
    if not stop.is_set():
        print(f"control plane on {server.base_url} (web page: {server.base_url}/, API: {server.gms_url}); "
              f"admin token in {server.admin_token_path}", flush=True)
    stop.wait()
    server.stop()
    print("control plane stopped", flush=True)
    return 0


# reading DataHub's answers ------------------------------------------------------------------
POOL_FIELDS = "urn executorPoolId description isDefault createdAt"
EXECUTOR_FIELDS = "urn executorPoolId executorHostname executorAddress executorReleaseVersion executorUptime " \
                  "executorExpired executorStopped reportedAt"
EXECUTION_FIELDS = "urn id input { task executorId requestedAt source { type ingestionSource } } " \
                   "result { status startTimeMs durationMs report structuredReport { type serializedValue contentType } }"
SOURCE_FIELDS = "urn name type schedule { interval timezone } " \
                "config { recipe executorId version debugMode extraArgs { key value } }"


def _executors(c: AdminClient, pool_id: str | None) -> list[dict[str, Any]]:
    pools = c.graphql(f"{{ listRemoteExecutorPools(input: {{start: 0, count: 1000}}) {{ remoteExecutorPools "
                      f"{{ executorPoolId remoteExecutors(start: 0, count: 1000) {{ remoteExecutors {{ {EXECUTOR_FIELDS} }} "
                      f"}} }} }} }}")["listRemoteExecutorPools"]["remoteExecutorPools"] or []
    found = [e for p in pools if pool_id in (None, p["executorPoolId"])
             for e in (p["remoteExecutors"] or {}).get("remoteExecutors") or []]
    extras = _extras(c, [e["urn"] for e in found], "dataHubRemoteExecutorStatus")
    now = time.time()
    rows = []
    for executor in found:
        props = extras.get(executor["urn"], {})
        interval = float(props.get("heartbeatIntervalSeconds") or 30)
        state = props.get("state") or ("STOPPED" if executor["executorStopped"] else "ACTIVE")
        status = "OFFLINE" if executor["executorExpired"] else liveness(executor["reportedAt"] / 1000, interval, now, state)
        rows.append({"executor_id": E.key_of(executor["urn"], E.EXECUTOR), "pool_id": executor["executorPoolId"],
                     "status": status, "state": state, "hostname": executor["executorHostname"],
                     "address": executor["executorAddress"], "version": executor["executorReleaseVersion"],
                     "last_seen_s_ago": round(now - executor["reportedAt"] / 1000, 1),
                     "running": len(json.loads(props.get("runningExecutions") or "[]")),
                     "capacity": json.loads(props.get("capacity") or "{}"),
                     "sandbox": json.loads(props.get("sandbox") or "{}").get("mode")})
    return rows


def _extras(c: AdminClient, urns: list[str], aspect: str) -> dict[str, dict[str, str]]:
    """The system metadata properties of each URN's ASPECT (where DataHub keeps what it has no field for)."""
    if not urns:
        return {}
    ids = ",".join(quote(u, safe="") for u in urns)
    answer = c.restli("GET", f"/entitiesV2?ids=List({ids})&aspects=List({aspect})")
    return {urn: ((entity.get("aspects", {}).get(aspect) or {}).get("systemMetadata") or {}).get("properties", {})
            for urn, entity in answer.get("results", {}).items()}


def _pools(c: AdminClient) -> list[dict[str, Any]]:
    pools = c.graphql(f"{{ listRemoteExecutorPools(input: {{start: 0, count: 1000}}) {{ remoteExecutorPools "
                      f"{{ {POOL_FIELDS} }} }} }}")["listRemoteExecutorPools"]["remoteExecutorPools"] or []
    executors = _executors(c, None)
    rows = []
    for pool in pools:
        mine = [e for e in executors if e["pool_id"] == pool["executorPoolId"]]
        online = sum(1 for e in mine if e["status"] == ONLINE)
        rows.append({"id": pool["executorPoolId"], "urn": pool["urn"], "is_default": pool["isDefault"],
                     "description": pool["description"] or "", "created_at_ms": pool["createdAt"],
                     "status": "ONLINE" if online else "NO_ONLINE_EXECUTOR", "online_executors": online,
                     "executors": mine})
    return rows


def _source(c: AdminClient, ref: str) -> dict[str, Any]:
    if ref.startswith("urn:li:"):
        found = c.graphql(f"query($u: String!) {{ ingestionSource(urn: $u) {{ {SOURCE_FIELDS} }} }}", u=ref)["ingestionSource"]
        if found is None:
            raise AdminError(f"404: source {ref} not found")
        return found
    named = _named(c, ref)
    if not named:
        raise AdminError(f"404: source {ref} not found")
    if len(named) > 1:
        # Two names alike come from DataHub's `datahub ingest deploy --name`, which makes its own
        # source (urn ...:deploy-<hash of the name>) beside one `sources create` made: name the
        # urns, or the operator has to find them in `sources list` first.
        raise AdminError(f"{len(named)} sources are named {ref}: give one's urn instead of the name "
                         f"({', '.join(s['urn'] for s in named)})")
    return named[0]


def _named(c: AdminClient, name: str) -> list[dict[str, Any]]:
    """The sources named NAME (DataHub lets several share a name)."""
    sources = c.graphql(f"{{ listIngestionSources(input: {{start: 0, count: 1000, filters: [{{field: \"name\", "
                        f"values: [{json.dumps(name)}]}}]}}) {{ ingestionSources {{ {SOURCE_FIELDS} }} }} }}")
    return sources["listIngestionSources"]["ingestionSources"]


def _refuse_taken_name(c: AdminClient, name: str) -> None:
    """Every other command finds a source by its name: a second source of the same name made
    each of them ask for the urn instead. DataHub lets names repeat; its own `datahub ingest
    deploy --name N` makes or updates the source whose urn it derives from N (deploy-<hash>),
    whatever other source is named N, so only this command can refuse one."""
    taken = _named(c, name)
    if taken:
        raise AdminError(f"409: a source named {name} exists ({taken[0]['urn']}): choose another name, or change "
                         "that one (sources set-pool), or delete it first (sources delete)")


def _source_row(source: dict[str, Any]) -> dict[str, Any]:
    extra = {e["key"]: e["value"] for e in source["config"].get("extraArgs") or []}
    return {"urn": source["urn"], "id": E.key_of(source["urn"], E.SOURCE), "name": source["name"], "type": source["type"],
            "pool_id": source["config"]["executorId"], "version": source["config"].get("version"),
            "schedule": source.get("schedule"), "extra_env": json.loads(extra.get("extra_env_vars") or "{}")}


def _execution_row(execution: dict[str, Any]) -> dict[str, Any]:
    result = execution.get("result") or {}
    details = executor_details(result)
    return {"id": execution["id"], "urn": execution["urn"], "status": result.get("status") or "PENDING",
            "reason": details.get("reason"), "task": execution["input"]["task"],
            "pool_id": execution["input"].get("executorId"), "source": execution["input"]["source"].get("ingestionSource"),
            "executor_id": details.get("executorId"), "peak_memory_bytes": details.get("peakMemoryBytes"),
            "duration_ms": result.get("durationMs")}


def _info_for_source(source: dict[str, Any]) -> dict[str, Any]:
    """dataHubIngestionSourceInfo from a GraphQL IngestionSource (for input_for_source)."""
    config = {k: v for k, v in source["config"].items() if k != "extraArgs" and v is not None}
    if source["config"].get("extraArgs"):
        config["extraArgs"] = {e["key"]: e["value"] for e in source["config"]["extraArgs"]}
    return {"urn": source["urn"], "info": {"name": source["name"], "type": source["type"], "config": config}}


def _source_input(name: str, recipe_text: str, pool: str | None, env: dict[str, str], version: str | None) -> dict:
    from vocabulary.safe_yaml import YamlRefused, load_bounded

    try:
        recipe = load_bounded(recipe_text)
    except YamlRefused as exc:
        raise UsageError(f"the recipe is refused: {exc}") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("source"), dict) or "type" not in recipe["source"]:
        raise UsageError("the recipe needs a source section with a type")
    config: dict[str, Any] = {"recipe": json.dumps(recipe), "executorId": pool or E.DEFAULT_EXECUTOR_ID}
    if version:
        config["version"] = version
    if env:
        config["extraArgs"] = [{"key": "extra_env_vars", "value": json.dumps(env)}]
    return {"name": name, "type": str(recipe["source"]["type"]), "config": config}


def _env_pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--env {item!r} is not NAME=VALUE")
        pairs[name] = value
    return pairs


def _read_recipe(path: str) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start})") from None


def run(args: argparse.Namespace) -> object:
    g, a = args.group, args.action
    if g == "sources" and a == "create":  # argument checks come before any call
        recipe_text, env = _read_recipe(args.recipe_file), _env_pairs(args.env)
    c = _client(args)
    if g == "pools":
        if a == "list":
            return _pools(c)
        if a == "create":
            c.graphql("mutation($i: CreateRemoteExecutorPoolInput!) { createRemoteExecutorPool(input: $i) }",
                      i={"executorPoolId": args.pool_id, "description": args.description or None, "isDefault": args.default})
            return next(p for p in _pools(c) if p["id"] == args.pool_id)
        pool_urn = E.pool_urn(args.pool_id)
        if a == "show":
            pool = next((p for p in _pools(c) if p["id"] == args.pool_id), None)
            if pool is None:
                raise AdminError(f"404: pool {args.pool_id} not found")
            extras = _extras(c, [pool_urn], E.POOL_INFO).get(pool_urn, {})
            info = c.restli("GET", f"/entitiesV2/{quote(pool_urn, safe='')}?aspects=List({E.POOL_INFO})")["aspects"][
                E.POOL_INFO]["value"]
            return {**pool, "queue_url": info.get("queueUrl"), "queue_region": info.get("queueRegion"),
                    "queue_arn": extras.get("queueArn"), "monitors_queue_url": extras.get("monitorsQueueUrl")}
        if a == "delete":
            c.restli("POST", "/entities?action=delete", json={"urn": pool_urn})
            return {"ok": True, "deleted": pool_urn}
        if a == "describe":
            c.graphql("mutation($i: UpdateRemoteExecutorPoolInput!) { updateRemoteExecutorPool(input: $i) }",
                      i={"urn": pool_urn, "description": args.description})
            return next(p for p in _pools(c) if p["id"] == args.pool_id)
        if a == "queues":
            return c.admin("PUT", f"/pools/{quote(args.pool_id, safe='')}/queues", json={"visibility_timeout_s": args.visibility_timeout,
                                                                          "max_receive_count": args.max_receive_count})
        c.graphql("mutation($u: String!) { updateDefaultRemoteExecutorPool(urn: $u) }", u=pool_urn)
        return next(p for p in _pools(c) if p["id"] == args.pool_id)
    if g == "sources":
        if a == "list":
            found = c.graphql(f"{{ listIngestionSources(input: {{start: 0, count: 1000}}) {{ ingestionSources "
                              f"{{ {SOURCE_FIELDS} executions(start: 0, count: 1) {{ executionRequests {{ id result "
                              f"{{ status }} }} }} }} }} }}")["listIngestionSources"]["ingestionSources"]
            rows = []
            for source in found:
                last = (source.get("executions") or {}).get("executionRequests") or []
                rows.append({**_source_row(source), "last_status": ((last[0].get("result") or {}).get("status") or
                                                                    "PENDING") if last else None})
            return rows
        if a == "create":
            source_input = _source_input(args.name, recipe_text, args.pool, env, args.version)
            _refuse_taken_name(c, args.name)
            urn = c.graphql("mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }",
                            i=source_input)["createIngestionSource"]
            _warn_if_no_pool(c, args.pool)
            return _source_row(_source(c, urn))
        source = _source(c, args.source)
        if a == "show":
            return _source_row(source)
        if a == "set-pool":
            _set_pool(c, source["urn"], args.pool_id)
            _warn_if_no_pool(c, args.pool_id)
            return _source_row(_source(c, source["urn"]))
        if a == "delete":
            c.graphql("mutation($u: String!) { deleteIngestionSource(urn: $u) }", u=source["urn"])
            return {"ok": True, "deleted": source["urn"]}
        if args.task == RUN_INGEST:
            urn = c.graphql("mutation($u: String!) { createIngestionExecutionRequest(input: {ingestionSourceUrn: $u}) }",
                            u=source["urn"])["createIngestionExecutionRequest"]
        else:  # DataHub has no mutation for these: an execution request is its input aspect, written
            import uuid

            from .executions import input_for_source

            urn = E.execution_urn(str(uuid.uuid4()))
            c.ingest(urn, E.EXECUTION_INPUT, input_for_source(_info_for_source(source), args.task))
        return _execution_row(_execution(c, urn))
    if g == "executions":
        if a == "list":
            filters = []
            if args.source:
                filters.append({"field": "ingestionSource", "values": [_source(c, args.source)["urn"]]})
            if args.status:
                filters.append({"field": "status", "values": [args.status]})
            found = c.graphql(f"query($i: ListExecutionRequestsInput!) {{ listExecutionRequests(input: $i) "
                              f"{{ executionRequests {{ {EXECUTION_FIELDS} }} }} }}",
                              i={"start": 0, "count": args.count, "filters": filters})
            return [_execution_row(x) for x in found["listExecutionRequests"]["executionRequests"]]
        urn = E.execution_urn(E.key_of(args.execution_id, E.EXECUTION))
        if a == "logs":
            return c.admin("GET", f"/executions/{quote(E.key_of(urn, E.EXECUTION), safe='')}/log")
        execution = _execution(c, urn)
        if a == "cancel":
            source = execution["input"]["source"].get("ingestionSource")
            if source:
                c.graphql("mutation($i: CancelIngestionExecutionRequestInput!) { cancelIngestionExecutionRequest(input: $i) }",
                          i={"ingestionSourceUrn": source, "executionRequestUrn": urn})
            else:
                c.ingest(urn, E.EXECUTION_SIGNAL, {"signal": "KILL", "createdAt": {"time": int(time.time() * 1000),
                                                                                   "actor": "urn:li:corpuser:admin"}})
            execution = _execution(c, urn)
        return {**_execution_row(execution), "result": execution.get("result")}
    if g == "executors":
        return _executors(c, args.pool_id)
    if g == "runs":
        rows = c.restli("POST", "/runs?action=describe", json={"runId": args.run_id, "start": 0, "count": 1000})["value"]
        entities = sorted({r["urn"] for r in rows})
        return {"run_id": args.run_id, "entities": len(entities), "aspects": len(rows),
                "rows": [{"urn": r["urn"], "aspect": r["aspectName"]} for r in rows]}
    if a == "list":
        return c.admin("GET", "/tokens")
    if a == "create":
        return c.admin("POST", "/tokens", json={"kind": args.kind, "pools": args.pool, "description": args.description})
    return c.admin("DELETE", f"/tokens/{quote(args.token_id, safe='')}")


def _set_pool(c: AdminClient, urn: str, pool_id: str) -> None:
    """Route the source's runs to POOL_ID and change nothing else. An update replaces the whole
    dataHubIngestionSourceInfo, and GraphQL's IngestionSource does not show all of it: rebuilt
    from GraphQL, the update dropped the schedule. So the stored aspect is read and written back,
    on condition that it is still the version read: written back unconditionally, a change made
    in between (another set-pool, an edit of the recipe or schedule in the UI) was undone without
    a word. A refused write means another one succeeded, so reading again makes progress; a
    source that changes at every attempt is left as it is, with an error."""
    for _ in range(SET_POOL_ATTEMPTS):
        info, version = c.versioned(urn, E.SOURCE_INFO)
        try:
            c.ingest(urn, E.SOURCE_INFO, {**info, "config": {**info["config"], "executorId": pool_id}},
                     if_version=version)
            return
        except VersionConflict:
            continue
    raise AdminError(f"409: source {urn} changed each of the {SET_POOL_ATTEMPTS} times its pool was about to be set "
                     "(someone else is editing it); its pool is unchanged: try again when they are done")


def _warn_if_no_pool(c: AdminClient, pool_id: str | None) -> None:
    """A source's Executor ID is free text in DataHub, so one naming no pool is saved; its runs
    would then wait PENDING for good, which nothing else would say."""
    if pool_id in (None, E.DEFAULT_EXECUTOR_ID):
        return
    pools = c.graphql("{ listRemoteExecutorPools(input: {start: 0, count: 1000}) { remoteExecutorPools { executorPoolId } } }")
    if pool_id not in {p["executorPoolId"] for p in pools["listRemoteExecutorPools"]["remoteExecutorPools"] or []}:
        print(f"datahub-executor-admin: warning: there is no pool {pool_id}: this source's runs wait PENDING until "
              f"one exists (pools create {pool_id}), or move it to a pool that does (sources set-pool)", file=sys.stderr)


def _execution(c: AdminClient, urn: str) -> dict[str, Any]:
    found = c.graphql(f"query($u: String!) {{ executionRequest(urn: $u) {{ {EXECUTION_FIELDS} }} }}", u=urn)["executionRequest"]
    if found is None:
        raise AdminError(f"404: execution {E.key_of(urn, E.EXECUTION)} not found")
    return found


def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(r.get(c, "") if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


VIEWS = {
    ("pools", "list"): ["id", "is_default", "status", "online_executors", "description"],
    ("sources", "list"): ["name", "pool_id", "type", "last_status", "urn"],
    ("executions", "list"): ["id", "status", "reason", "task", "pool_id", "executor_id", "peak_memory_bytes"],
    ("executors", "list"): ["executor_id", "pool_id", "status", "state", "hostname", "version", "last_seen_s_ago", "running"],
    ("tokens", "list"): ["id", "kind", "pools", "description"],
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.group == "serve":
            return _serve(args)
        result = run(args)
    except UsageError as exc:
        print(str(exc) if str(exc).startswith("datahub-executor-admin") else f"datahub-executor-admin: {exc}",
              file=sys.stderr)
        return 2
    except (AdminError, OSError) as exc:
        print(f"datahub-executor-admin: {exc}", file=sys.stderr)
        return 1
    try:
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True, default=str))
        elif (args.group, args.action) == ("executions", "logs"):
            print(result["log"])
        elif isinstance(result, list) and (args.group, args.action) in VIEWS:
            print(_table(result, VIEWS[(args.group, args.action)]))
        else:
            print(json.dumps(result, indent=2, sort_keys=True, default=str))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`| head`, `less` quit early). Point stdout at /dev/null so that the
        # interpreter's own flush at exit does not raise again; what the command did stands.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
