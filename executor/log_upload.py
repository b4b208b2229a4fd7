"""Where a task's full log goes at the end: S3 when a bucket is configured, else the control
plane (PUT /executions/{id}/log), gzip-compressed when the control plane takes it
(vocabulary/full_log.py). Size-capped by the caller (head and tail kept)."""
from __future__ import annotations

from vocabulary import full_log

from .controlplane_client import ControlPlaneClient


class LogUploader:
    def __init__(self, client: ControlPlaneClient, *, bucket: str | None, pool_id: str, s3_client=None) -> None:
        self.client = client
        self.bucket = bucket
        self.pool_id = pool_id
        if bucket and s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        self.s3 = s3_client

    def destination(self, execution_id: str) -> str:
        if self.bucket:
            return f"s3://{self.bucket}/{self.key(execution_id)}"
        return "control plane"

    def key(self, execution_id: str) -> str:
        return f"datahub-executor/{self.pool_id}/{execution_id}.log"

    def upload(self, execution_id: str, lease: str, data: bytes, *, accepted: tuple[str, ...] = (),
               quick: bool = False) -> str:
        """Ship DATA; to the control plane under the execution's LEASE (a stale one is refused),
        compressed if it ACCEPTED gzip (the claim's log_encodings). The S3 object stays plain
        text: operators read it with tools that do not expand it. QUICK: one try of bounded
        length (ControlPlaneClient.quick), for an upload that must not hold back the result."""
        client = self.client.quick() if quick else self.client
        if self.bucket:
            self.s3.put_object(Bucket=self.bucket, Key=self.key(execution_id), Body=data, ContentType="text/plain")
        elif full_log.GZIP in accepted:
            client.upload_log(execution_id, lease, full_log.compress(data), encoding=full_log.GZIP)
        else:
            client.upload_log(execution_id, lease, data)
        return self.destination(execution_id)
