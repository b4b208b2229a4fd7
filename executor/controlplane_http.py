"""HTTP to one control plane: pooled keep-alive connections on urllib3, routed as requests would.

The executor makes a claim and a result call per task, so what each call costs is master CPU per
task. requests' own layers (preparing the request, its cookie jar, hooks, the adapter) cost
~1 ms of a ~1.6 ms call to the local control plane, on top of urllib3, which does the HTTP; we
call urllib3's connection pool directly instead (measured: ~0.6 ms a call).

What requests would decide from the environment is decided here once, with requests' own
functions, for the one base URL the executor talks to: the proxy of its scheme (or ALL_PROXY),
none for a NO_PROXY host, the proxy's credentials as Proxy-Authorization, and the CA bundle
(REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, else certifi's). docs/operations.md ("Networks with a
proxy") describes the same routes for this client as before.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import requests.utils
import urllib3
from urllib3.exceptions import HTTPError
from urllib3.util.retry import Retry

USER_AGENT = "datahub-remote-executor"
READ_CHUNK = 64 << 10


class TransportError(Exception):
    """The call did not get an answer: connection refused or reset, a timeout, a TLS or protocol
    error, or retries used up. The message names the kind (never the URL's credentials)."""


class AnswerTooLarge(Exception):
    """The answer was (or said it would be) over the cap; it was not read."""


@dataclass(frozen=True)
class Answer:
    method: str
    path: str
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class ControlPlaneHttp:
    """Calls to paths below BASE_URL, retried by urllib3 on connection errors and 5xx as RETRY
    says (the last 5xx answer is returned, not raised), each attempt bounded by TIMEOUT_S."""

    def __init__(self, base_url: str, headers: Mapping[str, str], *, retry: Retry, timeout_s: float,
                 max_connections: int = 16) -> None:
        self.base_url = base_url.rstrip("/")
        parsed = urllib3.util.parse_url(self.base_url)
        self._base_path = parsed.path or ""
        self._retry = retry
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._headers = {"User-Agent": USER_AGENT, "Accept": "*/*", **headers}
        # Resolved once: the URL never changes, and the environment is the executor's own.
        with requests.Session() as session:
            environment = session.merge_environment_settings(self.base_url, {}, None, None, None)
        proxy = requests.utils.select_proxy(self.base_url, environment["proxies"])
        manager = _manager(proxy, environment["verify"], max_connections)
        self._pool = manager.connection_from_url(self.base_url)
        # Through an HTTP proxy that forwards (not a CONNECT tunnel), the request line carries the
        # whole URL, as requests sends it; otherwise only the path.
        self._absolute = proxy is not None and not proxy.lower().startswith("socks") and parsed.scheme == "http"

    def request(self, method: str, path: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                max_answer_bytes: int) -> Answer:
        """One call; raises TransportError without an answer, AnswerTooLarge over the cap."""
        target = self._base_path + path
        url = self.base_url + path if self._absolute else target
        sent = {**self._headers, **(headers or {})}
        try:
            response = self._pool.urlopen(method, url, body=body, headers=sent, retries=self._retry,
                                          timeout=self._timeout, redirect=False, assert_same_host=False,
                                          preload_content=False, decode_content=True)
        except (HTTPError, OSError) as exc:
            raise TransportError(_kind(exc)) from None
        try:
            data = _read_capped(response, max_answer_bytes)
        except (HTTPError, OSError) as exc:
            response.close()
            raise TransportError(_kind(exc)) from None
        finally:
            response.release_conn()
        return Answer(method, target, response.status, response.headers, data)


def json_body(value: Any) -> bytes:
    """VALUE as the JSON body requests' json= would send (NaN refused)."""
    return json.dumps(value, allow_nan=False).encode()


def _manager(proxy: str | None, verify: bool | str, max_connections: int) -> urllib3.PoolManager:
    tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE"}
    if verify:
        bundle = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
        tls["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
    common = {"num_pools": 1, "maxsize": max_connections, "block": False, **tls}
    if proxy is None:
        return urllib3.PoolManager(**common)
    username, password = requests.utils.get_auth_from_url(proxy)
    if proxy.lower().startswith("socks"):
        try:
            from urllib3.contrib.socks import SOCKSProxyManager
        except ImportError:
            raise ValueError("a SOCKS proxy needs PySocks (pip install 'requests[socks]')") from None
        return SOCKSProxyManager(proxy, username=username or None, password=password or None, **common)
    proxy_headers = urllib3.util.make_headers(proxy_basic_auth=f"{username}:{password}") if username else None
    return urllib3.ProxyManager(proxy, proxy_headers=proxy_headers, **common)


def _read_capped(response: urllib3.BaseHTTPResponse, cap: int) -> bytes:
    """The body, unless it is over CAP bytes: a declared Content-Length over the cap is refused
    before anything is read, a longer stream as soon as it passes the cap (the connection is
    closed, not handed back with unread bytes on it)."""
    try:
        declared = int(response.headers.get("Content-Length", "0"))
    except ValueError:
        declared = 0
    if declared > cap:
        response.close()
        raise AnswerTooLarge(f"{declared} bytes (Content-Length), over the {cap}-byte cap")
    body = bytearray()
    for chunk in response.stream(READ_CHUNK):
        body += chunk
        if len(body) > cap:
            response.close()
            raise AnswerTooLarge(f"more than {cap} bytes, over the cap")
    return bytes(body)


def _kind(exc: BaseException) -> str:
    """What went wrong, by kind: urllib3 wraps the cause of a failure after retries."""
    cause = getattr(exc, "reason", None)
    return type(cause).__name__ if isinstance(cause, BaseException) else type(exc).__name__
