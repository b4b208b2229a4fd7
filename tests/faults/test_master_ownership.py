"""The master's seams, broken on purpose (issue 13): answers that are not JSON, a shutdown with
work claimed but not started, a second stop signal, an idle stop, monitors behind a full
ingestion ledger, a log upload and an SQS delete that keep failing. Each of these once killed a
thread, lost work or held a result back."""
from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.conftest import custom_env, custom_recipe, live_tasks, mock_recipe, wait_for_tick

from executor.master import FINAL_HEARTBEAT_TIMEOUT_S, SECOND_SIGNAL_REPORT_S

from .faulty_proxy import in_front_of


@pytest.fixture
def proxy(system):
    with in_front_of(system.cp.gms_url, system.executors) as broken:
        yield broken


@pytest.fixture
def sqs_proxy(system):
    with in_front_of(system.cp.sqs_endpoint_url, system.executors) as broken:
        yield broken


def test_answers_that_are_not_json_never_kill_a_runner(system, proxy, tmp_path):
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url)
    signal_reads = proxy.break_("GET", "dataHubExecutionRequestSignal", times=4)
    source = system.cp.create_source("sleepy", custom_recipe("SleepySource", tmp_path / "s.json", seconds=6),
                                     extra_env=custom_env())
    execution = system.cp.run_source(source["id"])
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=180)
    assert done["status"] == "SUCCESS"
    assert signal_reads.hits == 4, "the runner met the broken answers and carried on"
    assert not [line for line in executor.lines if "failed unexpectedly" in line or "Traceback" in line]
    assert executor.process.poll() is None


def a_run_waiting_behind_another(system, tmp_path, ahead_s: float) -> tuple[dict, dict]:
    """(the run ahead, the run waiting): a task of the default weight that runs AHEAD_S, then one
    of the whole capacity, which an executor of two workers receives and claims while half its
    capacity is free, and which then waits for admission, saying so in its log tail."""
    running = system.cp.run_source(system.cp.create_source(
        "long", custom_recipe("SleepySource", tmp_path / "l.json", seconds=ahead_s), extra_env=custom_env())["id"])
    wait_for_tick(system, running["id"])
    waiting = system.cp.run_source(system.cp.create_source(
        "heavy", custom_recipe("SleepySource", tmp_path / "h.json", seconds=2),
        extra_env=custom_env(EXECUTOR_TASK_WEIGHT="1.0"))["id"])
    deadline = time.monotonic() + 60
    while "waiting for capacity" not in (system.cp.execution(waiting["id"])["log_tail"] or ""):
        assert time.monotonic() < deadline, "the heavy run was never claimed by the busy executor"
        time.sleep(0.2)
    return running, waiting


def test_work_claimed_but_not_started_is_given_back_on_shutdown(system, tmp_path):
    # Two workers: half the capacity is free while the first task runs, so the executor receives
    # and claims the whole-capacity second one, which then waits for admission.
    first = system.start_executor("first", DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS="2", DATAHUB_EXECUTOR_DRAIN_TIMEOUT="5")
    running, waiting = a_run_waiting_behind_another(system, tmp_path, ahead_s=60)
    assert first.stop(timeout_s=60) == 0
    assert any("released (the executor stopped before the task could start)" in line for line in first.lines)
    assert system.cp.execution(waiting["id"])["status"] == "PENDING", "given back, not lost"
    system.start_executor("second")
    done = system.cp.wait_for_status(waiting["id"], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=180)
    assert (done["status"], done["executor_id"]) == ("SUCCESS", "second")
    shut = system.cp.execution(running["id"])
    assert (shut["status"], shut["reason"]) == ("ABORTED", "EXECUTOR_SHUTDOWN")


def test_a_run_cancelled_while_it_waits_for_capacity_is_never_started(system, tmp_path):
    """A claimed run waiting for its weight had no one asking for its cancel: it was started once
    the task ahead of it ended, and only then cancelled. Now it is given back unstarted within
    seconds and ends CANCELLED (CANCELLED_BEFORE_START) while the task ahead runs on."""
    executor = system.start_executor(DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS="2", DATAHUB_EXECUTOR_PROGRESS_INTERVAL="1")
    # Longer than the test takes on any machine (it is cancelled at the end): on a loaded one, a
    # task ahead that ended first let the heavy run start before its cancel was looked at.
    running, waiting = a_run_waiting_behind_another(system, tmp_path, ahead_s=600)
    system.cp.cancel(waiting["id"])
    done = system.cp.wait_for_status(waiting["id"], {"CANCELLED", "SUCCESS", "FAILURE", "ABORTED"}, timeout_s=60)
    assert (done["status"], done["reason"]) == ("CANCELLED", "CANCELLED_BEFORE_START")
    # Waited for: the executor says it once the release is answered, and the control plane has
    # ended the run by then (read just after the status, the line could be a moment away).
    assert "released (cancelled before it started)" in executor.wait_for_line("released (cancelled before it started)",
                                                                               timeout_s=30)
    assert not [line for line in executor.lines if waiting["id"] in line and "task process" in line], "it started"
    assert system.cp.execution(running["id"])["status"] == "RUNNING", "the task ahead runs on"
    system.cp.cancel(running["id"])
    assert system.cp.wait_for_status(running["id"], {"CANCELLED", "SUCCESS", "FAILURE"}, timeout_s=60)["status"] == \
        "CANCELLED"


def test_a_run_cancelled_while_its_virtualenv_builds_is_given_back_at_once_and_the_build_killed(system, tmp_path):
    """A run whose CLI version must be built was cancelled while uv waited on a package index that
    never answers: the build was not cut short for a cancel, only for the executor's stop, so the
    run stayed RUNNING until the installer gave up (minutes), holding its weight and uid. Now the
    cancel kills the build, and the run ends CANCELLED (CANCELLED_BEFORE_START) within seconds."""
    import socket

    silent_index = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent_index.bind(("127.0.0.1", 0))
    silent_index.listen(16)
    try:
        executor = system.start_executor(PIP_INDEX_URL=f"http://127.0.0.1:{silent_index.getsockname()[1]}/simple/")
        run = system.cp.run_source(system.cp.create_source(
            "built", mock_recipe(tmp_path / "b.json"), version="1.6.0.1")["id"])
        executor.wait_for_line("building task virtualenv", timeout_s=60)
        system.cp.cancel(run["id"])
        cancelled_at = time.monotonic()
        done = system.cp.wait_for_status(run["id"], {"CANCELLED", "SUCCESS", "FAILURE", "ABORTED"}, timeout_s=120)
        took_s = time.monotonic() - cancelled_at
    finally:
        silent_index.close()
    assert (done["status"], done["reason"]) == ("CANCELLED", "CANCELLED_BEFORE_START")
    assert took_s < 20, f"the cancel waited {took_s:.0f} s for the build to end by itself"
    assert live_tasks(executor.env["DATAHUB_EXECUTOR_CGROUP_ROOT"]) == 0, "the build runs on"


def test_a_claim_whose_answer_comes_late_is_listed_meanwhile_and_its_run_is_not_lost(system, proxy, tmp_path):
    """The claim was granted, but its answer took longer than two heartbeats. The heartbeats did
    not list a run whose claim was still on its way, so the control plane took it for a lost
    claim and queued it again; the executor's intake then deleted the new message as a
    duplicate of the run it held, and that run's result was refused (its lease was gone): the
    run stayed PENDING with no message anywhere. Runs whose claim is in flight are listed."""
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url, DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL="1")
    late = proxy.delay("POST", "/claim", 5, times=1)
    execution = system.cp.run_source(system.cp.create_source(
        "slowly-claimed", custom_recipe("SleepySource", tmp_path / "s.json", seconds=1), extra_env=custom_env())["id"])
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE", "ABORTED", "CANCELLED"}, timeout_s=90)
    assert late.hits == 1, "the claim's answer was held back"
    assert (done["status"], done["executor_id"]) == ("SUCCESS", "executor-1")
    assert not [line for line in executor.lines if "queued again" in line or "lease" in line.lower() and "lost" in line]


def test_a_second_stop_signal_kills_running_tasks_at_once_and_still_reports_them(system, tmp_path):
    executor = system.start_executor(DATAHUB_EXECUTOR_DRAIN_TIMEOUT="300")
    execution = system.cp.run_source(system.cp.create_source(
        "long", custom_recipe("SleepySource", tmp_path / "l.json", seconds=120), extra_env=custom_env())["id"])
    wait_for_tick(system, execution["id"])
    executor.process.send_signal(signal.SIGTERM)
    executor.wait_for_line("stop requested", timeout_s=10)
    time.sleep(1)
    assert executor.process.poll() is None, "the first signal drains: the task may finish"
    started = time.monotonic()
    executor.process.send_signal(signal.SIGINT)
    assert executor.process.wait(timeout=30) == 0
    assert time.monotonic() - started < 15, "not the 300 s drain"
    done = system.cp.execution(execution["id"])
    assert (done["status"], done["reason"]) == ("ABORTED", "EXECUTOR_SHUTDOWN"), "still reported"


def test_a_second_stop_signal_kills_at_once_and_exits_within_seconds_while_the_control_plane_is_down(
        system, proxy, tmp_path):
    """Where the control plane was, a black hole. The kill was once left to the task's runner,
    which looks for it between progress reports: the task ran on after a second SIGTERM, past
    ECS's stop timeout. Then the task was killed, but its result was retried until the control
    plane answered, so the executor exited only at SIGKILL: a second Ctrl-C did nothing an
    operator could see. Now the result gets SECOND_SIGNAL_REPORT_S, the exit says which results
    were not recorded, and the control plane ends them itself once the heartbeats stop."""
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url, DATAHUB_EXECUTOR_DRAIN_TIMEOUT="300",
                                     DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL="2")
    root = executor.env["DATAHUB_EXECUTOR_CGROUP_ROOT"]
    execution = system.cp.run_source(system.cp.create_source(
        "long", custom_recipe("SleepySource", tmp_path / "l.json", seconds=300), extra_env=custom_env())["id"])
    wait_for_tick(system, execution["id"])
    reports = proxy.hang("POST", "/aspects")  # progress, results and heartbeats are ingested aspects
    deadline = time.monotonic() + 30
    while reports.hits == 0:  # the runner's next progress report is caught
        assert time.monotonic() < deadline, "no progress report went out"
        time.sleep(0.2)
    executor.process.send_signal(signal.SIGTERM)
    executor.wait_for_line("stop requested", timeout_s=10)
    started = time.monotonic()
    executor.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30  # a kill takes well under a second
    while live_tasks(root):
        assert time.monotonic() < deadline, "the task still runs after the second signal"
        time.sleep(0.2)
    bound = SECOND_SIGNAL_REPORT_S + FINAL_HEARTBEAT_TIMEOUT_S + 5
    assert executor.process.wait(timeout=bound + 30) == 1, "an exit that left results unrecorded is not clean"
    assert time.monotonic() - started < bound, f"exited {time.monotonic() - started:.1f} s after the second signal"
    assert any(f"without the results of {execution['id']} recorded" in line for line in executor.lines)
    assert not live_tasks(root), "no task outlives the executor"
    proxy.heal()
    done = system.cp.wait_for_status(execution["id"], {"ABORTED", "SUCCESS", "FAILURE"}, timeout_s=60)
    assert (done["status"], done["reason"]) == ("ABORTED", "EXECUTOR_LOST"), "ended by the control plane"


def test_a_second_stop_signal_during_a_cancels_grace_kills_the_task_at_once(system, tmp_path):
    """The cancel's SIGTERM is ignored by the task; its 60 s grace used to outlast a second
    SIGTERM (only the first reason to end a task acted), and ECS's 30 s stop timeout with it."""
    executor = system.start_executor(DATAHUB_EXECUTOR_CANCEL_GRACE="60", DATAHUB_EXECUTOR_DRAIN_TIMEOUT="300")
    execution = system.cp.run_source(system.cp.create_source(
        "stubborn", custom_recipe("SleepySource", tmp_path / "s.json", seconds=120, ignore_sigterm=True),
        extra_env=custom_env())["id"])
    wait_for_tick(system, execution["id"])
    system.cp.cancel(execution["id"])
    executor.wait_for_line("cancel requested", timeout_s=30)
    started = time.monotonic()
    executor.process.send_signal(signal.SIGTERM)
    executor.wait_for_line("stop requested", timeout_s=10)
    executor.process.send_signal(signal.SIGTERM)
    assert executor.process.wait(timeout=90) == 0
    assert time.monotonic() - started < 20, "waited out the cancel's grace"
    done = system.cp.execution(execution["id"])
    assert done["status"] == "CANCELLED", "a cancelled task hurried by the stop is still reported cancelled"


def test_an_idle_executor_stops_at_once_without_waiting_for_its_long_poll(system):
    executor = system.start_executor()
    time.sleep(3)  # both queues' 20 s long polls are in flight
    started = time.monotonic()
    executor.process.send_signal(signal.SIGTERM)
    assert executor.process.wait(timeout=30) == 0
    stopped_in = time.monotonic() - started
    assert stopped_in < 2.0, f"stopped in {stopped_in:.1f} s, not within about a second"


def test_an_executor_stops_within_seconds_when_its_control_plane_stopped_answering(system, proxy):
    """Where the control plane was, a black hole: connections are accepted and never answered.
    The drain's DRAINING heartbeat goes from the heartbeat thread (the main thread stays free for a
    second signal) and the last one, STOPPED, waits a few seconds for it and, with it still
    unanswered, is not sent (it could be overtaken by it); before, each waited out five 15 s read
    timeouts, and the executor took minutes to stop."""
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url)
    heartbeats = proxy.hang("POST", "/aspects")  # heartbeats are ingested aspects
    executor.wait_for_line("Starting datahub executor worker")
    time.sleep(2)  # the heartbeat thread is caught in the black hole by now
    started = time.monotonic()
    executor.process.send_signal(signal.SIGTERM)
    assert executor.process.wait(timeout=60) == 0
    stopped_in = time.monotonic() - started
    assert heartbeats.hits >= 1, "the heartbeats went into the black hole"
    assert stopped_in < FINAL_HEARTBEAT_TIMEOUT_S + 3, f"stopped in {stopped_in:.1f} s"


def test_monitors_run_while_ingestion_is_full(system, tmp_path):
    system.start_executor(DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS="1")
    ingestion = system.cp.run_source(system.cp.create_source(
        "long", custom_recipe("SleepySource", tmp_path / "l.json", seconds=60), extra_env=custom_env())["id"])
    wait_for_tick(system, ingestion["id"])
    blocked = system.cp.run_source(system.cp.create_source("more", mock_recipe(tmp_path / "m.json"))["id"])
    monitor = system.cp.run_source(system.cp.create_source("check", mock_recipe(tmp_path / "c.json"))["id"], "RUN_MONITOR")
    done = system.cp.wait_for_status(monitor["id"], {"SUCCESS", "FAILURE"}, timeout_s=180)
    assert done["status"] == "SUCCESS"
    assert system.cp.execution(ingestion["id"])["status"] == "RUNNING", "ingestion was full the whole time"
    assert system.cp.execution(blocked["id"])["status"] == "PENDING", "a full ledger receives no ingestion task"


def test_a_log_upload_that_keeps_failing_does_not_hold_the_result_back(system, proxy, tmp_path):
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url)
    uploads = proxy.break_("PUT", "/log", status=503, body=b'{"message": "down"}')
    # 1 MiB of output: more than the result's report holds, so a full log upload must follow
    # (a log the report holds whole is not uploaded at all, decision 41).
    source = system.cp.create_source("quick", custom_recipe("FloodSource", tmp_path / "q.json", megabytes=1),
                                     extra_env=custom_env())
    execution = system.cp.run_source(source["id"])
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=180)
    assert done["status"] == "SUCCESS"
    executor.wait_for_line("finished: SUCCESS", timeout_s=30)
    assert uploads.hits >= 1
    ended = time.monotonic()
    executor.wait_for_line("full log not uploaded", timeout_s=120)
    assert time.monotonic() - ended < 120


def test_a_failed_sqs_delete_is_logged_and_the_master_carries_on(system, sqs_proxy, tmp_path):
    executor = system.start_executor(DATAHUB_EXECUTOR_SQS_ENDPOINT_URL=sqs_proxy.url)
    deletes = sqs_proxy.break_("POST", "/", status=500, body=b'{"__type": "InternalFailure", "message": "down"}',
                               header=("X-Amz-Target", "AmazonSQS.DeleteMessage"))
    source = system.cp.create_source("plain", mock_recipe(tmp_path / "p.json"))
    bad = f"urn:li:dataHubExecutionRequest:bad-weight-{source['id'][:8]}"
    system.cp.ingest(bad, "dataHubExecutionRequestInput", {
        "task": "RUN_INGEST", "executorId": "remote", "requestedAt": 1, "source": {"type": "MANUAL_INGESTION_SOURCE"},
        "args": {"recipe": mock_recipe(tmp_path / "p.json"), "extra_env_vars": '{"EXECUTOR_TASK_WEIGHT": "abc"}'}})
    refused = system.cp.wait_for_status(bad.rsplit(":", 1)[1], {"FAILURE", "SUCCESS"}, timeout_s=60)
    assert refused["reason"] == "INVALID_WEIGHT"
    executor.wait_for_line("message not deleted", timeout_s=30)
    assert deletes.hits >= 1 and executor.process.poll() is None
    sqs_proxy.heal()
    good = system.cp.run_source(source["id"])
    assert system.cp.wait_for_status(good["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)["status"] == "SUCCESS"


def test_the_next_task_is_claimed_while_a_result_is_reported_and_starts_once_it_is_recorded(system, proxy, tmp_path):
    """A task whose process has ended gives its weight back within one call: the intake receives
    for it already (decision 87), and the task it claims starts only once the result is recorded
    and the weight given back: running weights never pass 1.0. A result held back shows both."""
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url, DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS="1")
    first = system.cp.run_source(system.cp.create_source("first", mock_recipe(tmp_path / "f.json"))["id"])["id"]
    # Only the final result carries durationMs; refused, it is sent again and again (an outage).
    result = proxy.break_("POST", "ingestProposal", status=503, body=b'{"message": "busy"}',
                          body_has=(b"durationMs", first.encode()))
    deadline = time.monotonic() + 120
    while result.hits < 1:
        assert time.monotonic() < deadline, "the first task never reported its result"
        time.sleep(0.1)
    second = system.cp.run_source(system.cp.create_source("second", mock_recipe(tmp_path / "s.json"))["id"])["id"]
    deadline = time.monotonic() + 60
    while system.cp.execution(second)["status"] != "RUNNING":
        assert time.monotonic() < deadline, "the next task was not claimed while the result was being reported"
        time.sleep(0.1)
    time.sleep(2)  # the second task has had every chance to start, were it admitted
    assert system.cp.execution(first)["status"] == "RUNNING", "the first result is still not recorded"
    assert not any("started: RUN_INGEST" in line and second in line for line in executor.lines), \
        "admitted before the weight was given back"
    assert "waiting for capacity" not in (system.cp.execution(second)["log_tail"] or ""), \
        "a task that starts within a call says nothing of waiting"
    proxy.heal()
    for execution_id in (first, second):
        assert system.cp.wait_for_status(execution_id, {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=120)["status"] \
            == "SUCCESS"
    finished = next(i for i, line in enumerate(executor.lines) if "finished: SUCCESS" in line and first in line)
    started = next(i for i, line in enumerate(executor.lines) if "started: RUN_INGEST" in line and second in line)
    assert finished < started, "the second task started before the first's result was recorded"


def test_a_claim_in_flight_when_a_second_stop_signal_gives_up_is_queued_again_not_lost(system, proxy, tmp_path):
    """The claim was granted, its answer slow, and the operator pressed Ctrl-C twice: the executor
    exits without waiting for it. Its last heartbeat (STOPPED, whose list is final) listed the
    run whose claim was on its way, as every heartbeat lists it (Leases.LISTED), so the control
    plane kept it held by a stopped executor and ended it ABORTED (EXECUTOR_LOST), a run that
    never started. The last list names only what started: the rest is queued again at once."""
    executor = system.start_executor(DATAHUB_GMS_URL=proxy.url)
    late = proxy.delay("POST", "/claim", 30, times=1)
    execution = system.cp.run_source(system.cp.create_source(
        "claimed-at-the-stop", custom_recipe("SleepySource", tmp_path / "s.json", seconds=1),
        extra_env=custom_env())["id"])
    deadline = time.monotonic() + 60
    while late.hits < 1:
        assert time.monotonic() < deadline, "the claim never went out"
        time.sleep(0.1)
    time.sleep(0.5)  # the claim is granted (its answer is what waits)
    assert system.cp.execution(execution["id"])["status"] == "RUNNING"
    executor.process.send_signal(signal.SIGTERM)
    executor.wait_for_line("stop requested", timeout_s=10)
    executor.process.send_signal(signal.SIGTERM)
    assert executor.process.wait(timeout=60) == 1, "it gave up on the runner waiting for its claim's answer"
    after = system.cp.wait_for_status(execution["id"], {"PENDING", "ABORTED", "SUCCESS", "FAILURE"}, timeout_s=30)
    assert after["status"] == "PENDING", f"{after['status']} ({after['reason']}): a run that never started"
    system.start_executor("second")
    done = system.cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE", "ABORTED"}, timeout_s=180)
    assert (done["status"], done["executor_id"]) == ("SUCCESS", "second")
