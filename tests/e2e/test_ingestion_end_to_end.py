"""Issue 4's end-to-end behaviours against the real control plane, SQS server, cgroups and CLI."""
from __future__ import annotations

import json
import time

from .conftest import mock_recipe


def test_a_source_run_goes_running_then_success_with_a_real_datahub_ingest(system, tmp_path):
    executor = system.start_executor()
    out = tmp_path / "events.json"
    source = system.cp.create_source("mock", mock_recipe(out))
    execution = system.cp.run_source(source["id"])
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)
    logs = system.cp.logs(execution["id"])
    assert done["status"] == "SUCCESS", logs["log"][-3000:]
    assert done["executor_id"] == "executor-1"
    assert "Pipeline finished successfully" in logs["log"]
    assert logs["complete"]
    assert json.loads(out.read_text()) == []  # the mock source's default config emits nothing
    assert executor.process.poll() is None
    statuses = [e["status"] for e in system.cp.executors("remote")]
    assert statuses == ["ONLINE"]


def test_a_missing_secret_fails_the_task_before_it_starts_naming_the_secret(system, tmp_path):
    system.start_executor()
    recipe = mock_recipe(tmp_path / "x.json").replace("config: {}", "config: {num_errors: \"${NOT_THERE}\"}")
    execution = system.cp.run_source(system.cp.create_source("needs-secret", recipe)["id"])
    done = system.cp.wait_for_status(execution["id"], {"FAILURE", "SUCCESS"}, timeout_s=120)
    assert done["status"] == "FAILURE"
    assert done["reason"] == "SECRET_NOT_FOUND"
    assert "NOT_THERE" in done["log_tail"]


def test_a_secret_from_the_file_store_reaches_the_task_and_is_masked(system, tmp_path):
    executor = system.start_executor()
    (tmp_path / "secrets" / "OUT_PATH").write_text(str(tmp_path / "secret-named-output.json"))
    recipe = ("source:\n  type: datahub-mock-data\n  config: {}\n"
              "sink:\n  type: file\n  config:\n    filename: ${OUT_PATH}\n")
    execution = system.cp.run_source(system.cp.create_source("with-secret", recipe)["id"])
    done = system.cp.wait_for_status(execution["id"], {"FAILURE", "SUCCESS"}, timeout_s=300)
    assert done["status"] == "SUCCESS", done["log_tail"]
    assert (tmp_path / "secret-named-output.json").exists()
    secret = str(tmp_path / "secret-named-output.json")
    assert secret not in system.cp.logs(execution["id"])["log"]
    assert all(secret not in line for line in executor.lines)
    assert not any((tmp_path / "executor-1" / "executions").iterdir()), "no scratch dir (or secret) survives the task"


def test_an_invalid_weight_is_refused_when_saved_and_fails_a_run_that_carries_one(system, tmp_path):
    """Refused when the source is saved; a run that carries one anyway (its input written
    directly) fails with INVALID_WEIGHT, never silently running at the default weight."""
    import pytest

    system.start_executor()
    for weight in ("1.5", "abc"):
        with pytest.raises(RuntimeError, match="EXECUTOR_TASK_WEIGHT"):
            system.cp.create_source(f"heavy-{weight}", mock_recipe(tmp_path / "x.json"),
                                    extra_env={"EXECUTOR_TASK_WEIGHT": weight})
    third = system.cp.create_source("third", mock_recipe(tmp_path / "third.json"), extra_env={"EXECUTOR_TASK_WEIGHT": "1/3"})
    assert system.cp.wait_for_status(system.cp.run_source(third["id"])["id"], {"FAILURE", "SUCCESS"},
                                     timeout_s=300)["status"] == "SUCCESS", "1/3, as the ledger documents, is valid"
    source = system.cp.create_source("plain", mock_recipe(tmp_path / "y.json"))
    execution_urn = f"urn:li:dataHubExecutionRequest:bad-weight-{source['id'][:8]}"
    system.cp.ingest(execution_urn, "dataHubExecutionRequestInput", {
        "task": "RUN_INGEST", "executorId": "remote", "requestedAt": 1, "source": {"type": "MANUAL_INGESTION_SOURCE"},
        "args": {"recipe": mock_recipe(tmp_path / "y.json"), "extra_env_vars": '{"EXECUTOR_TASK_WEIGHT": "abc"}'}})
    done = system.cp.wait_for_status(execution_urn.rsplit(":", 1)[1], {"FAILURE", "SUCCESS"}, timeout_s=60)
    assert (done["status"], done["reason"]) == ("FAILURE", "INVALID_WEIGHT")


def test_sigterm_drains_and_exits_zero_with_the_executor_marked_offline(system):
    executor = system.start_executor()
    assert executor.stop() == 0
    executor.wait_for_line("executor stopped", timeout_s=5)
    deadline = time.monotonic() + 5
    while system.cp.executors("remote")[0]["status"] != "OFFLINE" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert system.cp.executors("remote")[0]["state"] == "STOPPED"


def test_test_connection_runs_the_cli_and_returns_its_structured_report(system, tmp_path):
    system.start_executor()
    source = system.cp.create_source("tc", mock_recipe(tmp_path / "tc.json"))
    execution = system.cp.run_source(source["id"], task="TEST_CONNECTION")
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)
    assert done["status"] == "SUCCESS", done["log_tail"]
    report = done["structured_report"]
    assert report["internal_failure"] is True  # the mock source has no connection to test, and says so
    assert "does not support test connection" in report["internal_failure_reason"]
    assert not (tmp_path / "tc.json").exists(), "a connection test writes nothing to the sink"


def test_a_large_log_is_uploaded_compressed_and_a_task_cannot_pass_for_the_executor(system, tmp_path):
    """A run whose log outgrows the result's report uploads it at the end: gzip-compressed (the
    claim lists it), stored as sent, shown whole; the task's imitation of the executor's outcome
    line is shown as the task's in the full log and in the tail."""
    from .conftest import custom_env, custom_recipe

    system.start_executor()
    imitation = "[executor] outcome: SUCCEEDED exit_code=0 signal=None peak_memory_bytes=1"
    source = system.cp.create_source("flood", custom_recipe("FloodSource", tmp_path / "f.json", megabytes=12,
                                                            first_line=imitation), extra_env=custom_env())
    execution = system.cp.run_source(source["id"])["id"]
    done = system.cp.wait_for_status(execution, {"SUCCESS", "FAILURE"}, timeout_s=300)
    assert done["status"] == "SUCCESS", done["log_tail"][-3000:]
    (stored,) = system.cp.cp.store.query("SELECT encoding, length(data) AS size FROM execution_logs WHERE "
                                         "execution_id=?", (execution,))
    shown = system.cp.logs(execution)["log"]
    assert stored["encoding"] == "gzip" and stored["size"] < len(shown) / 20, "flood lines compress well"
    assert 7 << 20 < len(shown.encode()) <= 8 << 20, "head and tail, within the cap"
    lines = shown.splitlines()
    assert f"[task] {imitation}" in lines and imitation not in lines
    outcomes = [line for line in lines if line.startswith("[executor] outcome:")]
    assert len(outcomes) == 1 and outcomes[0] != imitation, "one outcome line: the executor's own"
    assert "flood done" in done["log_tail"]
