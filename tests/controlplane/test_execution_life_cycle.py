"""The execution life cycle through the executor's real client: claims and their leases,
progress and results as DataHub's result aspect, fencing of stale leases, cancellation through
DataHub's KILL signal, release, reconciliation, liveness, and what survives a restart."""
from __future__ import annotations

import json
import time

import boto3
import pytest

from controlplane.sources import with_pipeline_name
from controlplane.store import MIGRATIONS
from executor import datahub_aspects
from executor.controlplane_client import ControlPlaneError, LeaseLost
from vocabulary import statuses as S

from .conftest import RECIPE, raw


def sqs(cp):
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url,
                        aws_access_key_id="local", aws_secret_access_key="local")


def test_a_pool_gets_an_ingestion_and_a_monitors_queue_each_with_a_redrive_policy(cp):
    pool = cp.create_pool("p", visibility_timeout_s=45, max_receive_count=3)
    client = sqs(cp)
    for queue, dlq in ((pool["queue_url"], pool["dlq_url"]), (pool["monitors_queue_url"], pool["monitors_dlq_url"])):
        attributes = client.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        assert attributes["VisibilityTimeout"] == "45"
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["maxReceiveCount"] in (3, "3")
        assert redrive["deadLetterTargetArn"].endswith(dlq.rsplit("/", 1)[1])
    assert pool["monitors_queue_url"] == pool["queue_url"] + "-monitors"
    assert pool["queue_arn"].startswith("arn:aws:sqs:us-east-1:") and pool["queue_arn"].endswith(pool["queue_url"].rsplit("/", 1)[1])


def test_runs_are_sent_to_their_task_class_queue_without_recipe_or_secret(cp):
    pool = cp.create_pool("p", default=True)
    source = cp.create_source("s", RECIPE.replace("{}", "{password: '${PG_PASSWORD}'}"))
    ingest, monitor = cp.run_source(source["id"]), cp.run_source(source["id"], "RUN_MONITOR")
    client = sqs(cp)
    body = json.loads(client.receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=2)["Messages"][0]["Body"])
    assert body == {"v": 1, "execution_id": ingest["id"], "task": "RUN_INGEST", "pool_id": "p",
                    "requested_at": body["requested_at"]}
    body = json.loads(client.receive_message(QueueUrl=pool["monitors_queue_url"], WaitTimeSeconds=2)["Messages"][0]["Body"])
    assert body["execution_id"] == monitor["id"] and body["task"] == "RUN_MONITOR"


def test_claim_progress_result_and_their_idempotence(cp, executor_double):
    cp.create_pool("p", default=True)
    e1, e2 = executor_double("p", "e1"), executor_double("p", "e2")
    e1.heartbeat()
    e2.heartbeat()
    source = cp.create_source("s", RECIPE)
    execution = cp.run_source(source["id"])
    claimed = e1.claim(execution["id"])
    # The run's recipe is the source's, named after it where it names no pipeline (DataHub's resolver).
    assert claimed.args["recipe"] == with_pipeline_name(RECIPE, source["urn"]) != RECIPE
    assert claimed.task == "RUN_INGEST" and claimed.pool_id == "p"
    assert claimed.ingest_token.startswith("dhx_") and claimed.lease
    assert e2.claim(execution["id"]) is None, "running on a live executor: 409"
    e1.progress(claimed, "line 1", peak=1000)
    shown = cp.execution(execution["id"])
    assert shown["status"] == "RUNNING" and shown["log_tail"] == "line 1" and shown["peak_memory_bytes"] == 1000
    e1.finish(claimed, ingestion_report={"source": {"report": {"events_produced": 3}}})
    e1.finish(claimed, ingestion_report={"source": {"report": {"events_produced": 3}}})  # a retry: recorded once
    with pytest.raises(ControlPlaneError) as refused:
        e1.finish(claimed, status="FAILURE", reason="EXIT_CODE")
    assert refused.value.status == 409, "a final status is final"
    cp.cancel(execution["id"])
    shown = cp.execution(execution["id"])
    assert shown["status"] == "SUCCESS", "a late cancel never overwrites a final status"
    assert shown["structured_report"] == {"source": {"report": {"events_produced": 3}}}
    assert e2.claim(execution["id"]) is None


def test_a_result_or_claim_that_cannot_be_recorded_is_a_400_not_a_lost_lease_or_a_server_error(cp, executor_double):
    """The executor reads 409 as a lost lease (it kills a healthy task) and retries a 5xx for ever:
    a status it may not report, or a number past 64 bits, is its own mistake, answered 400."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    with pytest.raises(ControlPlaneError) as refused:
        executor.client.claim(execution, executor_id="e1", instance_id=executor.instance_id, pool_id="p",
                              receive_count=2**64)
    assert refused.value.status == 400
    claimed = executor.claim(execution)

    def result(status: str, **extra: int) -> dict:
        value = datahub_aspects.final_result(status=status, task=claimed.task, started_ms=1, duration_ms=1, report="r",
                                             ingestion_report=None, reason="EXIT_CODE", executor_id="e1")
        serialized = json.loads(value["structuredReport"]["serializedValue"])
        serialized["executor"].update(extra)
        value["structuredReport"]["serializedValue"] = json.dumps(serialized)
        return value

    for wrong in (result("DUPLICATE"), result("FAILURE", exitCode=2**70), result("FAILURE", peakMemoryBytes=2**64),
                  result("FAILURE", signal=-(2**63) - 1)):
        with pytest.raises(ControlPlaneError) as refused:
            executor.client.report(execution, claimed.lease, wrong)
        assert refused.value.status == 400 and not isinstance(refused.value, LeaseLost)
    assert cp.execution(execution)["status"] == "RUNNING", "nothing recorded; the lease still holds"
    executor.finish(claimed, "FAILURE", "EXIT_CODE")


def test_an_executor_cannot_record_a_reason_only_the_control_plane_decides(cp, executor_double):
    """EXECUTOR_LOST, CANCELLED_BEFORE_START and the like say what the control plane decided; a
    result naming one (a bug, or a task's output crafted into a report) was recorded as such."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    for reason in sorted(S.CONTROL_PLANE_REASONS):
        execution = cp.run_source(cp.create_source(f"s-{reason.lower()}", RECIPE)["id"])["id"]
        claimed = executor.claim(execution)
        executor.finish(claimed, "FAILURE", reason)
        shown = cp.execution(execution)
        assert (shown["status"], shown["reason"]) == ("FAILURE", None), reason
    execution = cp.run_source(cp.create_source("s-exit", RECIPE)["id"])["id"]
    executor.finish(executor.claim(execution), "FAILURE", "EXIT_CODE")
    assert cp.execution(execution)["reason"] == "EXIT_CODE", "an executor's own reason is kept"


def test_a_heartbeat_naming_an_instance_no_claim_could_name_is_refused(cp, executor_double):
    """A claim takes an instance id of 1-64 characters: an executor with a longer one was
    registered, showed ONLINE, and had every claim refused."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.instance_id = "i" * 65
    with pytest.raises(ControlPlaneError) as refused:
        executor.heartbeat()
    assert refused.value.status == 400 and "instanceId" in str(refused.value)
    executor.instance_id = "i" * 64
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    assert executor.claim(execution) is not None


def test_a_stale_lease_is_refused_and_changes_nothing(cp, executor_double):
    """A paused executor whose execution was taken over can never write over the new run."""
    cp.create_pool("p", default=True)
    paused, fresh = executor_double("p", "paused", interval_s=1), executor_double("p", "fresh", interval_s=30)
    paused.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    old = paused.claim(execution["id"])
    # Past three of its intervals, STALE: its execution may be claimed again. Six make it OFFLINE,
    # and the sweep would end the execution ABORTED before the new claim: 2.7 s spare for a loaded
    # machine (with 0.3 s intervals, 0.6 s was once not enough under `-n 4`).
    time.sleep(3.3)
    fresh.heartbeat()
    new = fresh.claim(execution["id"], receive_count=2)
    assert new is not None and new.lease != old.lease
    fresh.progress(new, "the new run")
    for stale_call in (lambda: paused.progress(old, "the old run"), lambda: paused.finish(old, "FAILURE", "EXIT_CODE"),
                       lambda: paused.client.upload_log(execution["id"], old.lease, b"old log"),
                       lambda: paused.client.release(execution["id"], old.lease, "old")):
        with pytest.raises(LeaseLost):
            stale_call()
    fresh.finish(new)
    shown = cp.execution(execution["id"])
    assert (shown["status"], shown["executor_id"]) == ("SUCCESS", "fresh")
    assert shown["lease_epoch"] == 2


def test_the_holders_own_message_back_early_is_deferred_and_a_second_message_refused(cp, executor_double):
    """A redelivery of the message its live holder claimed with means the holder stopped extending
    it (paused, cut off): the claim is deferred until the holder could be judged STALE, and the
    message is kept. Any other message for a running execution is a duplicate: refused for good."""
    cp.create_pool("p", default=True)
    holder, other = executor_double("p", "holder", interval_s=2), executor_double("p", "other")
    holder.heartbeat()
    other.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    assert holder.client.claim(execution["id"], executor_id="holder", instance_id=holder.instance_id, pool_id="p",
                               receive_count=1, message_id="msg-1") is not None
    deferred = other.client.claim(execution["id"], executor_id="other", instance_id=other.instance_id, pool_id="p",
                                  receive_count=2, message_id="msg-1")
    assert type(deferred).__name__ == "ClaimDeferred" and 1 <= deferred.retry_after_s <= 8
    assert other.client.claim(execution["id"], executor_id="other", instance_id=other.instance_id, pool_id="p",
                              receive_count=1, message_id="msg-2") is None


def test_cancel_of_a_pending_run_is_at_once_and_of_a_running_one_a_kill_signal(cp, executor_double):
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    pending = cp.run_source(cp.create_source("s1", RECIPE)["id"])
    assert cp.cancel(pending["id"])["status"] == "CANCELLED"
    assert cp.execution(pending["id"])["reason"] == "CANCELLED_BEFORE_START"
    assert executor.claim(pending["id"]) is None
    running = cp.run_source(cp.create_source("s2", RECIPE)["id"])
    claimed = executor.claim(running["id"])
    assert executor.client.cancel_requested(running["id"]) is False
    cp.cancel(running["id"])
    assert executor.client.cancel_requested(running["id"]) is True, "read from DataHub's signal aspect"
    executor.finish(claimed, "CANCELLED", "CANCELLED")
    assert cp.execution(running["id"])["status"] == "CANCELLED"


def test_a_cancelled_run_given_back_unstarted_ends_cancelled_instead_of_running_again(cp, executor_double):
    """Released by a stopping executor, or not listed by its holder: either way it never started,
    and the user asked for it not to run."""
    pool = cp.create_pool("p", default=True)
    executor, other = executor_double("p", "e1"), executor_double("p", "e2")
    executor.heartbeat()
    other.heartbeat()
    released, unlisted = (cp.run_source(cp.create_source(name, RECIPE)["id"])["id"] for name in ("s1", "s2"))
    for _ in range(2):
        sqs(cp).receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=2)
    claimed = executor.claim(released)
    executor.claim(unlisted)
    cp.cancel(released)
    cp.cancel(unlisted)
    executor.client.release(released, claimed.lease, "stopping")
    executor.client.release(released, claimed.lease, "stopping")  # a retry whose answer was lost: done already
    for _ in range(2):
        time.sleep(0.01)
        executor.heartbeat(running=[])
    for execution in (released, unlisted):
        shown = cp.execution(execution)
        assert (shown["status"], shown["reason"]) == ("CANCELLED", "CANCELLED_BEFORE_START")
        assert other.claim(execution) is None
    assert "Messages" not in sqs(cp).receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=1), "not queued again"


def test_a_cancelled_run_whose_holder_fell_silent_is_not_taken_over_but_ends_cancelled(cp, executor_double):
    """Its holder cut off (STALE), its message back: another executor's claim took it over with
    a new lease and started it again, though the user had cancelled it (decision 47 ends a
    release or requeue of such a run CANCELLED for this reason)."""
    cp.create_pool("p", default=True)
    silent, other = executor_double("p", "silent", interval_s=0.2), executor_double("p", "other", interval_s=30)
    silent.heartbeat()
    other.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    held = silent.claim(execution)
    silent.heartbeat(running=[execution])
    cp.cancel(execution)
    time.sleep(0.8)  # more than three of its intervals: STALE, not yet OFFLINE
    assert other.claim(execution, receive_count=2) is None, "409: final, the message is deleted"
    shown = cp.execution(execution)
    assert (shown["status"], shown["reason"], shown["executor_id"]) == ("CANCELLED", "CANCELLED", "silent")
    with pytest.raises(LeaseLost):
        silent.progress(held, "back from a pause")  # the old holder learns it, and kills its task
    silent.finish(held, "CANCELLED", "CANCELLED")  # the result it would send for a killed task: already so


def test_a_claim_from_a_stopped_or_replaced_process_is_refused_and_the_run_goes_elsewhere(cp, executor_double):
    """Its heartbeats are over (STOPPED: its last list was final) or speak for another process
    (a restart under the same id): nothing would ever reconcile what it held."""
    cp.create_pool("p", default=True)
    stopped, old = executor_double("p", "stopped"), executor_double("p", "restarted", interval_s=0.3)
    stopped.heartbeat()
    old.heartbeat()
    time.sleep(1.0)  # the old process paused: STALE, so a new one may take its id
    new = executor_double("p", "restarted", token=old.token, interval_s=30)
    new.heartbeat()
    stopped.heartbeat(state="STOPPED")
    for late in (stopped, old):
        execution = cp.run_source(cp.create_source(f"s-{late.executor_id}", RECIPE)["id"])["id"]
        refused = late.claim(execution)
        assert type(refused).__name__ == "ClaimDeferred", "409 with retry_after_s: the message is returned, not deleted"
        assert "another executor" in refused.why, "the executor logs why its claim was deferred"
        shown = cp.execution(execution)
        assert (shown["status"], shown["lease_epoch"]) == ("PENDING", 0), "nothing changed"
        assert new.claim(execution, receive_count=2) is not None


def test_a_claim_from_a_process_judged_offline_is_deferred_until_it_heartbeats_again(cp, executor_double):
    """Cut off from the control plane for six of its intervals while its intake still received:
    granted, its claim was ended ABORTED (EXECUTOR_LOST) by the next sweep, before the process's
    next heartbeat could list it, a run that never started ending as failed."""
    cp.create_pool("p", default=True)
    cut_off = executor_double("p", "cut-off", interval_s=0.2)
    cut_off.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    time.sleep(1.5)  # more than six of its intervals: OFFLINE
    refused = cut_off.claim(execution)
    assert type(refused).__name__ == "ClaimDeferred", "the message goes back, not deleted"
    assert "OFFLINE" in refused.why and refused.retry_after_s >= 1
    cp.cp.sweep()
    shown = cp.execution(execution)
    assert (shown["status"], shown["lease_epoch"]) == ("PENDING", 0), "nothing changed"
    cut_off.heartbeat()
    claimed = cut_off.claim(execution, receive_count=2)
    assert claimed is not None and type(claimed).__name__ == "Claimed"
    cut_off.heartbeat(running=[execution])
    cp.cp.sweep()
    assert cp.execution(execution)["status"] == "RUNNING"


def test_a_second_run_of_a_running_source_is_a_duplicate(cp, executor_double):
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    source = cp.create_source("s", RECIPE)
    first, second = cp.run_source(source["id"]), cp.run_source(source["id"])
    assert executor.claim(first["id"]) is not None
    assert executor.claim(second["id"]) is None
    shown = cp.execution(second["id"])
    assert (shown["status"], shown["reason"]) == ("DUPLICATE", "SOURCE_ALREADY_RUNNING")


def test_executors_go_stale_then_offline_by_their_own_interval_and_lose_their_runs(cp, executor_double):
    cp.create_pool("p", default=True)
    fast, slow = executor_double("p", "fast", interval_s=0.5), executor_double("p", "slow", interval_s=60)
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    fast.heartbeat()
    slow.heartbeat()
    fast.claim(execution["id"])
    fast.heartbeat(running=[execution["id"]])
    assert {e["executor_id"]: e["status"] for e in cp.executors("p")} == {"fast": "ONLINE", "slow": "ONLINE"}
    time.sleep(1.8)
    assert {e["executor_id"]: e["status"] for e in cp.executors("p")} == {"fast": "STALE", "slow": "ONLINE"}
    shown = {e["executor_id"]: e for e in cp.executors("p")}["fast"]
    assert shown["hostname"] == "host-1" and shown["capacity"]["ingestion"]["used_weight"] == 0.25
    assert shown["running_executions"] == [execution["id"]]
    done = cp.wait_for_status(execution["id"], {"ABORTED"}, timeout_s=10)
    assert done["reason"] == "EXECUTOR_LOST"
    assert {e["executor_id"]: e["status"] for e in cp.executors("p")}["fast"] == "OFFLINE"
    deadline = time.monotonic() + 5
    while not cp.cp.executors.list("p")[0].get("executor_id") or not _expired(cp, "fast"):
        assert time.monotonic() < deadline, "an OFFLINE executor's status says executorExpired"
        time.sleep(0.2)


def _expired(cp, executor_id: str) -> bool:
    from controlplane.metadata import aspect_store

    with cp.cp.store.read() as db:
        status = aspect_store.get(db, f"urn:li:dataHubRemoteExecutor:{executor_id}", "dataHubRemoteExecutorStatus")
    return bool(status and status.value["executorExpired"])


def test_two_live_processes_cannot_share_one_executor_id(cp, executor_double):
    cp.create_pool("p", default=True)
    first, second = executor_double("p", "same-id", interval_s=0.4), executor_double("p", "same-id", interval_s=0.4)
    first.heartbeat()
    with pytest.raises(ControlPlaneError) as refused:
        second.heartbeat()
    assert refused.value.status == 409 and "DATAHUB_EXECUTOR_ID" in str(refused.value)
    first.heartbeat(state="STOPPED")
    second.heartbeat()  # the first process stopped: the id is free again


def test_a_live_executor_or_one_holding_runs_cannot_be_deleted(cp, executor_double):
    """Without its record the next sweep would judge it gone and abort all it runs."""
    cp.create_pool("p", default=True)
    live, stopped = executor_double("p", "live", interval_s=30), executor_double("p", "stopped")
    live.heartbeat()
    stopped.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    claimed = live.claim(execution)
    stopped.heartbeat(state="STOPPED")

    def delete(executor_id: str) -> int:
        return cp.http.post(f"{cp.gms_url}/entities?action=delete",
                            json={"urn": f"urn:li:dataHubRemoteExecutor:{executor_id}"}, timeout=10).status_code

    assert delete("live") == 409
    cp.cp.sweep()
    assert cp.execution(execution)["status"] == "RUNNING"
    live.progress(claimed, "still running")
    assert delete("stopped") == 200
    assert [e["executor_id"] for e in cp.executors("p")] == ["live"]


def test_an_execution_its_holder_does_not_list_is_queued_again(cp, executor_double):
    """A claim whose answer never reached the executor is recovered in two heartbeats."""
    pool = cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    sqs(cp).receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=2)  # the first message, taken
    assert executor.claim(execution["id"]) is not None  # ...and the answer "lost"
    executor.heartbeat(running=[])
    assert cp.execution(execution["id"])["status"] == "RUNNING", "one heartbeat without it may be a race"
    executor.heartbeat(running=[])
    shown = cp.execution(execution["id"])
    assert shown["status"] == "PENDING" and shown["executor_id"] is None
    message = sqs(cp).receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=5)["Messages"][0]
    assert json.loads(message["Body"])["execution_id"] == execution["id"], "sent to the queue again at once"


def test_released_work_is_queued_again_at_once(cp, executor_double):
    pool = cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    sqs(cp).receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=2)
    claimed = executor.claim(execution["id"])
    executor.client.release(execution["id"], claimed.lease, "stopping")
    executor.client.release(execution["id"], claimed.lease, "stopping")  # a retry whose answer was lost: done already
    assert cp.execution(execution["id"])["status"] == "PENDING"
    message = sqs(cp).receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=5)["Messages"][0]
    assert json.loads(message["Body"])["execution_id"] == execution["id"]
    other = executor_double("p", "e2")
    other.heartbeat()
    time.sleep(0.05)
    claimed_again_at = time.time()
    assert other.claim(execution["id"]) is not None
    shown = cp.execution(execution["id"])
    assert shown["started_at"] >= claimed_again_at and shown["result"]["startTimeMs"] >= int(claimed_again_at * 1000), \
        "the run given back starts anew: its time queued again is not counted as run"


def test_an_execution_whose_runners_keep_failing_before_it_starts_ends_failed(cp, executor_double):
    """A release makes a new message, so SQS's receive count never reaches the DLQ: an execution
    that broke every runner taking it went round the pool for good. The third failed release
    ends it FAILURE (EXECUTOR_ERROR); releases of a stopping executor are no failures."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    for _ in range(5):
        claimed = executor.claim(execution)
        executor.client.release(execution, claimed.lease, "the executor is stopping")
    assert cp.execution(execution)["status"] == "PENDING"
    for attempt in range(3):
        claimed = executor.claim(execution)
        executor.client.release(execution, claimed.lease, f"runner failed (KeyError {attempt})", failed=True)
        executor.client.release(execution, claimed.lease, "a retry whose answer was lost", failed=True)
    ended = cp.execution(execution)
    assert (ended["status"], ended["reason"]) == ("FAILURE", "EXECUTOR_ERROR")
    assert "executors gave it back, failed, 3 times; the last: runner failed (KeyError 2)" in ended["log_tail"]
    assert executor.claim(execution) is None, "final: its message is deleted"


def test_a_stopping_executor_gives_back_what_it_did_not_start(cp, executor_double):
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    started = cp.run_source(cp.create_source("s1", RECIPE)["id"])
    unstarted = cp.run_source(cp.create_source("s2", RECIPE)["id"])
    executor.claim(started["id"])
    executor.claim(unstarted["id"])
    executor.heartbeat(state="STOPPED", running=[started["id"]])
    assert cp.execution(unstarted["id"])["status"] == "PENDING", "its last list is the truth"


def test_another_pools_executor_cannot_claim_and_ids_are_checked(cp, executor_double):
    cp.create_pool("a", default=True)
    cp.create_pool("b")
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    everywhere = cp.create_executor_token(None)
    intruder = executor_double("b", "e-b", token=everywhere)
    intruder.heartbeat()
    with pytest.raises(ControlPlaneError) as refused:
        intruder.claim(execution["id"])
    assert refused.value.status == 403 and "belongs to pool a" in str(refused.value)
    scoped = executor_double("b", "e-b2")
    with pytest.raises(ControlPlaneError) as refused:
        scoped.client.claim(execution["id"], executor_id="e-b2", instance_id="x", pool_id="a", receive_count=1)
    assert refused.value.status == 403
    response = raw(cp, scoped.token).post(f"{cp.gms_url}/executor/v1/executions/..%2F..%2Fadmin/claim",
                                          json={"executor_id": "e", "instance_id": "i", "pool_id": "b"}, timeout=5)
    assert response.status_code in (400, 404)
    response = raw(cp, scoped.token).post(f"{cp.gms_url}/executor/v1/executions/x/claim",
                                          json={"executor_id": "e,(bad)", "instance_id": "i", "pool_id": "b"}, timeout=5)
    assert response.status_code == 400 and "executor id" in response.json()["error"]


def test_logs_are_the_tail_while_running_and_the_full_log_after(cp, executor_double):
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    claimed = executor.claim(execution["id"])
    executor.progress(claimed, "tail so far")
    assert cp.logs(execution["id"]) == {"execution_id": execution["id"], "status": "RUNNING", "complete": False,
                                        "log": "tail so far"}
    executor.client.upload_log(execution["id"], claimed.lease, b"line 1\nline 2\n")
    assert cp.logs(execution["id"])["log"] == "line 1\nline 2\n"


def test_a_log_is_stored_only_under_the_lease_of_the_run_that_holds_the_execution(cp, executor_double):
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1")
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])["id"]
    url = f"{cp.gms_url}/executor/v1/executions/{execution}/log"
    response = raw(cp, executor.token).put(url, data=b"forged", timeout=5)
    assert response.status_code == 400 and "X-DataHub-Execution-Lease" in response.json()["error"]
    with pytest.raises(LeaseLost):
        executor.client.upload_log(execution, "no-run-holds-it", b"forged")
    claimed = executor.claim(execution)
    executor.client.upload_log(execution, claimed.lease, b"the first run's log")
    executor.client.release(execution, claimed.lease, "stopping")
    shown = cp.logs(execution)
    assert shown["log"] != "the first run's log" and not cp.execution(execution)["has_full_log"], \
        "queued again: the previous run's log is gone"


def test_state_survives_a_restart(tmp_path):
    from controlplane.testing import running_controlplane

    with running_controlplane(tmp_path / "cp") as cp:
        pool = cp.create_pool("p", default=True)
        source = cp.create_source("s", RECIPE)
        execution = cp.run_source(source["id"])
        gms_url = cp.gms_url
        cp.stop()
        cp.start()
        assert cp.gms_url == gms_url, "same port after a restart"
        assert cp.execution(execution["id"])["status"] == "PENDING"
        assert [s["name"] for s in cp.cp.sources.list()] == ["s"]
        message = sqs(cp).receive_message(QueueUrl=pool["queue_url"], WaitTimeSeconds=2)["Messages"][0]
        assert json.loads(message["Body"])["execution_id"] == execution["id"], "PENDING work is sent again"
        assert cp.cp.store.schema_version == len(MIGRATIONS)


def _claimed_then_stopped(cp, executor_double, interval_s: float) -> dict:
    """A run RUNNING on an executor heartbeating every INTERVAL_S, and the control plane stopped."""
    cp.create_pool("p", default=True)
    executor = executor_double("p", "e1", interval_s=interval_s)
    executor.heartbeat()
    execution = cp.run_source(cp.create_source("s", RECIPE)["id"])
    executor.claim(execution["id"])
    cp.stop()
    return execution


def test_a_slow_start_does_not_make_executors_lost(cp, executor_double, monkeypatch):
    """Executors cannot heartbeat until the API serves: a start held up by the queue service
    (made slow here, as an SQS outage makes it) is not counted against them."""
    from controlplane.pools import Pools

    execution = _claimed_then_stopped(cp, executor_double, interval_s=1.0)
    ensure_queues = Pools.ensure_queues

    def slow_queue_service(self):
        time.sleep(7)  # seven of the executor's intervals: OFFLINE, had they counted
        ensure_queues(self)

    monkeypatch.setattr(Pools, "ensure_queues", slow_queue_service)
    cp.start()
    assert cp.executors("p")[0]["status"] != "OFFLINE"
    cp.cp.sweep()
    assert cp.execution(execution["id"])["status"] == "RUNNING"


def test_a_control_plane_outage_does_not_make_executors_lost(cp, executor_double):
    """Heartbeats cannot arrive while the control plane is down; executors are judged from its restart on."""
    # 1 s intervals: STALE comes 3 s after the restart serves, which leaves a loaded machine time
    # to read (at 0.5 s, a slow restart and read found it STALE).
    execution = _claimed_then_stopped(cp, executor_double, interval_s=1.0)
    time.sleep(7)  # seven of its intervals: OFFLINE, were the outage counted
    cp.start()
    assert cp.executors("p")[0]["status"] == "ONLINE"
    assert cp.execution(execution["id"])["status"] == "RUNNING"
    assert cp.wait_for_status(execution["id"], {"ABORTED"}, timeout_s=20)["reason"] == "EXECUTOR_LOST", \
        "an executor that stays silent after the restart is still judged lost"


def test_a_run_for_an_executor_elsewhere_cannot_be_claimed_here_even_by_an_all_pools_token(cp, executor_double):
    """Its executorId names no pool of ours (decision 26: stored, never queued here). An executor
    token for all pools claimed it: the recipe, a lease and an ingest token, and a run left
    RUNNING that no sweep ends and that the executor it was meant for never took."""
    cp.create_pool("a", default=True)
    source = cp.create_source("s", RECIPE, pool_id="elsewhere")
    execution = cp.run_source(source["id"])["id"]
    outsider = executor_double("elsewhere", "ex1", token=cp.create_executor_token(None))
    with pytest.raises(ControlPlaneError) as refused:
        outsider.claim(execution)
    assert refused.value.status == 403
    shown = cp.execution(execution)
    assert (shown["status"], shown["lease_epoch"]) == ("PENDING", 0)
