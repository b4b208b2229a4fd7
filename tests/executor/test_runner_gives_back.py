"""A runner that will not start its claimed task gives it back: the control plane is told
(release) and the old message goes. These drive a real TaskRunner thread with the real lease
registry, ledger and task users; the control plane and SQS are recording doubles, because what is
under test is the order of the runner's own steps against what the control plane and our intake
do meanwhile (the release's new message, a stop that begins while the task is prepared)."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

from executor.controlplane_client import Claimed, LeaseLost
from executor.leases import Leases, QueueRef, State
from executor.ledger import Ledger
from executor.operability import ExecutorMetrics
from executor.runner import CANCELLED_UNSTARTED, RunnerServices, TaskRunner
from executor.runtime.rejection import TaskRejected
from executor.runtime.venvs import PreparationStopped
from executor.task_users import TaskUsers
from vocabulary import statuses as S

EXECUTION = "exe_gives_back"
FIRST = QueueRef("ingestion", "message-1", "handle-1", 1, 0)
SECOND = QueueRef("ingestion", "message-2", "handle-2", 1, 0)  # what the control plane sends on release


@dataclass
class ControlPlane:
    """Answers a claim; on release does what the real one does within the call: queue the
    execution again, which our own intake may receive before the call returns."""

    leases: Leases
    released: list[str] = field(default_factory=list)
    failed: list[bool] = field(default_factory=list)
    intake_saw: list[str] = field(default_factory=list)

    def claim(self, execution_id: str, **_) -> Claimed:
        return Claimed(execution_id=execution_id, lease="lease-token", task="RUN_INGEST", pool_id="pool",
                       args={}, ingest_token="ingest-token")

    def release(self, execution_id: str, lease: str, why: str, failed: bool = False) -> None:
        self.released.append(why)
        self.failed.append(failed)
        _, what = self.leases.receive(execution_id, SECOND)
        self.intake_saw.append(what)


@dataclass
class Queue:
    deleted: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)

    def delete(self, ref: QueueRef) -> None:
        self.deleted.append(ref.message_id)

    def return_now(self, ref: QueueRef, after_s: float = 0) -> None:
        self.returned.append(ref.message_id)


class NoSandbox:
    started = False

    def start(self, *args, **kwargs):
        NoSandbox.started = True
        raise AssertionError("a task was started after the executor began to stop")


def run_runner(prepare, control_plane: ControlPlane | None = None, queue: Queue | None = None,
               ledger: Ledger | None = None) -> tuple[ControlPlane, Queue, Leases, threading.Event]:
    leases = control_plane.leases if control_plane is not None else Leases()
    lease, _ = leases.receive(EXECUTION, FIRST)
    control_plane = control_plane or ControlPlane(leases)
    queue, stopping = queue or Queue(), threading.Event()
    services = RunnerServices(
        settings=SimpleNamespace(executor_id="executor-1", pool_id="pool", cancel_grace_s=1),
        client=control_plane, consumers={"ingestion": queue}, acks=None,
        ledgers={"ingestion": ledger or Ledger("ingestion", 2), "monitors": Ledger("monitors", 2)}, leases=leases,
        sandbox=NoSandbox(), prepare=lambda claimed, user, stop: prepare(stopping), logs=None, task_logs=None,
        metrics=ExecutorMetrics(), instance_id="instance-1", task_users=TaskUsers.shared(None), private_tmp=False,
        stopping=stopping, kill_now=threading.Event())
    runner = TaskRunner(lease, services)
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert services.ledgers["ingestion"].snapshot().used == 0, "the runner's weight was not released"
    return control_plane, queue, leases, stopping


def test_the_message_the_control_plane_sends_on_release_is_not_taken_for_a_duplicate():
    """A runner that fails after its claim releases the execution. The control plane queues it
    again within the release call; the lease was still held then, so our intake took the new
    message for a duplicate delivery and deleted it: PENDING, with no message anywhere."""
    def prepare(stopping):
        raise RuntimeError("a bug after the claim")

    control_plane, queue, leases, _ = run_runner(prepare)
    assert control_plane.released == ["the runner of executor executor-1 failed before the task started (RuntimeError)"]
    assert control_plane.failed == [True], "a failure, which the control plane allows only a few times"
    assert control_plane.intake_saw == ["new"], "the re-queued message was taken for a duplicate"
    assert queue.deleted == ["message-1"], "only the released run's own message goes"
    assert [lease.message.message_id for lease in leases.all()] == ["message-2"]


def test_a_stop_that_begins_while_the_task_is_prepared_gives_it_back_unstarted():
    """Preparing takes seconds, a virtualenv build minutes: a task prepared after the stop began
    was started anyway, killed at once and reported ABORTED, instead of given back."""
    cleaned = []

    def prepare(stopping):
        stopping.set()  # the first SIGTERM arrives while the task is prepared
        return SimpleNamespace(cleanup=lambda: cleaned.append(True))

    control_plane, queue, leases, _ = run_runner(prepare)
    assert not NoSandbox.started
    assert control_plane.released == ["the executor stopped while the task was being prepared"]
    assert control_plane.failed == [False], "a stop is no failure of the execution"
    assert cleaned == [True] and queue.deleted == ["message-1"]


def test_a_run_cancelled_while_it_is_prepared_ends_cancelled_even_when_its_preparation_then_fails():
    """Cancelled while its virtualenv was built (CancelWatch marked its lease; a build is not cut
    short for it), then the build failed: the runner reported FAILURE (VENV_INSTALL_FAILED), and
    the control plane took that as the end of a run its user had cancelled before it started.
    It is given back as cancelled, and the control plane ends it CANCELLED (CANCELLED_BEFORE_START)."""
    leases = Leases()

    def prepare(stopping):
        assert leases.ask_cancel(EXECUTION), "CancelWatch marks the claimed, unstarted run"
        raise TaskRejected(S.VENV_INSTALL_FAILED, "acryl-datahub==0.0.1 could not be installed")

    reported: list[dict] = []
    control_plane = ControlPlane(leases)
    control_plane.report = lambda execution_id, lease, result: reported.append(result)
    control_plane, queue, _, _ = run_runner(prepare, control_plane)
    assert not NoSandbox.started
    assert [result["status"] for result in reported] == [], "a FAILURE reported for a cancelled run"
    assert control_plane.released == [CANCELLED_UNSTARTED]
    assert queue.deleted == ["message-1"]


class CancelledAsAdmitted(Ledger):
    """A ledger with room, and the run's cancel marked (CancelWatch) as it asks for admission."""

    def __init__(self, leases: Leases) -> None:
        super().__init__("ingestion", 2)
        self.leases = leases

    def acquire(self, key, weight, **kwargs) -> bool:
        assert self.leases.ask_cancel(key)
        return super().acquire(key, weight, **kwargs)


def test_a_run_cancelled_as_it_is_admitted_is_given_back_without_being_prepared():
    """A ledger with room admitted a run whose cancel had come meanwhile (its wait looks at the
    cancel only while it waits); the runner went on to prepare it, a virtualenv build of minutes
    holding its weight and task user, before it looked again."""
    leases = Leases()
    prepared: list[bool] = []

    def prepare(stopping):
        prepared.append(True)
        raise AssertionError("a cancelled run was prepared")

    control_plane, queue, _, _ = run_runner(prepare, ControlPlane(leases), ledger=CancelledAsAdmitted(leases))
    assert prepared == [] and not NoSandbox.started
    assert control_plane.released == [CANCELLED_UNSTARTED]
    assert queue.deleted == ["message-1"]


class WatchedLeases(Leases):
    """Notes what the ledger still holds when a lease leaves the registry as LOST."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger("ingestion", 2)
        self.held_when_lost: list[list[str]] = []

    def move(self, lease, to, **changes):
        if to is State.LOST:
            self.held_when_lost.append(self.ledger.running_keys())
        return super().move(lease, to, **changes)


def test_a_lost_execution_gives_its_weight_back_before_its_lease_leaves_the_registry():
    """As a release does: once the lease is gone our intake may receive the execution's new
    message and claim it, and a second runner found the execution id still in the ledger
    (KeyError), failed, and released the execution as broken."""
    leases = WatchedLeases()

    def prepare(stopping):
        raise LeaseLost("another run holds the execution now")

    run_runner(prepare, ControlPlane(leases), ledger=leases.ledger)
    assert leases.held_when_lost == [[]], "the weight was still held when the lease left the registry"


def test_a_build_given_up_for_the_stop_gives_the_task_back():
    def prepare(stopping):
        stopping.set()
        raise PreparationStopped("the executor is stopping; the virtualenv build was killed")

    control_plane, queue, _, _ = run_runner(prepare)
    assert not NoSandbox.started
    assert control_plane.released == ["the executor stopped while the task was being prepared"]
    assert queue.deleted == ["message-1"]


def test_a_released_execution_queued_again_here_is_admitted_while_its_first_runner_ends():
    """The control plane queues a released execution again within the release call, and our own
    intake may receive it and claim it at once: a second runner for the same execution id. The
    first runner gave back its weight and task user only in its last step, after the release
    answered and its message was deleted: the second found the execution id still in the ledger
    (KeyError), failed, and released the execution once more as broken, the third time of which
    ends it FAILURE (EXECUTOR_ERROR) without it ever running."""
    leases = Leases()
    first, _ = leases.receive(EXECUTION, FIRST)
    stopping = threading.Event()
    prepared: list[str] = []
    runners: list[TaskRunner] = []

    class Requeuing(ControlPlane):
        def report(self, execution_id: str, lease: str, result: dict) -> None:
            pass  # the "waiting for capacity" note

        def release(self, execution_id: str, lease: str, why: str, failed: bool = False) -> None:
            self.released.append(why)
            self.failed.append(failed)
            if len(runners) > 1:
                return
            again, what = self.leases.receive(execution_id, SECOND)  # our intake takes the new message
            self.intake_saw.append(what)
            second = TaskRunner(again, services)
            runners.append(second)
            second.start()
            second.join(timeout=30)  # before the release answers: the first runner is still in its call

    def prepare(claimed, user, stop):
        if not prepared:
            prepared.append("first")
            raise RuntimeError("a bug after the claim")
        prepared.append("second")
        stopping.set()  # then a stop: the second runner gives it back too, unstarted
        return SimpleNamespace(cleanup=lambda: None)

    control_plane = Requeuing(leases)
    ledger = Ledger("ingestion", 1)
    users = TaskUsers.uid_range(40000, 40000)  # one uid: the second runner needs the first one's
    services = RunnerServices(
        settings=SimpleNamespace(executor_id="executor-1", pool_id="pool", cancel_grace_s=1),
        client=control_plane, consumers={"ingestion": Queue()}, acks=None,
        ledgers={"ingestion": ledger, "monitors": Ledger("monitors", 1)}, leases=leases,
        sandbox=NoSandbox(), prepare=prepare, logs=None, task_logs=None, metrics=ExecutorMetrics(),
        instance_id="instance-1", task_users=users, private_tmp=False, stopping=stopping, kill_now=threading.Event())
    runners.append(TaskRunner(first, services))
    runners[0].start()
    for runner in runners:
        runner.join(timeout=30)
        assert not runner.is_alive()
    assert control_plane.intake_saw == ["new"]
    assert prepared == ["first", "second"], "the second runner was never admitted"
    assert control_plane.failed == [True, False], "the second runner broke: a second failed release"
    assert ledger.snapshot().used == 0 and users.held() == {}
    assert len(leases) == 0


class ReceivedAtOnce(Queue):
    """SQS and our own intake, long-polling: a message made visible is received within the call
    that returns it, under a new receipt handle, and offered to the lease registry."""

    def __init__(self, leases: Leases) -> None:
        super().__init__()
        self.leases = leases
        self.offered: list[str] = []
        self.delays: list[float] = []

    def return_now(self, ref: QueueRef, after_s: float = 0) -> None:
        super().return_now(ref, after_s)
        self.delays.append(after_s)
        _, what = self.leases.receive(EXECUTION, QueueRef("ingestion", ref.message_id, "handle-again", 2, 0))
        self.offered.append(what)


def test_a_message_given_back_unclaimed_and_received_at_once_is_new_work_not_stranded():
    """A runner failing before its claim gave its message back, then left the registry: our
    intake, receiving the message in between, took it for our own message back (refreshed: no
    runner), and the lease then vanished, leaving the message in flight under a receipt nobody
    held, hidden for a whole visibility timeout. It also gave it back at once, so a failure that
    repeats spun: receive, fail, give back."""
    class BrokenClaim(ControlPlane):
        def claim(self, execution_id: str, **_) -> Claimed:
            raise RuntimeError("a bug before the claim is recorded")

    leases = Leases()
    control_plane = BrokenClaim(leases)
    queue = ReceivedAtOnce(leases)
    run_runner(lambda stopping: None, control_plane, queue)
    assert queue.offered == ["new"], "received while the lease was still held: taken for our own message back"
    assert queue.delays and queue.delays[0] >= 5, "given back at once: a repeating failure would spin"
    assert [lease.message.receipt_handle for lease in leases.all()] == ["handle-again"], "held by a new lease"


def test_a_failure_right_after_the_claim_releases_the_execution_instead_of_returning_the_message():
    """Between the claim's answer and the lease's move to CLAIMED, a failure gave the message
    back as unclaimed: the control plane, never told, kept the execution RUNNING on this
    executor until two heartbeats without it."""
    class OddArguments(ControlPlane):
        def claim(self, execution_id: str, **_) -> Claimed:
            return Claimed(execution_id=execution_id, lease="lease-token", task="RUN_INGEST", pool_id="pool",
                           args=None, ingest_token="ingest-token")  # no arguments object at all

    leases = Leases()
    control_plane = OddArguments(leases)
    queue = Queue()
    run_runner(lambda stopping: None, control_plane, queue)
    assert len(control_plane.released) == 1 and "failed before the task started" in control_plane.released[0]
    assert control_plane.failed == [True]
    assert queue.returned == [] and queue.deleted == ["message-1"]
