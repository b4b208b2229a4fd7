"""Fault suite 6: hostile input. Secret references that climb out of the secrets directory, a
secrets directory holding a 2 GiB file and a symlink to /etc/shadow, YAML bombs in recipes, and a
control plane answering heartbeats with 50 MB: each is refused with a clear error, nothing
crashes, the master's memory does not follow the input."""
from __future__ import annotations

import os
import threading
import time
from http.server import ThreadingHTTPServer

import pytest
import requests

from controlplane import entities as E
from controlplane import lifecycle
from controlplane.metadata import aspect_store
from tests.e2e.conftest import mock_recipe, stop_all_without_draining
from tests.http_handler import QuietHandler

from .conftest import Sampler, rss_mib

BILLION_LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["source: {type: datahub-mock-data, config: {}}", "sink: {type: file, config: {filename: /dev/null, x: *i}}"]
)
DEEP = "source: {type: datahub-mock-data, config: {x: " + "[" * 50_000 + "]" * 50_000 + "}}\n"


def run_to_end(cp, recipe: str) -> dict:
    execution = cp.run_source(cp.create_source(f"hostile-{os.urandom(3).hex()}", recipe)["id"])
    return cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=120)


def test_hostile_secret_references_and_files_are_refused_each_with_its_reason(system, tmp_path):
    secrets = tmp_path / "secrets"
    with open(secrets / "BIG", "wb") as big:  # 2 GiB, sparse: costs no disk, but would cost memory
        big.truncate(2 << 30)
    (secrets / "SHADOW").symlink_to("/etc/shadow")
    (secrets / "OK").write_text(str(tmp_path / "ok.json"))
    executor = system.start_executor()
    master = executor.process.pid
    before = rss_mib(master)
    recipe = mock_recipe(tmp_path / "x.json")
    with Sampler(lambda: rss_mib(master)) as rss:
        climbing = run_to_end(system.cp, recipe.replace("config: {}", "config: {x: '${../../etc/shadow}'}"))
        big = run_to_end(system.cp, recipe.replace("config: {}", "config: {x: '${BIG}'}"))
        shadow = run_to_end(system.cp, recipe.replace("config: {}", "config: {x: '${SHADOW}'}"))
        fine = run_to_end(system.cp, mock_recipe("${OK}"))
    assert (climbing["status"], climbing["reason"]) == ("FAILURE", "SECRET_REFUSED")
    assert "${../../etc/shadow} is refused" in climbing["log_tail"]
    assert (big["status"], big["reason"]) == ("FAILURE", "SECRET_REFUSED")
    assert f"{2 << 30} bytes, over the 1048576-byte cap" in big["log_tail"]
    assert (shadow["status"], shadow["reason"]) == ("FAILURE", "SECRET_REFUSED")
    assert "resolves outside" in shadow["log_tail"]
    assert fine["status"] == "SUCCESS", "the directory's good secrets still work beside the bad ones"
    assert max(rss.values) - before < 32, "the 2 GiB file was never read"
    assert executor.process.poll() is None


def test_yaml_bombs_are_refused_by_the_control_plane_and_by_the_executor(system, tmp_path):
    executor = system.start_executor()
    cp = system.cp
    for bomb, why in ((BILLION_LAUGHS, "YAML bomb"), (DEEP, "nested deeper than")):
        with pytest.raises(RuntimeError, match=why):  # DataHub's GraphQL, as its UI saves a source
            cp.graphql("mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }",
                       i={"name": "bomb", "type": "datahub-mock-data", "config": {"recipe": bomb, "executorId": "remote"}})
    # A recipe that got past the control plane (an older one, another writer of its store) meets
    # the executor's own guard.
    for bomb, why in ((BILLION_LAUGHS, "YAML bomb"), (DEEP, "nested deeper than")):
        done = cp.wait_for_status(smuggled_run(cp, bomb), {"SUCCESS", "FAILURE"}, timeout_s=60)
        assert (done["status"], done["reason"]) == ("FAILURE", "INVALID_RECIPE")
        assert why in done["log_tail"]
    assert executor.process.poll() is None
    assert not any("Traceback" in line for line in executor.lines)


def smuggled_run(cp, recipe: str) -> str:
    """A run whose recipe never met the control plane's checks: written into its store directly
    (an older database, another writer of it), then sent to the pool's queue."""
    execution_id = cp.cp.executions.new_id()
    value = {"task": "RUN_INGEST", "args": {"recipe": recipe, "version": ""}, "executorId": "remote",
             "source": {"type": "MANUAL_INGESTION_SOURCE"}, "requestedAt": aspect_store.now_ms()}
    with cp.cp.store.transaction() as tx:
        lifecycle.create(tx, execution_id=execution_id, pool_id="remote", task="RUN_INGEST", source_urn=None)
        aspect_store.put(tx, urn=E.execution_urn(execution_id), entity_type=E.EXECUTION, aspect=E.EXECUTION_INPUT,
                         value=value)
    cp.cp.executions.send_pending()
    return execution_id


class HugeAnswerProxy:
    """An HTTP proxy in front of the control plane that forwards everything, but answers each
    heartbeat after the first with `huge_bytes` of JSON-looking bytes and no Content-Length, so
    only reading the body can reveal its size."""

    def __init__(self, upstream: str, huge_bytes: int) -> None:
        self.huge_answers = 0
        outer = self

        class Handler(QuietHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = requests.request(self.command, upstream + self.path, data=body, timeout=30,
                                          headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                # A heartbeat is DataHub's ingestProposal of a dataHubRemoteExecutorStatus.
                heartbeat = (self.command == "POST" and "action=ingestProposal" in self.path
                             and b"dataHubRemoteExecutorStatus" in body)
                if heartbeat and answer.ok and outer._beats() > 1:
                    outer.huge_answers += 1
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    chunk = b'{"pad": "' + b"x" * (1 << 20)
                    try:
                        for _ in range(huge_bytes >> 20):
                            self.wfile.write(chunk)
                    except OSError:
                        pass  # the executor stopped reading, as it should
                    self.close_connection = True
                    return
                self.answer(answer.status_code, answer.content,
                            {"Content-Type": answer.headers.get("Content-Type", "application/json")})

            do_GET = do_PUT = do_POST = _any

        self._beats_seen = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _beats(self) -> int:
        with self._lock:
            self._beats_seen += 1
            return self._beats_seen

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_50_mb_heartbeat_answer_is_refused_unread_and_work_goes_on(system, tmp_path):
    proxy = HugeAnswerProxy(system.cp.base_url, huge_bytes=50 << 20)
    try:
        executor = system.start_executor(DATAHUB_GMS_URL=proxy.url + "/gms", DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL="1")
        master = executor.process.pid
        before = rss_mib(master)
        with Sampler(lambda: rss_mib(master)) as rss:
            done = run_to_end(system.cp, mock_recipe(tmp_path / "out.json"))
            deadline = time.monotonic() + 30
            while proxy.huge_answers < 5 and time.monotonic() < deadline:
                time.sleep(0.2)
        assert done["status"] == "SUCCESS"
        assert proxy.huge_answers >= 5
        refused = [line for line in executor.lines if "with more than" in line and "refused, not read" in line]
        assert refused, "each oversized answer is named in the log"
        assert max(rss.values) - before < 40, f"50 MB answers stayed out of memory: {before} -> {max(rss.values)}"
        assert executor.process.poll() is None
        assert [e["status"] for e in system.cp.executors("remote")] == ["ONLINE"]
    finally:
        stop_all_without_draining(system.executors)  # before the proxy goes: its last heartbeats pass through it
        proxy.close()


def test_a_weight_written_with_a_huge_exponent_fails_the_execution_without_freezing_the_master(system, tmp_path):
    """Fraction("1e99999999") first computes 10**99999999: minutes of CPU in one C call, holding
    the GIL, for a weight the range check then refuses anyway. The master froze whole: no
    heartbeat, no /health, no other task's progress, and the control plane judged it gone."""
    executor = system.start_executor(DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL="1")
    urn = f"urn:li:dataHubExecutionRequest:huge-weight-{os.urandom(4).hex()}"
    system.cp.ingest(urn, "dataHubExecutionRequestInput", {
        "task": "RUN_INGEST", "executorId": "remote", "requestedAt": 1, "source": {"type": "MANUAL_INGESTION_SOURCE"},
        "args": {"recipe": mock_recipe(tmp_path / "w.json"), "extra_env_vars": '{"EXECUTOR_TASK_WEIGHT": "1e99999999"}'}})
    done = system.cp.wait_for_status(urn.rsplit(":", 1)[1], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=120)
    assert (done["status"], done["reason"]) == ("FAILURE", "INVALID_WEIGHT")
    assert executor.process.poll() is None
    assert [e["status"] for e in system.cp.executors("remote")] == ["ONLINE"]
