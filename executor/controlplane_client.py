"""The executor's one client for the control plane (docs/protocol.md).

One requests.Session, retries configured once: connection errors and 5xx are retried with
backoff; a 4xx is final and raised with the server's reason. An outage is logged once when it
starts and once when it ends, never per attempt. The token is sent, never logged.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from loguru import logger
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

PREFIX = "/executor/v1"
# The largest answer read from the control plane. A claim carries the recipe (itself capped at
# 1 MiB by the YAML guard) and its arguments; anything near this is broken or hostile, and
# reading it whole would put it in the master's memory.
MAX_ANSWER_BYTES = 16 << 20
T = TypeVar("T")


class ControlPlaneError(Exception):
    """A final (4xx) answer, or an outage that outlasted the retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def final(self) -> bool:
        """A 4xx: the control plane answered and said no; retrying cannot help."""
        return self.status is not None and 400 <= self.status < 500


def retry_through_outages(call: Callable[[], T], *, stop: threading.Event | None = None, what: str = "call") -> T:
    """CALL, retried across control-plane outages with backoff (the session already retried each
    attempt). A final (4xx) answer is raised at once; so is the last error once STOP is set.
    Without STOP it never gives up: results are delivered late rather than dropped."""
    delay = 1.0
    while True:
        try:
            return call()
        except ControlPlaneError as exc:
            if exc.final or (stop is not None and stop.is_set()):
                raise
            logger.debug("{} failed ({}); retrying in {:.0f} s", what, exc, delay)
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
            delay = min(delay * 2, 30)


class ControlPlaneClient:
    def __init__(self, gms_url: str, token: str, *, retries: int = 4, timeout_s: float = 15.0) -> None:
        self.gms_url = gms_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.5,
                      backoff_max=10, status_forcelist=(500, 502, 503, 504), allowed_methods=None,
                      raise_on_status=False)
        self.session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=16))
        self.session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=16))
        self._down = False
        self._lock = threading.Lock()

    @property
    def reachable(self) -> bool:
        return not self._down

    def _state(self, down: bool, detail: str = "") -> None:
        with self._lock:
            if down == self._down:
                return
            self._down = down
        if down:
            logger.warning("control plane unreachable at {}: {}; retrying with backoff", self.gms_url, detail)
        else:
            logger.info("control plane reachable again at {}", self.gms_url)

    def _call(self, method: str, path: str, *, json: Any = None, data: bytes | None = None,
              ok: tuple[int, ...] = (200, 201)) -> requests.Response:
        url = self.gms_url + PREFIX + path
        try:
            response = self.session.request(method, url, json=json, data=data, timeout=self.timeout_s, stream=True)
            _read_capped(response, MAX_ANSWER_BYTES)
        except AnswerTooLarge as exc:
            logger.error("control plane answered {} {} with {}; refused, not read", method, path, exc)
            raise ControlPlaneError(f"{method} {path}: answer refused: {exc}") from None
        except requests.RequestException as exc:
            self._state(True, type(exc).__name__)
            raise ControlPlaneError(f"{method} {path}: control plane unreachable ({type(exc).__name__})") from None
        if response.status_code >= 500:
            self._state(True, f"HTTP {response.status_code}")
            raise ControlPlaneError(f"{method} {path}: HTTP {response.status_code}", response.status_code)
        self._state(False)
        if response.status_code not in ok:
            try:
                reason = response.json().get("error", response.text)
            except ValueError:
                reason = response.text[:500]
            raise ControlPlaneError(f"{method} {path}: HTTP {response.status_code}: {reason}", response.status_code)
        return response

    def pool_queue(self, pool_id: str) -> dict:
        return self._call("GET", f"/pools/{pool_id}").json()

    def heartbeat(self, pool_id: str, executor_id: str, body: dict) -> dict:
        return self._call("PUT", f"/pools/{pool_id}/executors/{executor_id}", json=body).json()

    def claim(self, execution_id: str, executor_id: str, receive_count: int | None) -> dict | None:
        """The task and its arguments, or None when the execution is not ours to run (409)."""
        response = self._call("POST", f"/executions/{execution_id}/claim",
                              json={"executor_id": executor_id, "receive_count": receive_count}, ok=(200, 409))
        return None if response.status_code == 409 else response.json()

    def progress(self, execution_id: str, executor_id: str, *, log_tail: str | None, peak_memory_bytes: int | None) -> dict:
        return self._call("POST", f"/executions/{execution_id}/progress",
                          json={"executor_id": executor_id, "status": "RUNNING", "log_tail": log_tail,
                                "peak_memory_bytes": peak_memory_bytes}).json()

    def result(self, execution_id: str, body: dict) -> dict:
        """Record the result; a 409 (already final, e.g. ABORTED meanwhile) is an answer too."""
        response = self._call("POST", f"/executions/{execution_id}/result", json=body, ok=(200, 409))
        return {"recorded": response.status_code == 200, **response.json()}

    def upload_log(self, execution_id: str, data: bytes) -> None:
        self._call("PUT", f"/executions/{execution_id}/log", data=data)


class AnswerTooLarge(Exception):
    pass


def _read_capped(response: requests.Response, cap: int) -> None:
    """Read a streamed body into the response (so .json() works) unless it exceeds CAP bytes;
    a declared Content-Length over the cap is refused before reading anything."""
    try:
        declared = int(response.headers.get("Content-Length", "0"))
    except ValueError:
        declared = 0
    if declared > cap:
        response.close()
        raise AnswerTooLarge(f"{declared} bytes (Content-Length), over the {cap}-byte cap")
    body = bytearray()
    for chunk in response.iter_content(chunk_size=64 << 10):
        body += chunk
        if len(body) > cap:
            response.close()
            raise AnswerTooLarge(f"more than {cap} bytes, over the cap")
    response._content = bytes(body)  # what requests itself sets when it reads the body
    response._content_consumed = True
    response.close()  # with the body consumed, this hands the connection back to the pool
