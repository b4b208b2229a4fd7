"""`datahub-executor check`: the seed's troubleshooting list, run before anything else.

One line per check, passed or failed with the fix; exit 1 if any failed.
"""
from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable

from botocore.exceptions import ClientError

from sandbox import Sandbox, SandboxError

from .consumer import SqsConsumer
from .controlplane_client import ControlPlaneClient, ControlPlaneError
from .isolation import TaskUserError, resolve_task_user
from .settings import Settings


def run_checks(settings: Settings, out: Callable[[str], None] = print) -> bool:
    client = ControlPlaneClient(settings.gms_url, settings.gms_token, retries=1, timeout_s=10)
    results: list[bool] = []

    def check(name: str, probe: Callable[[], str]) -> None:
        try:
            detail = probe()
            out(f"PASS  {name}: {detail}")
            results.append(True)
        except Exception as exc:  # every failure becomes one line with its fix
            out(f"FAIL  {name}: {exc}")
            results.append(False)

    check("GMS URL", lambda: f"{settings.gms_url} ends in /gms")
    pools: list = []

    def token_and_pool() -> str:
        try:
            pools.append(client.pool(settings.pool_id))
        except ControlPlaneError as exc:
            if exc.status == 401:
                raise RuntimeError("token refused (401): generate a Remote Executor token and set DATAHUB_GMS_TOKEN") from None
            if exc.status == 403:
                raise RuntimeError(f"token not scoped to pool {settings.pool_id} (403): use a token for this pool") from None
            if exc.status == 404:
                raise RuntimeError(f"pool {settings.pool_id} does not exist: create it, or fix DATAHUB_EXECUTOR_POOL_ID") from None
            raise RuntimeError(f"{exc}: check network connectivity to {settings.gms_url} and DATAHUB_GMS_URL") from None
        return f"token accepted; pool {settings.pool_id} exists"

    check("token and pool", token_and_pool)

    def sqs() -> str:
        if not pools:
            raise RuntimeError("skipped: the pool could not be looked up")
        pool = pools[0]
        for queue_url in (pool.ingestion_queue_url, pool.monitors_queue_url):
            _probe_queue(queue_url, pool, settings)
        return f"queues {pool.ingestion_queue_url} and {pool.monitors_queue_url} reachable, credentials accepted"

    check("SQS", sqs)

    def package_index() -> str:
        url = settings.pip_index_url or "https://pypi.org/simple/"
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/acryl-datahub/", timeout=10) as answer:
                answer.read(1)
        except Exception as exc:
            raise RuntimeError(f"{url} not reachable ({type(exc).__name__}): allow it, or set PIP_INDEX_URL to a mirror") from None
        return f"{url} reachable"

    check("package index", package_index)

    def secrets() -> str:
        base = settings.file_secret_basedir
        if not os.path.isdir(base):
            return f"{base} absent: file secrets disabled (mount secrets there or set DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR)"
        if not os.access(base, os.R_OK | os.X_OK):
            raise RuntimeError(f"{base} is not readable by this user: fix its permissions")
        return f"{len(os.listdir(base))} file secret(s) in {base}; environment secrets available"

    check("secret stores", secrets)

    sandboxes: list[Sandbox] = []

    def cgroups() -> str:
        try:
            sandboxes.append(Sandbox.open(f"{settings.cgroup_root}-check", mode=settings.sandbox_mode))
        except SandboxError as exc:
            raise RuntimeError(str(exc)) from None
        if sandboxes[0].mode == "none":
            return "mode none: memory limits are best effort (give the executor a writable, delegated cgroup)"
        return f"mode {sandboxes[0].mode}: memory, pids and cpu limits enforced by the kernel"

    check("cgroups", cgroups)

    def isolation() -> str:
        if not sandboxes:
            raise RuntimeError("skipped: no sandbox could be opened")
        try:
            identity = resolve_task_user(settings.task_user, sandboxes[0])
        except TaskUserError as exc:
            raise RuntimeError(str(exc)) from None
        private_tmp = sandboxes[0].isolation_support()["private_tmp"]
        tmp = ("off (DATAHUB_EXECUTOR_TASK_PRIVATE_TMP=false)" if not settings.task_private_tmp
               else "yes" if private_tmp.startswith("available") else private_tmp)
        return f"{identity.description}; private /tmp per task: {tmp}"

    try:
        check("isolation", isolation)
    finally:
        for sandbox in sandboxes:
            sandbox.close()
    return all(results)


def _probe_queue(queue_url: str, pool, settings: Settings) -> None:
    consumer = SqsConsumer(queue_url, "check", region=pool.region, endpoint_url=settings.sqs_endpoint_url or pool.endpoint_url,
                           visibility_timeout_s=pool.visibility_timeout_s or settings.visibility_timeout_s,
                           local_credentials=bool(pool.endpoint_url))
    # Probed with an action the executor is allowed anyway (least-privilege roles grant no
    # GetQueueAttributes) and that changes nothing: a visibility change for a receipt handle
    # that cannot exist. SQS answering "invalid receipt handle" proves the endpoint is reachable,
    # the queue exists and the credentials may act on it. (A receive would count towards the
    # redrive of whatever message it happened to get.)
    try:
        consumer.client.change_message_visibility(QueueUrl=queue_url, ReceiptHandle="datahub-executor-check",
                                                  VisibilityTimeout=0)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("ReceiptHandleIsInvalid", "InvalidParameterValue"):
            return
        if "AccessDenied" in code or code in ("InvalidClientTokenId", "UnrecognizedClientException"):
            raise RuntimeError(f"{code}: the credentials may not use the queue; grant sqs:ReceiveMessage, "
                               "sqs:DeleteMessage and sqs:ChangeMessageVisibility on it") from None
        raise RuntimeError(f"{code}: the pool's queue answered with an error") from None
    except Exception as exc:
        raise RuntimeError(f"{type(exc).__name__}: allow outbound HTTPS to sqs.*.amazonaws.com "
                           "(or set DATAHUB_EXECUTOR_SQS_ENDPOINT_URL)") from None
