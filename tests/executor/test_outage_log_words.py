"""The line an operator reads when SQS calls fail says where and what: the endpoint that could
not be reached, or SQS's own error code when it answered and refused (credentials to fix, not a
network). It said only the exception's type ("SQS unreachable (ClientError)"), which named
neither. Real botocore failures: a closed port, and the embedded SQS server refusing a queue."""
from __future__ import annotations

import socket

import boto3
import pytest
from botocore.config import Config
from loguru import logger

from controlplane.testing import running_controlplane
from executor.services import OutageLog


@pytest.fixture
def said():
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="WARNING")
    yield lines
    logger.remove(sink)


def failure_of(call) -> Exception:
    with pytest.raises(Exception) as raised:
        call()
    return raised.value


def test_an_endpoint_that_cannot_be_reached_is_named(said):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        endpoint = f"http://127.0.0.1:{port}"
        sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="x",
                           aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
        OutageLog().down(failure_of(lambda: sqs.receive_message(QueueUrl=f"{endpoint}/1/q", WaitTimeSeconds=0)))
    assert len(said) == 1 and endpoint in said[0] and "SQS unreachable" in said[0], said


def test_a_call_sqs_refused_names_its_code(said, tmp_path):
    with running_controlplane(tmp_path / "cp") as cp:
        sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=cp.sqs_endpoint_url, aws_access_key_id="x",
                           aws_secret_access_key="x")
        missing = f"{cp.sqs_endpoint_url}/123456789012/no-such-queue"
        OutageLog().down(failure_of(lambda: sqs.receive_message(QueueUrl=missing, WaitTimeSeconds=0)))
    assert len(said) == 1 and "refused the call" in said[0] and "NonExistentQueue" in said[0], said
