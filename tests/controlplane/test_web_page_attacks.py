"""Attacks on the operator's browser: a page on another site (cross-site requests, DNS rebinding,
framing), and hostile values that tasks, executors and DataHub users store for the web page to
show. Each test performs the attack against a real control plane, most in a real browser."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

import boto3
import requests

from executor import datahub_aspects

from .conftest import RECIPE
from .test_web_page_and_cli import browser, row_of  # noqa: F401 (the fixture)

# What a SigV4-signed request's Authorization starts with: moto routes by its credential scope
# and checks no signature, so a page that may send this header reaches SQS.
FAKE_SIGV4 = "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0"
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


def queue_urls(cp, like: str) -> list[str]:
    """The queues named as the queue at URL LIKE is, up to its last '-': this control plane's.
    By prefix: the embedded queues of every control plane a test process started live in one
    store, and ListQueues answers 1,000 at most, as SQS does."""
    sqs = boto3.client("sqs", endpoint_url=cp.sqs_endpoint_url, region_name="us-east-1", aws_access_key_id="x",
                       aws_secret_access_key="x")
    prefix = like.rsplit("/", 1)[1].rsplit("-", 1)[0] + "-"
    return sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])


def test_a_page_on_another_site_can_neither_read_nor_delete_the_embedded_queues(cp):
    pool = cp.create_pool("remote", default=True)
    before = queue_urls(cp, pool["queue_url"])
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
    assert queue_urls(cp, pool["queue_url"]) == before
    assert pool["queue_url"] not in listed.text
    # A page's fetch() with an Authorization header is preflighted: moto's CORS said yes to any origin.
    preflight = requests.options(endpoint + "/", timeout=10, headers={
        "Origin": "https://attacker.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_a_rebound_host_name_gets_nothing_from_a_loopback_control_plane(cp):
    port = urlsplit(cp.base_url).port
    for path in ("/", "/gms/config", "/health"):
        rebound = requests.get(cp.base_url + path, headers={"Host": f"rebind.attacker.example:{port}"}, timeout=10)
        assert rebound.status_code == 403, (path, rebound.status_code)
        assert "Host" in rebound.json()["message"]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            assert requests.get(cp.base_url + path, headers={"Host": host}, timeout=10).status_code == 200


def test_the_page_runs_only_its_own_script_and_nothing_is_sniffed(cp, browser):  # noqa: F811
    answer = requests.get(cp.base_url + "/", timeout=10)
    policy = answer.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy
    assert answer.headers.get("X-Frame-Options") == "DENY"
    for response in (answer, requests.get(cp.gms_url + "/config", timeout=10),
                     requests.get(cp.gms_url + "/api/graphql", timeout=10)):  # 401, from the guard
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.url

    page = browser.new_page()
    page.goto(f"{cp.base_url}/#token={cp.admin_token}")
    page.wait_for_selector("#pools")
    # Its own script runs. (The policy refuses eval: Playwright is given functions, not expressions.)
    page.wait_for_function("() => !document.getElementById('content').hidden")
    # Markup that slipped into the page (a stored XSS) would not run its script.
    ran = page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1';
                                   document.body.appendChild(s); return window.injected; }""")
    assert ran is None


def test_another_site_cannot_frame_the_page_under_a_decoy(cp, browser):  # noqa: F811
    attacker = browser.new_page()
    # set_content returns at the decoy's load event, which waits for its frames to load (or fail).
    attacker.set_content(f'<iframe id="victim" src="{cp.base_url}/" width="800" height="600"></iframe>')
    assert attacker.frame_locator("#victim").locator("#login").count() == 0, "the page rendered in another site's frame"


def test_a_hostile_executor_cannot_blank_the_page_for_every_pool(cp, browser, executor_double):  # noqa: F811
    cp.create_pool("remote", default=True)
    cp.create_pool("other")
    cp.create_source("mysql-prod", RECIPE)
    executor_double("remote", "honest", interval_s=30).heartbeat()
    hostile = executor_double("other", "hostile", interval_s=30)
    status = datahub_aspects.executor_status(pool_id="other", version="0.1.0", address="10.0.0.9", hostname=HOSTILE,
                                             uptime_s=1.0, stopped=False, log_delivery=False)
    hostile.client.heartbeat("hostile", status, {
        "instanceId": hostile.instance_id, "heartbeatIntervalSeconds": "30", "state": "ACTIVE", "runningExecutions": "[]",
        "capacity": json.dumps({"ingestion": {"used_weight": "all of it", "running": 9}, "monitors": None}),
        "sandbox": "null", "health": "{}"})
    page = browser.new_page()
    page.goto(f"{cp.base_url}/#token={cp.admin_token}")
    page.wait_for_function("() => document.querySelector('#sources').rows.length > 1"
                           " || !document.getElementById('message').hidden")
    assert page.locator("#message").is_hidden(), page.inner_text("#message")
    assert "mysql-prod" in page.inner_text("#sources")
    assert "honest" in row_of(page, "pools", "honest").inner_text()
    assert HOSTILE in row_of(page, "pools", "hostile").inner_text()
    assert page.evaluate("() => window.pwned") is None


def test_hostile_names_logs_and_errors_are_shown_as_text_never_run(cp, browser, executor_double):  # noqa: F811
    cp.create_pool("remote", default=True, description=HOSTILE)
    source = cp.create_source(HOSTILE, RECIPE)
    execution = cp.run_source(source["id"])
    executor = executor_double("remote", "e1", interval_s=30)
    executor.heartbeat()
    claimed = executor.claim(execution["id"])
    executor.progress(claimed, f"{HOSTILE}\n</pre><script>window.pwned=3</script>")
    executor.finish(claimed, "FAILURE", reason=HOSTILE)
    page = browser.new_page()
    page.goto(f"{cp.base_url}/#token={cp.admin_token}")
    page.wait_for_selector(f"#executions >> text={execution['id']}")
    row_of(page, "executions", execution["id"]).locator("text=log").click()
    page.wait_for_selector("#log >> text=done")
    page.fill("#pool-id", HOSTILE)  # refused: its error message echoes the id
    page.click("#new-pool button[type=submit]")
    page.wait_for_function("() => !document.getElementById('message').hidden")
    assert HOSTILE in page.inner_text("#pools")
    assert HOSTILE in page.inner_text("#sources")
    assert HOSTILE in page.inner_text("#executions")
    assert page.evaluate("() => window.pwned") is None
    assert page.locator("img, #log script, #pools script, #sources script, #executions script").count() == 0
