"""A resolved secret never leaves the executor in clear: not in the progress reports, the final
result's report or structured report, the uploaded full log, nor the executor's own log.

Each case runs a real TaskRunner on a real child process, prepared by the real prepare_task from
real secret stores (the executor's environment store and the secrets a claim hands over); only
the `datahub` CLI is a stand-in (a script that reads the envelope prepare_task writes to its
stdin, substitutes ${NAME} as the CLI does, and then prints what a real source or library prints)
and the control plane is a recording double. Values are built at run time and never printed:
assertions say where a leak is, never what leaked."""
from __future__ import annotations

import base64
import gzip
import json
import os
import stat
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from loguru import logger

from executor.controlplane_client import Claimed
from executor.leases import Leases, QueueRef
from executor.ledger import Ledger
from executor.log_upload import LogUploader
from executor.operability import ExecutorMetrics
from executor.runner import RunnerServices, TaskRunner
from executor.runtime.masking import MASK
from executor.runtime.secrets import ChainedSecretStore, EnvSecretStore, ProvidedSecretStore
from executor.runtime.task_log import TaskLogDirectory
from executor.runtime.tasks import prepare_task
from executor.task_users import TaskUsers
from sandbox import Sandbox

EXECUTION = "exe_masking"
MARKER = "marker-line-after-the-secret"

# The stand-in CLI: the envelope's recipe with its ${NAME}s substituted, then SCENARIO (Python,
# with `recipe`, `secrets`, `out` (writes and flushes stdout), `err` (stderr) and `report_file`).
CLI = """\
import json, os, re, sys, time
envelope = json.loads(sys.stdin.read())
secrets = envelope["__secrets__"]
recipe = re.sub(r"\\$\\{(\\w+)\\}", lambda m: secrets[m.group(1)], envelope["__recipe_yaml__"])
report_file = envelope["__report_out_file__"]
def out(text):
    sys.stdout.write(text); sys.stdout.flush()
def err(text):
    sys.stderr.write(text); sys.stderr.flush()
"""


@dataclass
class ControlPlane:
    """Answers the claim with the secrets DataHub's store holds; records every result and log."""

    provided: dict[str, str]
    names: tuple[str, ...]  # what the recipe references
    results: list[dict] = field(default_factory=list)
    logs: list[bytes] = field(default_factory=list)

    def claim(self, execution_id: str, **_) -> Claimed:
        recipe = "source:\n  type: postgres\n  config:\n" + "".join(
            f"    field_{name.lower()}: ${{{name}}}\n" for name in sorted(self.names))
        return Claimed(execution_id=execution_id, lease="lease-token", task="RUN_INGEST", pool_id="pool",
                       args={"recipe": recipe}, ingest_token="ingest-token-" + "7" * 24, secrets=self.provided,
                       log_encodings=("gzip",))

    def report(self, execution_id: str, lease: str, result: dict) -> None:
        self.results.append(json.loads(json.dumps(result)))

    def cancel_requested(self, execution_id: str) -> bool:
        return False

    def upload_log(self, execution_id: str, lease: str, data: bytes, *, encoding: str | None = None) -> None:
        self.logs.append(gzip.decompress(data) if encoding == "gzip" else data)


class Acks:
    def ack(self, lease) -> None:
        pass


class StandInVenvs:
    def __init__(self, cli: str) -> None:
        self.cli = cli

    def datahub_cli(self, version, plugins, extra, user, stop=None) -> str:
        return self.cli

    def release(self, cli: str) -> None:
        pass


@dataclass
class Shipped:
    """Everything of one run that left the executor, as text."""

    progress: list[str]
    report: str
    structured_report: str
    full_logs: list[str]
    executor_log: str

    def places_holding(self, text: str) -> list[str]:
        places = [("a progress report", p) for p in self.progress] + [
            ("the result's report", self.report), ("the structured report", self.structured_report),
            ("the executor's log", self.executor_log)] + [("the uploaded full log", log) for log in self.full_logs]
        return sorted({where for where, shipped in places if text in shipped})


@pytest.fixture(scope="module")
def sandbox():
    opened = Sandbox.open(f"test-masking-{os.getpid()}", mode="none")
    yield opened
    opened.close()


def run_task(sandbox: Sandbox, tmp_path: Path, scenario: str, *, environment: dict[str, str] | None = None,
             provided: dict[str, str] | None = None) -> Shipped:
    """SCENARIO run as the task's CLI, whose recipe names every secret of ENVIRONMENT (the executor's
    environment store) and PROVIDED (DataHub's store, handed over with the claim)."""
    cli = tmp_path / "datahub"
    cli.write_text(f"#!{sys.executable}\n" + CLI + textwrap.dedent(scenario))
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    environment, provided = environment or {}, provided or {}
    store = ChainedSecretStore([EnvSecretStore(environment)])

    def prepare(claimed: Claimed, user, stop=None):
        stores = ChainedSecretStore([*store.stores, ProvidedSecretStore(claimed.secrets)])
        return prepare_task(claimed.task, claimed.args, execution_id=claimed.execution_id, secrets=stores,
                            venvs=StandInVenvs(str(cli)), work_root=str(tmp_path / "work"), default_version="1.0.0",
                            gms_url="http://127.0.0.1:9/gms", ingest_token=claimed.ingest_token)

    control_plane = ControlPlane(provided, (*environment, *provided))
    leases = Leases()
    lease, _ = leases.receive(EXECUTION, QueueRef("ingestion", "message-1", "handle-1", 1, 0))
    services = RunnerServices(
        settings=SimpleNamespace(executor_id="executor-1", pool_id="pool", cancel_grace_s=1, task_pids_max=None,
                                 task_timeout_s=None, progress_interval_s=0.05),
        client=control_plane, consumers={}, acks=Acks(),
        ledgers={"ingestion": Ledger("ingestion", 1), "monitors": Ledger("monitors", 1)}, leases=leases,
        sandbox=sandbox, prepare=prepare, logs=LogUploader(control_plane, bucket=None, pool_id="pool"),
        task_logs=TaskLogDirectory(str(tmp_path / "logs"), held=leases.claimed_ids), metrics=ExecutorMetrics(),
        instance_id="instance-1", task_users=TaskUsers.shared(None), private_tmp=False,
        stopping=threading.Event(), kill_now=threading.Event())
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", diagnose=False, backtrace=False)
    try:
        runner = TaskRunner(lease, services)
        runner.start()
        runner.join(timeout=60)
        assert not runner.is_alive(), "the task did not end"
    finally:
        logger.remove(sink)
    final = control_plane.results[-1]
    assert final["status"] != "RUNNING", "no final result was reported"
    return Shipped(progress=[r.get("report") or "" for r in control_plane.results[:-1]], report=final["report"],
                   structured_report=final["structuredReport"]["serializedValue"],
                   full_logs=[log.decode("utf-8", "replace") for log in control_plane.logs] or [final["report"]],
                   executor_log="".join(lines))


def test_the_harness_sees_a_secret_the_masker_does_not_know(sandbox, tmp_path):
    """The harness itself: output that is no secret's arrives everywhere it is looked for."""
    shipped = run_task(sandbox, tmp_path, f"out('plain text\\n{MARKER}\\n')", environment={"DB_PASSWORD": "unrelated"})
    assert {"the result's report", "the uploaded full log"} <= set(shipped.places_holding(MARKER))


PIECE = 16  # this many characters of a secret, anywhere, are a leak


def pieces(value: str, size: int = PIECE) -> set[str]:
    return {value[i:i + size] for i in range(max(1, len(value) - size + 1))}


def leaked(shipped: Shipped, *values: str) -> list[str]:
    """Where a piece of VALUES was shipped (the places, never the piece)."""
    return sorted({where for value in values for piece in pieces(value) for where in shipped.places_holding(piece)})


def shown(shipped: Shipped) -> bool:
    """The task's output reached the result: what follows its secrets is there."""
    return MARKER in shipped.report and all(MARKER in log for log in shipped.full_logs)


def test_a_password_in_a_sqlalchemy_url_as_datahubs_sql_sources_log_it_is_masked(sandbox, tmp_path):
    """DataHub's SQL sources log `sql_alchemy_url=...` at debug level, and SQLAlchemy 1.x (which
    they pin) renders the password escaping only ':', '@' and '/' (its _rfc_1738_quote): no
    percent-encoding of Python's, which also escapes '!' and '$'. DataHub's own masker has that
    form; ours did not."""
    password = "Pa$$" + "w0rd!@2024/eu:x"
    shipped = run_task(sandbox, tmp_path, f"""
        rfc_1738 = re.sub(r"[:@/]", lambda m: "%%%X" % ord(m.group(0)), secrets["PG_PASSWORD"])
        out(f"DEBUG datahub.ingestion.source.sql.sql_common:415 - sql_alchemy_url=postgresql+psycopg2://"
            f"datahub:{{rfc_1738}}@db.internal:5432/analytics\\n{MARKER}\\n")
    """, environment={"PG_PASSWORD": password})
    assert shown(shipped)
    assert leaked(shipped, password.replace("@", "%40").replace("/", "%2F").replace(":", "%3A")) == []


def test_a_long_secret_pydantic_quotes_cut_short_in_a_config_error_is_masked(sandbox, tmp_path):
    """A config error quotes the value it refused, and pydantic 2 cuts a quoted value longer
    than 50 characters to its first 24 and last 23 with '...' between: a typo'd key (DataHub's
    configs forbid unknown keys) holding a 64-character token showed 47 of its characters."""
    token = "tok_" + "9f8e7d6c5b4a3210" * 3 + "ab12cd34ef56ab78"
    shipped = run_task(sandbox, tmp_path, f"""
        import pydantic, yaml
        class PostgresConfig(pydantic.BaseModel, extra="forbid"):
            host_port: str = "localhost:5432"
        try:
            PostgresConfig(**yaml.safe_load(recipe)["source"]["config"])
        except pydantic.ValidationError as exc:
            out(f"Failed to configure the source (postgres): {{exc}}\\n{MARKER}\\n")
            sys.exit(1)
    """, environment={"API_TOKEN": token})
    assert shown(shipped)
    assert leaked(shipped, token) == []


def test_a_secret_stored_with_a_trailing_newline_is_masked_where_printed_without_it(sandbox, tmp_path):
    """A secret saved with the newline its file or paste ended in (DataHub's store and Secrets
    Manager keep it; only the file store strips it): a source that strips the value prints it
    without the newline, which no form of the value matched."""
    shipped = run_task(sandbox, tmp_path, f"""
        out(f"connecting as analytics with password {{secrets['DB_PASSWORD'].strip()}}; retrying\\n{MARKER}\\n")
    """, provided={"DB_PASSWORD": "wh1te-Rabbit\n"})
    assert shown(shipped)
    assert leaked(shipped, "wh1te-Rabbit") == []


def test_a_secret_in_a_basic_credential_escaped_json_a_bytes_repr_and_latin_1_reaches_nothing(sandbox, tmp_path):
    """Four ways a task printed a secret that no form matched: http.client's debug output of a
    request with an HTTP Basic credential (base64 of "user:password"), JSON with '/' escaped
    (PHP's json_encode, several Java libraries), a bytes repr, and a non-ASCII password written
    in Latin-1 (a driver echoing a server's latin1 message), which the relay turns into U+FFFD
    before masking."""
    aws_key = "wJalr/XUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"
    password = "Gehe1m-pässwört"
    shipped = run_task(sandbox, tmp_path, r"""
        import base64
        key, password = secrets["AWS_SECRET"], secrets["DB_PASSWORD"]
        basic = base64.b64encode(("svc_etl:" + password).encode()).decode()
        crlf = "\\r\\n"  # as a bytes repr shows it
        out("send: b'GET /api/v2 HTTP/1.1" + crlf + "Host: bi.internal" + crlf + "Authorization: Basic " + basic
            + crlf + crlf + "'\n")
        out(json.dumps({"SecretAccessKey": key}).replace("/", "\\/") + "\n")
        out("body=" + repr(password.encode()) + "\n")
        sys.stdout.buffer.write(b"server: wrong password " + password.encode("latin-1") + b" for svc_etl\n")
        sys.stdout.buffer.flush()
        out("MARKER_LINE\n")
    """.replace("MARKER_LINE", MARKER), environment={"AWS_SECRET": aws_key}, provided={"DB_PASSWORD": password})
    assert shown(shipped)
    relayed_latin_1 = password.encode("latin-1").decode("utf-8", "replace")
    forms = {"base64 of the credential": base64.b64encode(f"svc_etl:{password}".encode()).decode()[8:24],
             "escaped JSON": aws_key.replace("/", "\\/"), "a bytes repr": repr(password.encode())[2:-1],
             "Latin-1, relayed": relayed_latin_1}
    found = {name: leaked(shipped, form) for name, form in forms.items()}
    assert found == {name: [] for name in forms}, {name: where for name, where in found.items() if where}


def test_secrets_printed_in_pieces_floods_tracebacks_reports_and_the_echoed_recipe_reach_nothing(sandbox, tmp_path):
    """What passed before the fixes above, kept as it is: values with regular-expression
    characters, non-ASCII and a 3-character one; one a prefix of another; written a few bytes
    at a time across reads and between stdout and stderr, flooded past a read's size, quoted in
    a traceback, in the echoed recipe (YAML and JSON) and in the ingestion report (JSON-escaped),
    by a task that then fails."""
    environment = {"REGEX_LIKE": "s3cr3t.*+?[(|)]^$\\\\", "SHORT": "q7z", "PREFIX": "overlapABC",
                   "LONGER": "overlapABCDEF12"}
    provided = {"UNICODE": "pässwörd-€-日本語-ключ"}
    shipped = run_task(sandbox, tmp_path, f"""
        import traceback
        for name, value in sorted(secrets.items()):
            for at in range(0, len(value), 3):
                (out if at % 2 else err)(value[at:at + 3])
                time.sleep(0.002)
            out(" <- " + name + "\\n")
        out((secrets["LONGER"] + " " + secrets["PREFIX"] + "\\n") * 20000)
        out(recipe + json.dumps(secrets) + json.dumps(secrets, ensure_ascii=False) + "\\n")
        def connect(password):
            raise ValueError(f"authentication failed for password {{password!r}}")
        try:
            connect(secrets["UNICODE"])
        except ValueError:
            traceback.print_exc()
        with open(report_file, "w") as f:
            json.dump({{"source": {{"report": {{"warnings": [f"bad {{v}}" for v in secrets.values()],
                                              "by_value": {{v: len(v) for v in secrets.values()}}}}}}}}, f)
        out("{MARKER}\\n")
        sys.exit(1)
    """, environment=environment, provided=provided)
    assert shown(shipped)
    assert leaked(shipped, *environment.values(), *provided.values()) == []
    report = json.loads(shipped.structured_report)
    assert report["source"]["report"]["warnings"] == [f"bad {MASK}"] * 5
    assert report["executor"]["reason"] == "EXIT_CODE"
