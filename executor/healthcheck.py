"""`datahub-executor healthcheck [--live]`: ask the running master's /health (or, with --live,
/health/live), exit 0 if healthy, 1 if not.

--live is for a check whose failure restarts the executor (ECS replaces an unhealthy task):
it fails only on what a restart mends (loops stalled or gone), not on a refused token, where a
restart would kill the running tasks and mend nothing.

For probes that can only run a command (Docker's HEALTHCHECK, ECS's container health check): the
image has no curl, and the address must follow DATAHUB_EXECUTOR_HEALTH_ADDRESS rather than a port
written into the Dockerfile. Reads only that one setting, so it works whatever else is (mis)set:
from the environment, or the --env-file under it (as run and check read theirs).
"""
from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping

from .settings import SETTINGS

_HEALTH = next(s for s in SETTINGS if s.env == "DATAHUB_EXECUTOR_HEALTH_ADDRESS")
READY_PATH = "/health"  # readiness (operability.HealthServer)
LIVE_PATH = "/health/live"  # liveness
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}
# The executor's own /health is asked directly, never through HTTP_PROXY / HTTPS_PROXY: urllib's
# default opener sent the loopback request to the proxy of a proxied host or container (its
# NO_PROXY seldom names 127.0.0.1), and a healthy executor was reported down.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def health_url(environ: Mapping[str, str] | None = None, path: str = READY_PATH) -> str:
    """The /health (or PATH) address of the executor configured by this environment, reachable
    from here (a wildcard bind is asked on loopback)."""
    environ = dict(os.environ) if environ is None else environ
    host, port = _HEALTH.parse(environ.get(_HEALTH.env) or _HEALTH.default)
    host = _WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def run_healthcheck(timeout_s: float = 4.0, live: bool = False,
                    environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """(healthy, one line for the probe's log). ENVIRON: the settings' sources, the process
    environment when None; the CLI passes its --env-file's merged under it, or an executor whose
    address is set only in the file was asked at the default one and reported down."""
    try:
        url = health_url(environ, path=LIVE_PATH if live else READY_PATH)
    except ValueError as exc:
        return False, f"{_HEALTH.env} is invalid: {exc}"
    try:
        with _DIRECT.open(url, timeout=timeout_s) as response:  # loopback, our own server
            return True, _reason(response.read()) or "ok"
    except urllib.error.HTTPError as exc:
        return False, f"unhealthy ({exc.code}): {_reason(exc.read()) or exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"no answer from {url}: {reason}"
    except http.client.HTTPException as exc:  # something that is not our server answers there
        return False, f"no HTTP answer from {url}: {type(exc).__name__}"


def _reason(body: bytes) -> str:
    try:
        return str(json.loads(body).get("reason", ""))
    except (ValueError, AttributeError):
        return ""


def executor_at(address: str, timeout_s: float = 2.0) -> str | None:
    """What the executor listening at ADDRESS (host:port, as DATAHUB_EXECUTOR_HEALTH_ADDRESS) says
    of its liveness, or None when nothing there answers as one (200 or 503 with a reason)."""
    healthy, said = run_healthcheck(timeout_s, live=True, environ={_HEALTH.env: address})
    if healthy:
        return said
    return said if said.startswith("unhealthy (503)") else None
