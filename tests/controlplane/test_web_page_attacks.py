"""Attacks on the operator's browser: a page on another site (cross-site requests, DNS rebinding,
framing), and hostile values that tasks, executors and DataHub users store for the web page to
show. Each test performs the attack against a real control plane, most in a real browser."""
from __future__ import annotations

from urllib.parse import urlsplit

import boto3
import requests

# What a SigV4-signed request's Authorization starts with: moto routes by its credential scope
# and checks no signature, so a page that may send this header reaches SQS.
FAKE_SIGV4 = "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0"


def queue_urls(cp) -> list[str]:
    sqs = boto3.client("sqs", endpoint_url=cp.sqs_endpoint_url, region_name="us-east-1", aws_access_key_id="x",
                       aws_secret_access_key="x")
    return sqs.list_queues().get("QueueUrls", [])


def test_a_page_on_another_site_can_neither_read_nor_delete_the_embedded_queues(cp):
    pool = cp.create_pool("remote", default=True)
    before = queue_urls(cp)
    assert pool["queue_url"] in before
    endpoint = cp.sqs_endpoint_url
    as_a_browser_sends_it = {"Origin": "https://attacker.example", "Sec-Fetch-Site": "cross-site",
                             "Authorization": FAKE_SIGV4}
    listed = requests.post(endpoint + "/", data={"Action": "ListQueues"}, headers=as_a_browser_sends_it, timeout=10)
    requests.post(endpoint + "/", data={"Action": "DeleteQueue", "QueueUrl": pool["queue_url"]},
                  headers=as_a_browser_sends_it, timeout=10)
    # DNS rebinding: the attacker's name now points at 127.0.0.1, so the page is same-origin with it.
    rebound = {"Host": f"rebind.attacker.example:{urlsplit(endpoint).port}", "Authorization": FAKE_SIGV4}
    requests.post(endpoint + "/", data={"Action": "DeleteQueue", "QueueUrl": pool["monitors_queue_url"]},
                  headers=rebound, timeout=10)
    assert queue_urls(cp) == before
    assert pool["queue_url"] not in listed.text
    # A page's fetch() with an Authorization header is preflighted: moto's CORS said yes to any origin.
    preflight = requests.options(endpoint + "/", timeout=10, headers={
        "Origin": "https://attacker.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})
    assert "Access-Control-Allow-Origin" not in preflight.headers
