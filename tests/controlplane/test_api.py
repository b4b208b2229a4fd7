"""The control plane's API as the protocol and the seed describe it, over real HTTP, with the
embedded SQS server."""
from __future__ import annotations

import json
import time

import boto3
import requests

from controlplane.testing import running_controlplane

from .conftest import RECIPE, executor_api, heartbeat_body


def admin(cp, method, path, **kwargs):
    return cp.http.request(method, f"{cp.gms_url}/admin/v1{path}", timeout=10, **kwargs)


def test_a_pool_gets_a_queue_and_a_dlq_with_a_redrive_policy(cp):
    pool = cp.create_pool("remote", default=True, max_receive_count=3)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                       aws_access_key_id="local", aws_secret_access_key="local")
    attributes = sqs.get_queue_attributes(QueueUrl=pool["queue_url"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["maxReceiveCount"] in (3, "3")
    assert redrive["deadLetterTargetArn"].endswith("-remote-dlq")
    assert pool["is_default"] is True


def test_exactly_one_default_pool(cp):
    cp.create_pool("a", default=True)
    cp.create_pool("b", default=True)
    pools = {p["id"]: p["is_default"] for p in admin(cp, "GET", "/pools").json()}
    assert pools == {"a": False, "b": True}
    admin(cp, "POST", "/pools/a/default")
    assert {p["id"]: p["is_default"] for p in admin(cp, "GET", "/pools").json()} == {"a": True, "b": False}


def test_pool_ids_are_unique_and_validated(cp):
    cp.create_pool("remote")
    assert admin(cp, "POST", "/pools", json={"id": "remote"}).status_code == 409
    assert admin(cp, "POST", "/pools", json={"id": "bad id!"}).status_code == 400
    assert admin(cp, "POST", "/pools", json={"id": "x", "visibility_timeout_s": 50000}).status_code == 400
    assert admin(cp, "POST", "/pools", json={}).status_code == 400


def test_deleting_a_pool_in_use_is_refused_with_the_reason(cp):
    cp.create_pool("remote", default=True)
    cp.create_source("mysql-prod", RECIPE)
    answer = admin(cp, "DELETE", "/pools/remote")
    assert answer.status_code == 409
    assert "mysql-prod" in answer.json()["error"]
    cp.create_pool("other")
    assert admin(cp, "DELETE", "/pools/other").status_code == 200
    assert admin(cp, "GET", "/pools/other").status_code == 404


def test_a_new_source_gets_the_default_pool_and_can_move(cp):
    cp.create_pool("default-pool", default=True)
    cp.create_pool("eu")
    source = cp.create_source("s1", RECIPE)
    assert source["pool_id"] == "default-pool"
    moved = admin(cp, "PATCH", f"/sources/{source['id']}", json={"pool_id": "eu"}).json()
    assert moved["pool_id"] == "eu"
    assert admin(cp, "PATCH", f"/sources/{source['id']}", json={"pool_id": "nowhere"}).status_code == 404


def test_a_recipe_that_is_not_yaml_is_rejected_at_creation(cp):
    cp.create_pool("p", default=True)
    answer = admin(cp, "POST", "/sources", json={"name": "bad", "recipe": "source: [unclosed"})
    assert answer.status_code == 400
    assert "not valid YAML" in answer.json()["error"]
    assert admin(cp, "POST", "/sources", json={"name": "bad", "recipe": "just text"}).status_code == 400
    assert admin(cp, "GET", "/sources").json() == [], "nothing half-written"


def test_run_enqueues_a_message_without_recipe_or_secret(cp):
    pool = cp.create_pool("p", default=True)
    source = cp.create_source("s", RECIPE.replace("{}", "{password: '${DB_PASSWORD}'}"), extra_env={"EXECUTOR_TASK_WEIGHT": "0.5"})
    execution = cp.run_source(source["id"])
    assert execution["status"] == "PENDING"
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                       aws_access_key_id="local", aws_secret_access_key="local")
    body = json.loads(sqs.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=2)["Messages"][0]["Body"])
    assert body["v"] == 1 and body["execution_id"] == execution["id"] and body["task"] == "RUN_INGEST"
    assert body["weight"] == 0.5 and body["pool_id"] == "p"
    assert "recipe" not in body and "DB_PASSWORD" not in json.dumps(body)
    assert admin(cp, "GET", f"/sources/{source['id']}").json()["last_execution"]["status"] == "PENDING"


def test_tokens_401_403_and_stored_hashed(cp, tmp_path):
    cp.create_pool("a")
    cp.create_pool("b")
    token = cp.create_executor_token(["a"])
    call = executor_api(cp, token)
    assert call("GET", "/pools/a").status_code == 200
    assert call("GET", "/pools/b").status_code == 403
    assert executor_api(cp, "dhx_nonsense")("GET", "/pools/a").status_code == 401
    assert requests.get(cp.gms_url + "/executor/v1/pools/a", timeout=5).status_code == 401
    assert call("GET", "/pools/zzz").status_code == 403
    assert executor_api(cp, cp.create_executor_token(None))("GET", "/pools/zzz").status_code == 404
    assert call("GET", "/../admin/v1/pools").status_code in (401, 403, 404)
    database = (tmp_path / "cp" / "controlplane.sqlite3").read_bytes()
    assert token.encode() not in database and cp.admin_token.encode() not in database
    assert all("token" not in t for t in admin(cp, "GET", "/tokens").json())


def test_claim_progress_result_and_idempotence(cp):
    cp.create_pool("p", default=True)
    call = executor_api(cp, cp.create_executor_token(["p"]))
    call("PUT", "/pools/p/executors/e1", json=heartbeat_body())
    call("PUT", "/pools/p/executors/e2", json=heartbeat_body())
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    claimed = call("POST", f"/executions/{execution['id']}/claim", json={"executor_id": "e1", "receive_count": 1})
    assert claimed.status_code == 200 and claimed.json()["args"]["recipe"] == RECIPE
    assert call("POST", f"/executions/{execution['id']}/claim", json={"executor_id": "e2"}).status_code == 409
    answer = call("POST", f"/executions/{execution['id']}/progress", json={"executor_id": "e1", "log_tail": "line 1",
                                                                             "peak_memory_bytes": 1000}).json()
    assert answer == {"cancel_requested": False, "status": "RUNNING"}
    assert cp.execution(execution["id"])["log_tail"] == "line 1"
    result = {"executor_id": "e1", "status": "SUCCESS", "exit_code": 0, "duration_ms": 5, "structured_report": {"ok": 1}}
    assert call("POST", f"/executions/{execution['id']}/result", json=result).status_code == 200
    assert call("POST", f"/executions/{execution['id']}/result", json=result).json()["repeated"] is True
    assert call("POST", f"/executions/{execution['id']}/result", json={**result, "status": "FAILURE"}).status_code == 409
    assert cp.cancel(execution["id"])["status"] == "SUCCESS", "a late cancel never overwrites a final status"
    assert call("POST", f"/executions/{execution['id']}/claim", json={"executor_id": "e2"}).status_code == 409
    shown = cp.execution(execution["id"])
    assert shown["structured_report"] == {"ok": 1} and shown["peak_memory_bytes"] == 1000


def test_cancel_reaches_the_executor_through_progress(cp):
    cp.create_pool("p", default=True)
    call = executor_api(cp, cp.create_executor_token(["p"]))
    pending = cp.run_source(cp.create_source("s1", RECIPE)["id"])
    assert cp.cancel(pending["id"])["status"] == "CANCELLED", "a PENDING execution is cancelled at once"
    assert call("POST", f"/executions/{pending['id']}/claim", json={"executor_id": "e1"}).status_code == 409
    running = cp.run_source(cp.create_source("s2", RECIPE)["id"])
    call("POST", f"/executions/{running['id']}/claim", json={"executor_id": "e1"})
    cp.cancel(running["id"])
    assert call("POST", f"/executions/{running['id']}/progress", json={"executor_id": "e1"}).json()["cancel_requested"]


def test_a_second_run_of_a_running_source_is_a_duplicate(cp):
    cp.create_pool("p", default=True)
    call = executor_api(cp, cp.create_executor_token(["p"]))
    call("PUT", "/pools/p/executors/e1", json=heartbeat_body())
    source = cp.create_source("s", RECIPE)
    first, second = cp.run_source(source["id"]), cp.run_source(source["id"])
    assert call("POST", f"/executions/{first['id']}/claim", json={"executor_id": "e1"}).status_code == 200
    assert call("POST", f"/executions/{second['id']}/claim", json={"executor_id": "e1"}).status_code == 409
    assert cp.execution(second["id"])["status"] == "DUPLICATE"


def test_executors_go_stale_then_offline_by_their_own_interval_and_lose_their_runs(cp):
    cp.create_pool("p", default=True)
    call = executor_api(cp, cp.create_executor_token(["p"]))
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    call("PUT", "/pools/p/executors/fast", json=heartbeat_body(interval=0.5, running=[execution["id"]]))
    call("PUT", "/pools/p/executors/slow", json=heartbeat_body(interval=60))
    call("POST", f"/executions/{execution['id']}/claim", json={"executor_id": "fast"})
    assert {e["executor_id"]: e["status"] for e in cp.executors("p")} == {"fast": "ONLINE", "slow": "ONLINE"}
    time.sleep(1.8)
    assert {e["executor_id"]: e["status"] for e in cp.executors("p")} == {"fast": "STALE", "slow": "ONLINE"}
    shown = {e["executor_id"]: e for e in cp.executors("p")}["fast"]
    assert shown["hostname"] == "host-1" and shown["capacity"]["ingestion"]["used_weight"] == 0.25
    assert shown["running_executions"] == [execution["id"]]
    done = cp.wait_for_status(execution["id"], {"ABORTED"}, timeout_s=10)
    assert done["reason"] == "EXECUTOR_LOST"
    assert {e["executor_id"]: e["status"] for e in cp.executors("p")}["fast"] == "OFFLINE"


def test_a_redelivery_claimed_by_another_executor_is_not_aborted(cp):
    cp.create_pool("p", default=True)
    call = executor_api(cp, cp.create_executor_token(["p"]))
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    call("PUT", "/pools/p/executors/dead", json=heartbeat_body(interval=0.3))
    call("POST", f"/executions/{execution['id']}/claim", json={"executor_id": "dead"})
    time.sleep(1.2)  # STALE: not yet lost, but no longer holding the task against a redelivery
    call("PUT", "/pools/p/executors/alive", json=heartbeat_body(interval=30))
    assert call("POST", f"/executions/{execution['id']}/claim", json={"executor_id": "alive", "receive_count": 2}).status_code == 200
    time.sleep(3)
    shown = cp.execution(execution["id"])
    assert shown["status"] == "RUNNING" and shown["executor_id"] == "alive"


def test_a_pool_without_an_online_executor_says_so(cp):
    cp.create_pool("lonely")
    pool = admin(cp, "GET", "/pools").json()[0]
    assert pool["status"] == "NO_ONLINE_EXECUTOR" and pool["online_executors"] == 0


def test_bad_bodies_answer_400_with_what_was_wrong(cp):
    cp.create_pool("p", default=True)
    call = executor_api(cp, cp.create_executor_token(["p"]))
    answer = call("PUT", "/pools/p/executors/e1", json={"state": "DANCING"})
    assert answer.status_code == 400 and "state" in answer.json()["error"]
    assert call("POST", "/executions/nope/claim", json={"executor_id": "e"}).status_code == 404
    answer = call("POST", "/executions/nope/result", json={"executor_id": "e", "status": "GREAT"})
    assert answer.status_code == 400
    assert call("PUT", "/pools/p/executors/e1", data=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400


def test_logs_tail_while_running_and_the_full_log_after(cp):
    cp.create_pool("p", default=True)
    call = executor_api(cp, cp.create_executor_token(["p"]))
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    call("POST", f"/executions/{execution['id']}/claim", json={"executor_id": "e1"})
    call("POST", f"/executions/{execution['id']}/progress", json={"executor_id": "e1", "log_tail": "tail so far"})
    assert cp.logs(execution["id"]) == {"execution_id": execution["id"], "status": "RUNNING", "complete": False,
                                        "log": "tail so far"}
    call("PUT", f"/executions/{execution['id']}/log", data=b"line 1\nline 2\n")
    assert cp.logs(execution["id"])["log"] == "line 1\nline 2\n"


def test_state_survives_a_restart(tmp_path):
    with running_controlplane(tmp_path / "cp") as cp:
        cp.create_pool("p", default=True)
        source = cp.create_source("s", RECIPE)
        execution = cp.run_source(source["id"])
        gms_url = cp.gms_url
        cp.stop()
        cp.start()
        assert cp.gms_url == gms_url, "same port after a restart"
        assert cp.execution(execution["id"])["status"] == "PENDING"
        assert [s["name"] for s in admin(cp, "GET", "/sources").json()] == ["s"]
        pool = admin(cp, "GET", "/pools/p").json()
        sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                           aws_access_key_id="local", aws_secret_access_key="local")
        message = sqs.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=2)["Messages"][0]
        assert json.loads(message["Body"])["execution_id"] == execution["id"], "PENDING work is enqueued again"
        assert cp.server.cp.store.schema_version == 1


def test_a_control_plane_outage_does_not_make_executors_lost(cp):
    """Heartbeats cannot arrive while the control plane is down; executors are judged from its restart on."""
    cp.create_pool("p", default=True)
    call = executor_api(cp, cp.create_executor_token(["p"]))
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    call("PUT", "/pools/p/executors/e1", json=heartbeat_body(interval=0.5))
    call("POST", f"/executions/{execution['id']}/claim", json={"executor_id": "e1"})
    cp.stop()
    time.sleep(4)  # eight of e1's intervals
    cp.start()
    time.sleep(0.5)
    assert cp.executors("p")[0]["status"] == "ONLINE"
    assert cp.execution(execution["id"])["status"] == "RUNNING"
    assert cp.wait_for_status(execution["id"], {"ABORTED"}, timeout_s=10)["reason"] == "EXECUTOR_LOST", \
        "an executor that stays silent after the restart is still judged lost"
