"""The pools' queues: real AWS SQS in production, an embedded SQS-protocol server locally.

The embedded server is moto's ThreadedMotoServer on 127.0.0.1. Measured (ARCHITECTURE.md):
long polling, visibility timeouts, ChangeMessageVisibility, ApproximateReceiveCount and
redrive to a DLQ behave as SQS does. ElasticMQ needs a JVM jar that the package registries
here do not carry; LocalStack needs Docker. One difference: moto deletes a message given a
stale receipt handle where SQS may keep it, so the executor always deletes with the handle of
its latest receive.
"""
from __future__ import annotations

import json

import boto3

LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


class Queues:
    def __init__(self, *, region: str, endpoint_url: str | None, local: bool, installation_id: str) -> None:
        self.installation_id = installation_id  # several control planes can share one AWS account
        self.region = region
        self.endpoint_url = endpoint_url
        self.local = local
        extra = LOCAL_CREDENTIALS if local else {}
        self.client = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url, **extra)

    def create_pool_queues(self, pool_id: str, visibility_timeout_s: int, max_receive_count: int) -> tuple[str, str]:
        name = f"dhx-{self.installation_id}-{pool_id}"
        dlq_url = self.client.create_queue(QueueName=f"{name}-dlq",
                                           Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
        dlq_arn = self.client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = self.client.create_queue(
            QueueName=name,
            Attributes={
                "VisibilityTimeout": str(visibility_timeout_s),
                "ReceiveMessageWaitTimeSeconds": "20",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}),
            },
        )["QueueUrl"]
        return queue_url, dlq_url

    def delete_pool_queues(self, queue_url: str, dlq_url: str) -> None:
        for url in (queue_url, dlq_url):
            try:
                self.client.delete_queue(QueueUrl=url)
            except self.client.exceptions.QueueDoesNotExist:
                pass

    def send(self, queue_url: str, body: dict) -> str:
        return self.client.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))["MessageId"]


class EmbeddedSqs:
    """moto's SQS-protocol server on 127.0.0.1, started and stopped by the control plane."""

    def __init__(self, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint_url: str | None = None

    def start(self) -> str:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server.start()
        self.endpoint_url = f"http://127.0.0.1:{self._server._server.server_port}"
        return self.endpoint_url

    def stop(self) -> None:
        self._server.stop()
