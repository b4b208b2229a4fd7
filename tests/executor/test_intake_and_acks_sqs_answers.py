"""What SQS answers amiss for one part of a batch, on a real SQS-protocol server: an error for one
of the extender's batch calls, one misstated message in a receive. The rest is still served."""
from __future__ import annotations

from botocore.awsrequest import AWSResponse

from executor.leases import Leases, State
from executor.services import OutageLog, VisibilityExtender

from .conftest import held_leases


def test_an_error_answered_for_one_batch_does_not_leave_the_next_batches_unextended(sqs_queue):
    """Held messages are extended ten to a call. The second call answered with an error (SQS
    throttling, past the client's retries) ended the turn: the third batch's messages were not
    extended, and lapsed while their tasks ran."""
    consumer = sqs_queue(visibility_timeout_s=60, prefix="extend-errors")
    leases = Leases()
    held_leases(consumer, leases, 23, through=State.RUNNING)
    calls: list[int] = []
    answered: list[int] = []

    def throttle_the_second(**_):
        if len(calls) == 2:
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                     "ResponseMetadata": {"HTTPStatusCode": 400}}
            return AWSResponse("", 400, {}, None), error
        return None

    events = consumer.client.meta.events
    events.register("before-parameter-build.sqs.ChangeMessageVisibilityBatch",
                    lambda params, **_: calls.append(len(params["Entries"])))
    events.register("before-call.sqs.ChangeMessageVisibilityBatch", throttle_the_second)
    events.register("after-call.sqs.ChangeMessageVisibilityBatch",
                    lambda parsed, **_: answered.append(len(parsed.get("Successful", []))))
    outage = OutageLog()
    VisibilityExtender({"ingestion": consumer}, leases, outage).step()
    assert calls == [10, 10, 3], f"batches sent: {calls}"
    assert answered == [10, 0, 3], f"messages SQS extended, by call: {answered}"


def test_a_message_the_receive_answer_misstates_does_not_hide_the_rest_of_its_batch(sqs_queue):
    """A receive answer whose one message has a receive count that is not a number (an SQS-
    compatible server's slip) raised out of the receive: every message of that batch stayed
    hidden for a whole visibility timeout, handed to no one."""
    consumer = sqs_queue(visibility_timeout_s=60, prefix="receive-misstated")
    for number in range(3):
        consumer.client.send_message(QueueUrl=consumer.queue_url, MessageBody=(
            f'{{"v": 1, "execution_id": "exe_{number}", "task": "RUN_INGEST", "pool_id": "p"}}'))

    def misstate_the_first(parsed, **_):
        if parsed.get("Messages"):
            parsed["Messages"][0].setdefault("Attributes", {})["ApproximateReceiveCount"] = "many"

    consumer.long_poll.meta.events.register("after-call.sqs.ReceiveMessage", misstate_the_first)
    got: list[str] = []
    try:
        got = [m.body.execution_id for m in consumer.receive(10, wait_s=1)]
    except ValueError:
        pass
    assert len(got) == 2, f"the rest of the batch was not handed over: {got}"
