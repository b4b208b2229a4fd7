"""Full task logs go to S3 when a bucket is set (tested against moto's S3-protocol server on
127.0.0.1) and to the control plane otherwise."""
from __future__ import annotations

import boto3
import pytest
from moto.server import ThreadedMotoServer

from controlplane.testing import running_controlplane
from executor.controlplane_client import Claimed, ControlPlaneClient, LeaseLost
from executor.log_upload import LogUploader
from tests.controlplane.conftest import ExecutorDouble


@pytest.fixture
def s3():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        client = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{server._server.server_port}",
                              aws_access_key_id="test", aws_secret_access_key="test")
        client.create_bucket(Bucket="task-logs")
        yield client
    finally:
        server.stop()


def claimed_by_a_registered_executor(cp, execution_id: str) -> tuple[ControlPlaneClient, Claimed]:
    """EXECUTION_ID claimed as an executor claims, after its first heartbeat: a claim from an
    executor with none on record waits for one (decision 106)."""
    executor = ExecutorDouble(cp, "remote", "e1")
    executor.heartbeat()
    claimed = executor.claim(execution_id)
    assert isinstance(claimed, Claimed), claimed
    return executor.client, claimed


def test_with_a_bucket_the_full_log_goes_to_s3(s3):
    uploader = LogUploader(ControlPlaneClient("http://127.0.0.1:9/gms", "t", retries=0), bucket="task-logs",
                           pool_id="remote", s3_client=s3)
    assert uploader.upload("exe_1", "lease", b"line 1\nline 2\n") == "s3://task-logs/datahub-executor/remote/exe_1.log"
    stored = s3.get_object(Bucket="task-logs", Key="datahub-executor/remote/exe_1.log")["Body"].read()
    assert stored == b"line 1\nline 2\n"


def test_without_a_bucket_the_full_log_goes_to_the_control_plane_under_the_lease(tmp_path):
    with running_controlplane(tmp_path / "cp") as cp:
        cp.create_pool("remote", default=True)
        execution = cp.run_source(cp.create_source("s", "source: {type: datahub-mock-data}\n")["id"])
        client, claimed = claimed_by_a_registered_executor(cp, execution["id"])
        uploader = LogUploader(client, bucket=None, pool_id="remote")
        assert uploader.upload(execution["id"], claimed.lease, b"all of it\n") == "control plane"
        assert cp.logs(execution["id"])["log"] == "all of it\n"
        with pytest.raises(LeaseLost):
            uploader.upload(execution["id"], "not-the-lease", b"overwritten\n")
        assert cp.logs(execution["id"])["log"] == "all of it\n"


def test_a_control_plane_that_takes_gzip_gets_the_log_compressed_and_shows_it_whole(tmp_path):
    """The claim says gzip: the log crosses (and is stored) at a fraction of its size, and reads
    back as it was, bytes that are not UTF-8 replaced as for a plain one."""
    log = b"".join(b"[2026-11-26 12:00:%02d] INFO {datahub.ingestion.run.pipeline:%d} - workunit %d emitted\n"
                   % (i % 60, i % 700, i) for i in range(60_000)) + b"bad \xff byte\n"
    with running_controlplane(tmp_path / "cp") as cp:
        cp.create_pool("remote", default=True)
        execution = cp.run_source(cp.create_source("s", "source: {type: datahub-mock-data}\n")["id"])["id"]
        client, claimed = claimed_by_a_registered_executor(cp, execution)
        assert claimed.log_encodings == ("gzip",)
        LogUploader(client, bucket=None, pool_id="remote").upload(execution, claimed.lease, log,
                                                                  accepted=claimed.log_encodings)
        (stored,) = cp.cp.store.query("SELECT encoding, length(data) AS size FROM execution_logs")
        assert stored["encoding"] == "gzip" and stored["size"] < len(log) / 5
        assert cp.logs(execution)["log"] == log.decode("utf-8", "replace")


def test_an_executor_sends_a_plain_log_to_a_control_plane_that_did_not_say_gzip(tmp_path):
    """An earlier control plane would keep gzip bytes as the log's text: no log_encodings in the
    claim, no compression."""
    with running_controlplane(tmp_path / "cp") as cp:
        cp.create_pool("remote", default=True)
        execution = cp.run_source(cp.create_source("s", "source: {type: datahub-mock-data}\n")["id"])["id"]
        client, claimed = claimed_by_a_registered_executor(cp, execution)
        LogUploader(client, bucket=None, pool_id="remote").upload(execution, claimed.lease, b"plain\n", accepted=())
        assert cp.cp.store.query("SELECT encoding, data FROM execution_logs") == [{"encoding": "identity",
                                                                                   "data": b"plain\n"}]
