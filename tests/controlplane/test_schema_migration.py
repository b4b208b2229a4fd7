"""A control plane of the first schema (pools, sources and executions in tables of its own)
starts on this version with its data as DataHub entities, read back through DataHub's client."""
from __future__ import annotations

import json
import sqlite3
import time

import acryl_datahub_cloud.metadata.schema_classes as cloud_model

from controlplane.store import MIGRATIONS, SCHEMA_1
from controlplane.testing import running_controlplane


def write_schema_1(path) -> None:
    db = sqlite3.connect(path)
    for statement in filter(str.strip, SCHEMA_1.split(";")):
        db.execute(statement)
    now = time.time()
    db.execute("INSERT INTO pools VALUES ('remote', 'old pool', 1, 'http://x/q', 'http://x/q-dlq', 60, 5, ?)", (now,))
    db.execute("INSERT INTO sources VALUES ('src_1', 'pg', 'remote', ?, ?, '1.7.0.17', ?)",
               ("source:\n  type: postgres\n  config: {password: '${PG}'}\n", json.dumps({"EXECUTOR_TASK_WEIGHT": "0.5"}), now))
    db.execute("INSERT INTO executions (id, source_id, pool_id, task, args, status, reason, created_at, started_at, "
               "finished_at, duration_ms, log_tail) VALUES ('exe_1', 'src_1', 'remote', 'RUN_INGEST', ?, 'SUCCESS', NULL, "
               "?, ?, ?, 1200, 'done')", (json.dumps({"recipe": "source: {type: postgres}", "debug_mode": False}), now, now, now))
    db.execute("INSERT INTO executions (id, source_id, pool_id, task, args, status, created_at) VALUES "
               "('exe_2', 'src_1', 'remote', 'RUN_INGEST', '{}', 'PENDING', ?)", (now,))
    db.execute("INSERT INTO executions (id, source_id, pool_id, task, args, status, reason, executor_id, created_at, "
               "started_at, finished_at, exit_code, signal, duration_ms, peak_memory_bytes, structured_report, log_tail) "
               "VALUES ('exe_3', 'src_1', 'remote', 'RUN_INGEST', '{}', 'FAILURE', 'MEMORY_LIMIT_EXCEEDED', 'exec-7', "
               "?, ?, ?, NULL, 9, 800, 536870912, ?, 'killed')",
               (now, now, now, json.dumps({"source": {"events_produced": 42}, "sink": {"failures": []}})))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()


def test_a_schema_1_database_becomes_datahub_entities(tmp_path):
    (tmp_path / "cp").mkdir()
    write_schema_1(tmp_path / "cp" / "controlplane.sqlite3")
    with running_controlplane(tmp_path / "cp") as cp:
        assert cp.cp.store.schema_version == len(MIGRATIONS)
        pools = cp.graphql("{ listRemoteExecutorPools(input: {start: 0, count: 5}) { remoteExecutorPools "
                           "{ executorPoolId description isDefault } } }")["listRemoteExecutorPools"]["remoteExecutorPools"]
        assert pools == [{"executorPoolId": "remote", "description": "old pool", "isDefault": True}]
        assert cp.cp.pools.get("remote")["monitors_queue_url"].endswith("-monitors"), "its queues made at start"
        (source,) = cp.graphql("{ listIngestionSources(input: {start: 0, count: 5}) { ingestionSources { urn name type "
                               "config { recipe executorId version extraArgs { key value } } executions { total } } } }")[
            "listIngestionSources"]["ingestionSources"]
        assert (source["name"], source["type"], source["config"]["executorId"]) == ("pg", "postgres", "remote")
        assert json.loads(source["config"]["recipe"])["source"]["config"]["password"] == "${PG}", "secrets stay references"
        assert source["config"]["extraArgs"] == [{"key": "extra_env_vars", "value": '{"EXECUTOR_TASK_WEIGHT": "0.5"}'}]
        assert source["executions"]["total"] == 3
        assert cp.execution("exe_1")["status"] == "SUCCESS" and cp.execution("exe_1")["log_tail"] == "done"
        assert cp.execution("exe_2")["status"] == "PENDING"
        tables = {r["name"] for r in cp.cp.store.query("SELECT name FROM sqlite_master WHERE type='table'")}
        assert not {t for t in tables if t.startswith("legacy_")}
        for row in cp.cp.store.query("SELECT aspect, metadata FROM aspects"):
            assert cloud_model.ASPECT_NAME_MAP[row["aspect"]].from_obj(json.loads(row["metadata"])).validate(), row



def test_a_schema_1_runs_reason_executor_and_peak_memory_are_shown_after_the_upgrade(tmp_path, monkeypatch, capsys):
    """The legacy executions table had columns for them; DataHub's result keeps them in the
    structured report's executor section, which the admin CLI, GraphQL and the web page read."""
    from controlplane import admin_cli

    (tmp_path / "cp").mkdir()
    write_schema_1(tmp_path / "cp" / "controlplane.sqlite3")
    with running_controlplane(tmp_path / "cp") as cp:
        monkeypatch.setenv("DATAHUB_CONTROLPLANE_URL", cp.base_url)
        monkeypatch.setenv("DATAHUB_ADMIN_TOKEN", cp.admin_token)
        assert admin_cli.main(["--json", "executions", "show", "exe_3"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert (shown["status"], shown["reason"], shown["executor_id"], shown["peak_memory_bytes"], shown["duration_ms"]) == (
            "FAILURE", "MEMORY_LIMIT_EXCEEDED", "exec-7", 536870912, 800)
        report = json.loads(shown["result"]["structuredReport"]["serializedValue"])
        assert report["source"] == {"events_produced": 42}, "the legacy ingestion report is kept"
        assert report["executor"]["signal"] == 9 and "exitCode" not in report["executor"]
        assert shown["result"]["structuredReport"]["type"] == "CLI_INGEST"
        assert cp.execution("exe_1")["executor_details"] == {}, "a run with none of them gets an empty section"


def test_a_schema_5_database_keeps_its_full_logs_in_their_own_table(tmp_path, monkeypatch):
    """Schema 6 moves each run's full log out of the executions row (a result rewrote the whole
    blob): the logs stored before are still served, and deleting an execution takes its log."""
    import controlplane.store as store_module

    (tmp_path / "cp").mkdir()
    with monkeypatch.context() as schema_5:
        schema_5.setattr(store_module, "MIGRATIONS", MIGRATIONS[:5])
        with running_controlplane(tmp_path / "cp") as cp:
            cp.create_pool("p", default=True)
            logged, unlogged = (cp.run_source(cp.create_source(f"s{n}", "source: {type: file, config: {path: x}}\n")["id"])["id"]
                                for n in range(2))
            cp.cp.store.query("UPDATE executions SET status='SUCCESS', full_log=? WHERE id=?", (b"the whole log\n", logged))
            cp.cp.store.query("UPDATE executions SET status='SUCCESS' WHERE id=?", (unlogged,))
            assert cp.cp.store.schema_version == 5
    with running_controlplane(tmp_path / "cp") as cp:
        assert cp.cp.store.schema_version == len(MIGRATIONS) >= 6
        assert "full_log" not in {r["name"] for r in cp.cp.store.query("PRAGMA table_info(executions)")}
        assert cp.logs(logged)["log"] == "the whole log\n" and cp.execution(logged)["has_full_log"]
        assert not cp.execution(unlogged)["has_full_log"]
        deleted = cp.http.post(f"{cp.gms_url}/entities?action=delete",
                               json={"urn": f"urn:li:dataHubExecutionRequest:{logged}"}, timeout=10)
        assert deleted.status_code == 200
        assert cp.cp.store.query("SELECT COUNT(*) AS n FROM execution_logs") == [{"n": 0}]


def test_a_schema_7_database_counts_claims_from_its_processes_last_heartbeat(tmp_path, monkeypatch):
    """Schema 8 keeps when the heartbeat whose reportedAt is stored arrived: a process recorded
    before takes its last_seen, so its claims are timed on its clock as they were (not left
    untimed) until its next heartbeat, which records its own arrival."""
    import controlplane.store as store_module
    from tests.controlplane.conftest import RECIPE, ExecutorDouble

    (tmp_path / "cp").mkdir()
    with monkeypatch.context() as schema_7:
        schema_7.setattr(store_module, "MIGRATIONS", MIGRATIONS[:7])
        with running_controlplane(tmp_path / "cp") as cp:
            cp.create_pool("p", default=True)
            assert cp.cp.store.schema_version == 7
            # The process as a schema-7 control plane recorded its heartbeat, a copy of which then
            # moved last_seen (this code writes the new column, so the row is written here).
            cp.cp.store.query("INSERT INTO executor_instances (executor_id, pool_id, instance, state, "
                              "heartbeat_interval_s, last_seen, details, reported_at_ms) VALUES "
                              "('e', 'p', 'process-1', 'ACTIVE', 60, ?, '{}', ?)",
                              (time.time(), int(time.time() * 1000) - 500))
    with running_controlplane(tmp_path / "cp") as cp:
        assert cp.cp.store.schema_version == len(MIGRATIONS) >= 8
        (process,) = cp.cp.store.query("SELECT last_seen, reported_at_ms, reported_arrived_at FROM executor_instances")
        assert process["reported_arrived_at"] == process["last_seen"] and process["reported_at_ms"] is not None
        executor = ExecutorDouble(cp, "p", "e", interval_s=60)
        executor.instance_id = "process-1"  # the same executor process, heartbeating on
        execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
        assert executor.claim(execution) is not None
        claimed = cp.cp.store.one("SELECT claimed_at_executor_ms FROM executions WHERE id=?", (execution,))
        assert claimed["claimed_at_executor_ms"] >= process["reported_at_ms"]
        executor.heartbeat(running=[execution])
        (process,) = cp.cp.store.query("SELECT last_seen, reported_arrived_at FROM executor_instances")
        assert process["reported_arrived_at"] == process["last_seen"] > 0


def test_a_schema_9_databases_timeseries_points_survive_being_keyed_as_gms_keys_them(tmp_path, monkeypatch):
    """Schema 10 keys a timeseries point by GMS's document id, not its time alone: every point
    stored before is still read back, one of the same time for another partition is added beside
    it, not over it, and the same point sent again replaces it."""
    import datahub.metadata.schema_classes as model
    from datahub.emitter.mcp import MetadataChangeProposalWrapper
    from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig

    import controlplane.store as store_module

    urn = "urn:li:dataset:(urn:li:dataPlatform:hive,db.orders,PROD)"
    (tmp_path / "cp").mkdir()
    with monkeypatch.context() as schema_9:
        schema_9.setattr(store_module, "MIGRATIONS", MIGRATIONS[:9])
        with running_controlplane(tmp_path / "cp") as cp:
            assert cp.cp.store.schema_version == 9
            # As a schema-9 control plane stored them (this code writes the new column).
            for timestamp, partition in ((1000, "a"), (2000, "a")):
                cp.cp.store.query("INSERT INTO timeseries_aspects (urn, aspect, timestamp_ms, entity_type, metadata, "
                                  "system_metadata, created_on) VALUES (?, 'datasetProfile', ?, 'dataset', ?, NULL, ?)",
                                  (urn, timestamp, json.dumps({"timestampMillis": timestamp, "rowCount": 1,
                                                               "partitionSpec": {"partition": partition,
                                                                                 "type": "PARTITION"}}), timestamp))
    with running_controlplane(tmp_path / "cp") as cp:
        assert cp.cp.store.schema_version == len(MIGRATIONS) >= 10
        with DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=cp.admin_token)) as graph:
            for partition, rows in (("b", 2), ("a", 3)):
                graph.emit_mcp(MetadataChangeProposalWrapper(entityUrn=urn, aspect=model.DatasetProfileClass(
                    timestampMillis=2000, rowCount=rows, partitionSpec=model.PartitionSpecClass(partition=partition))))
            points = graph.get_timeseries_values(urn, model.DatasetProfileClass, filter={}, limit=10)
        assert sorted((p.timestampMillis, p.partitionSpec.partition, p.rowCount) for p in points) == [
            (1000, "a", 1), (2000, "a", 3), (2000, "b", 2)], "a stored point is replaced by the same point sent again"
        assert all(p.validate() for p in points)
