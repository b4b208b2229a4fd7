"""`datahub-executor check`: the seed's troubleshooting list, run before anything else.

One line per check, passed or failed with the fix; exit 1 if any failed. A WARN line is a
finding `run` carries on with but an operator should know of (it fails nothing). A line whose probe
crosses the network (DataHub, SQS, the package index, Secrets Manager) ends with the way it
went when a proxy is configured: through which proxy (its credentials hidden), or direct for a
NO_PROXY host.
"""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from botocore.exceptions import ClientError

from sandbox import Limits, Sandbox, SandboxError, TaskUser
from sandbox.spawn import OOM_SCORE_CHILD, OOM_SCORE_MASTER

from .consumer import SqsConsumer
from .controlplane_client import ControlPlaneClient, ControlPlaneError, pool_lookup_fix
from .healthcheck import executor_at
from .isolation import TaskIdentity, TaskUserError, resolve_task_user
from .runtime import network_env
from .runtime.secrets import AwsSecretArnStore, AwsSecretsManagerStore, SecretsManagerClients
from .settings import Settings


def run_checks(settings: Settings, out: Callable[[str], None] = print) -> bool:
    client = ControlPlaneClient(settings.gms_url, settings.gms_token, retries=1, timeout_s=10)
    results: list[bool] = []

    def check(name: str, probe: Callable[[], str], routes: Callable[[], str | None] = lambda: None) -> None:
        try:
            line, passed = f"PASS  {name}: {probe()}", True
        except Advice as exc:
            line, passed = f"WARN  {name}: {exc}", True
        except Exception as exc:  # every failure becomes one line with its fix
            line, passed = f"FAIL  {name}: {exc}", False
        way = routes()
        out(f"{line}; {way}" if way else line)
        results.append(passed)

    check("GMS URL", lambda: f"{settings.gms_url} ends in /gms")
    pools: list = []

    def token_and_pool() -> str:
        try:
            pools.append(client.pool(settings.pool_id))
        except ControlPlaneError as exc:
            fix = pool_lookup_fix(exc, settings.pool_id)
            if fix is not None:
                raise RuntimeError(fix) from None
            if exc.status is not None and 300 <= exc.status < 400:  # the message says where to
                raise RuntimeError(str(exc)) from None
            raise RuntimeError(f"{exc}: check network connectivity to {settings.gms_url} and DATAHUB_GMS_URL") from None
        return f"token accepted; pool {settings.pool_id} exists"

    check("token and pool", token_and_pool, lambda: _routes([settings.gms_url], all_proxy=True))

    sqs_endpoints: list[str] = []

    def sqs() -> str:
        if not pools:
            raise RuntimeError("skipped: the pool could not be looked up")
        pool = pools[0]
        for queue_url in (pool.ingestion_queue_url, pool.monitors_queue_url):
            _probe_queue(queue_url, pool, settings, sqs_endpoints)
        return f"queues {pool.ingestion_queue_url} and {pool.monitors_queue_url} reachable, credentials accepted"

    check("SQS", sqs, lambda: _routes(sqs_endpoints))

    # The index builds resolve from (network_env.build_index): PIP_INDEX_URL the setting (it may
    # come from --env-file), else uv's own names, else uv's default; trusted as builds trust it.
    build_env = network_env.uv_names(network_env.for_builds({**os.environ,
                                                             "PIP_INDEX_URL": settings.pip_index_url or ""}))
    index_name, index_url = network_env.build_index(build_env) or ("PIP_INDEX_URL", "https://pypi.org/simple/")
    shown_index = network_env.without_credentials(index_url)

    def package_index() -> str:
        try:
            with _index_opener(index_url, build_env).open(_strip_userinfo(index_url).rstrip("/") + "/acryl-datahub/",
                                                          timeout=10) as answer:
                answer.read(1)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise RuntimeError(f"{shown_index} refused the credentials ({exc.code}): fix the user and password "
                                   f"in {index_name}") from None
            raise RuntimeError(f"{shown_index} answered {exc.code}: allow it, or set {index_name} to a mirror") from None
        except Exception as exc:
            if isinstance(getattr(exc, "reason", None), ssl.SSLCertVerificationError):
                raise RuntimeError(f"{shown_index} not reachable (its certificate is not trusted: "
                                   f"{exc.reason.verify_message}): set PIP_CERT to the bundle of the CA that signed it, "
                                   "as builds are given it") from None
            raise RuntimeError(f"{shown_index} not reachable ({type(exc).__name__}): allow it, or set {index_name} to "
                               "a mirror") from None
        return f"{shown_index} reachable"

    check("package index", package_index, lambda: _routes([_strip_userinfo(index_url)]))

    secrets_manager_endpoints: list[str] = []

    def secrets() -> str:
        found, failed = [], []
        base = settings.file_secret_basedir
        if not os.path.isdir(base):
            found.append(f"{base} absent: file secrets disabled (mount secrets there or set "
                         "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR)")
        elif not os.access(base, os.R_OK | os.X_OK):
            failed.append(f"{base} is not readable by this user: fix its permissions")
        else:
            found.append(f"{len(os.listdir(base))} file secret(s) in {base}")
        found.append("environment secrets available")
        clients = SecretsManagerClients()
        if settings.aws_secrets:
            store = AwsSecretArnStore(settings.aws_secrets, clients)
            secrets_manager_endpoints.extend(store.endpoint(reference) for reference in settings.aws_secrets)
            try:
                found.append(store.probe())
            except RuntimeError as exc:  # one part per unreadable secret, each naming it
                failed.append(str(exc))
        if settings.aws_secrets_manager:
            try:
                client = clients(None)
            except Exception as exc:  # botocore's NoRegionError: no region in the AWS configuration
                failed.append(f"DATAHUB_EXECUTOR_AWS_SECRETS_MANAGER=true needs an AWS region ({type(exc).__name__}): "
                              "set AWS_DEFAULT_REGION (or region in the AWS config file)")
            else:
                secrets_manager_endpoints.append(client.meta.endpoint_url)
                try:
                    found.append(AwsSecretsManagerStore(client).probe())
                except RuntimeError as exc:
                    failed.append(str(exc))
        if failed:
            raise RuntimeError("; ".join(failed))
        return "; ".join(found)

    check("secret stores", secrets, lambda: _routes(secrets_manager_endpoints))

    sandboxes: list[Sandbox] = []
    identities: list[TaskIdentity] = []

    def cgroups() -> str:
        try:
            sandboxes.append(Sandbox.open(f"{settings.cgroup_root}-check", mode=settings.sandbox_mode))
        except SandboxError as exc:
            raise RuntimeError(str(exc)) from None
        if sandboxes[0].mode == "none":
            return "mode none: memory limits are best effort (give the executor a writable, delegated cgroup)"
        return (f"mode {sandboxes[0].mode}: memory, pids and cpu limits enforced by the kernel; a task's whole tree: "
                f"{sandboxes[0].isolation_support()['tree_kill']}")

    check("cgroups", cgroups)

    def oom_protection() -> str:
        if not sandboxes:
            raise RuntimeError("skipped: no sandbox could be opened")
        if sandboxes[0].master_oom_protected:
            return (f"the executor's oom_score_adj is {OOM_SCORE_MASTER}, its tasks' {OOM_SCORE_CHILD}: an out-of-memory "
                    "takes a task first")
        raise Advice(f"the executor cannot lower its oom_score_adj to {OOM_SCORE_MASTER} (that needs CAP_SYS_RESOURCE): "
                     "an out-of-memory outside the tasks' cgroups (a container's limit, a task without a memory limit) "
                     "may end the executor instead of a task; start it with it lowered: systemd OOMScoreAdjust=-900 "
                     "(our unit sets it), docker run --oom-score-adj=-900")

    check("OOM protection", oom_protection)

    def isolation() -> str:
        if not sandboxes:
            raise RuntimeError("skipped: no sandbox could be opened")
        try:
            identity = resolve_task_user(settings.task_user, sandboxes[0], settings.tasks_at_once())
        except TaskUserError as exc:
            raise RuntimeError(str(exc)) from None
        identities.append(identity)
        private_tmp = sandboxes[0].isolation_support()["private_tmp"]
        tmp = ("off (DATAHUB_EXECUTOR_TASK_PRIVATE_TMP=false)" if not settings.task_private_tmp
               else "yes" if private_tmp.startswith("available") else private_tmp)
        return f"{identity.description}; private /tmp per task: {tmp}"

    def directories() -> str:
        found, failed = [], []
        for env, path in (("DATAHUB_EXECUTOR_WORK_DIR", settings.work_dir),
                          ("DATAHUB_EXECUTOR_VENV_CACHE_DIR", settings.venv_cache_dir)):
            try:
                found.append(_probe_directory(path))
            except OSError as exc:
                failed.append(f"{env} {path} cannot be created or written ({exc.strerror}: {exc.filename}): make it "
                              f"writable by the executor's user, or set {env} to a directory that is")
        if failed:
            raise RuntimeError("; ".join(failed))
        return "; ".join(found)

    def task_python() -> str:
        user = _a_task_user(identities[0], settings) if identities else None
        return _probe_python(settings.task_python, (sandboxes[0], user) if user is not None else None)

    try:  # the sandbox stays open for the task python, run in it as builds are
        check("isolation", isolation)
        check("directories", directories)
        check("task python", task_python)
    finally:
        for sandbox in sandboxes:
            sandbox.close()
    check("health address", lambda: _probe_health_address(*settings.health_address))
    return all(results)


class Advice(Exception):
    """A probe's finding that `run` carries on with, but an operator should act on: WARN, not FAIL."""


def _probe_directory(path: str) -> str:
    """Create PATH (and what above it is missing) and a file in it, as `run` would, then remove
    what was made: the check leaves the host as it found it. OSError when either is refused."""
    directory = Path(path)
    missing = [p for p in (directory, *directory.parents) if not p.exists()]  # deepest first
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=directory, prefix=".datahub-executor-check-")
        os.close(descriptor)
        os.unlink(probe)
    finally:
        for created in missing:
            with contextlib.suppress(OSError):  # never made (the mkdir failed above it), or no longer empty
                created.rmdir()
    return f"{directory} writable" + (" (created at start)" if missing else "")


def _a_task_user(identity: TaskIdentity, settings: Settings) -> TaskUser | None:
    """The user a task would be given now (None: the executor's own), given back at once. Every
    uid of a range is alike to the file system (no account or group has any), so one stands for
    all. The event is set so that acquire refuses rather than waits (with nothing held, it never
    has to)."""
    users, holder = identity.users, "datahub-executor-check"
    given_up = threading.Event()
    given_up.set()
    try:
        return users.acquire(holder, next(iter(settings.tasks_at_once())), given_up)
    finally:
        users.release(holder)


VERSION_ARGS = ["-c", "import sys; print(sys.version.split()[0])"]
VERSION_TIMEOUT_S = 60


def _probe_python(task_python: str | None, as_task: tuple[Sandbox, TaskUser] | None = None) -> str:
    """Run the interpreter virtualenvs are built with, as uv will: a path that is not there (or
    is no Python) passed everything else and failed every build with "No interpreter found". Its
    environment is PATH alone (it is given nothing of the executor's, which holds the token).

    Where tasks have a user of their own, uv runs as that user, so AS_TASK (the check's sandbox
    and that user) runs it once more the way a build step runs: started by the sandbox as that
    user (builds.py). One the executor could reach but the task user could not (below /root,
    0700) passed, and then failed every build. Not a bare `setpriv ... -- python`: setpriv keeps
    its capabilities until its own exec, so the kernel walks the path to the command it names
    with CAP_DAC_OVERRIDE and lets the task user through; the sandbox's wrapper shell execs
    the command without them, as uv execs the interpreter."""
    python = task_python or sys.executable
    fix = ("set DATAHUB_EXECUTOR_TASK_PYTHON to a Python 3 interpreter, or unset it (the executor's own)"
           if task_python else "reinstall the executor")
    try:
        done = subprocess.run([python, *VERSION_ARGS], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, env={"PATH": os.environ.get("PATH", os.defpath)})
    except OSError as exc:
        raise RuntimeError(f"{python} cannot be run ({exc.strerror}): {fix}") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{python} did not say its version in {VERSION_TIMEOUT_S} s: {fix}") from None
    if done.returncode != 0:
        raise RuntimeError(f"{python} exited {done.returncode} asked for its version: {fix}")
    version = done.stdout.strip()
    if as_task is None:
        return f"{python} runs (Python {version})"
    sandbox, user = as_task
    who = f"the task user (uid {user.uid}, gid {user.gid})"
    why = _fails_as(sandbox, user, python)
    if why:
        real = os.path.realpath(python)
        where = python if real == python else f"{python}, {real} (what it links to)"
        raise RuntimeError(f"{python} runs as the executor's user, but {who} cannot run it ({why}): make {where} and "
                           "every directory above them readable and executable by that uid, or set "
                           "DATAHUB_EXECUTOR_TASK_PYTHON to a Python 3 interpreter it can run")
    return f"{python} runs (Python {version}) as the executor's user and as {who}"


def _fails_as(sandbox: Sandbox, user: TaskUser, python: str) -> str | None:
    """Why PYTHON, started in SANDBOX as USER from /, could not say its version (None: it did)."""
    try:
        process = sandbox.start([python, *VERSION_ARGS], Limits(timeout_s=VERSION_TIMEOUT_S),
                                env={"PATH": os.environ.get("PATH", os.defpath)}, cwd="/", stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, user=user)
    except SandboxError as exc:
        return f"the sandbox could not start it: {exc}"
    with process.stdout:
        said = process.stdout.read().decode("utf-8", "replace").strip().splitlines()
    outcome = process.wait()
    if outcome.killed_by == "timeout":
        return f"it did not say its version in {VERSION_TIMEOUT_S} s"
    if outcome.exit_code == 0:
        return None
    ended = f"exit {outcome.exit_code}" if outcome.exit_code is not None else f"signal {outcome.signal}"
    return f"{ended}: {said[-1]}" if said else ended


def _probe_health_address(host: str, port: int) -> str:
    """Bind DATAHUB_EXECUTOR_HEALTH_ADDRESS as the health server will (SO_REUSEADDR, as
    http.server sets it: a closed connection's TIME_WAIT is no conflict), then let it go."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                running = executor_at(shown)
                if running is not None:  # `docker exec ... check` beside the executor, as the docs have it
                    return (f"{shown} answers as a running executor ({running}): this one, checked beside it; a "
                            "second executor on this host needs a DATAHUB_EXECUTOR_HEALTH_ADDRESS of its own")
                raise RuntimeError(f"{shown} is in use, so `run` would stop at once: give this executor its own "
                                   "DATAHUB_EXECUTOR_HEALTH_ADDRESS (a second executor on this host), or stop what "
                                   "listens there") from None
            raise RuntimeError(f"{shown} cannot be bound ({exc.strerror or exc}): set "
                               "DATAHUB_EXECUTOR_HEALTH_ADDRESS to an address of this host") from None
    return f"{shown} free for /health and /metrics" if port else f"{host}: a free port is picked at start"


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _index_opener(index_url: str, build_env: Mapping[str, str]) -> urllib.request.OpenerDirector:
    """An opener that reaches the index as a build's uv does (BUILD_ENV, network_env.uv_names):

    - it sends the index URL's user and password as uv does: Basic, with the first request (no
      401 round trip), and only to that host. urllib itself takes `user:pass@host` for the host
      name, so a mirror with credentials failed "Name or service not known" here though builds
      reached it;
    - it trusts the index's certificate as uv does: not verified for a host of UV_INSECURE_HOST
      (PIP_TRUSTED_HOST), else against SSL_CERT_FILE (PIP_CERT's bundle) where one is given. A
      mirror signed by a private CA failed here, "not reachable", though builds reached it."""
    parts = urlsplit(index_url)
    handlers: list[urllib.request.BaseHandler] = []
    insecure = (build_env.get("UV_INSECURE_HOST") or "").split()
    if parts.hostname and (parts.hostname in insecure or parts.netloc.rpartition("@")[2] in insecure):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    elif build_env.get("SSL_CERT_FILE") or build_env.get("SSL_CERT_DIR"):
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(
            cafile=build_env.get("SSL_CERT_FILE"), capath=build_env.get("SSL_CERT_DIR"))))
    if parts.username is not None:
        passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
        passwords.add_password(None, _strip_userinfo(index_url), unquote(parts.username), unquote(parts.password or ""),
                               is_authenticated=True)
        handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
    return urllib.request.build_opener(*handlers)


def _routes(urls: list[str], *, all_proxy: bool = False) -> str | None:
    """How requests to URLS leave this host, or None when no proxy is configured (or no URL was
    asked). The DataHub client (routed by requests' rules, controlplane_http.py), botocore (SQS,
    Secrets Manager) and urllib (the package index probe) all take the proxy of the URL's scheme
    from the environment, lower-case variable first, and go direct to a NO_PROXY host; only the
    DataHub client also falls back to ALL_PROXY."""
    proxies = urllib.request.getproxies_environment()
    if not urls or not set(proxies) - {"no"}:
        return None
    ways = {}
    for url in urls:
        parts = urlsplit(url)
        name = next((n for n in (f"{parts.scheme}_proxy", f"{parts.scheme.upper()}_PROXY",
                                 *(("all_proxy", "ALL_PROXY") if all_proxy else ())) if os.environ.get(n)), None)
        if name is None:
            ways[url] = f"direct (no {parts.scheme.upper()}_PROXY)"
        elif urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
            ways[url] = "direct (NO_PROXY)"
        else:
            ways[url] = f"via proxy {network_env.without_credentials(os.environ[name])} ({name})"
    if len(set(ways.values())) == 1:
        return next(iter(ways.values()))
    return "; ".join(f"{urlsplit(url).netloc} {way}" for url, way in ways.items())


def _probe_queue(queue_url: str, pool, settings: Settings, endpoints: list[str]) -> None:
    consumer = SqsConsumer(queue_url, "check", region=pool.region, endpoint_url=settings.sqs_endpoint_url or pool.endpoint_url,
                           visibility_timeout_s=pool.visibility_timeout_s or settings.visibility_timeout_s,
                           local_credentials=bool(pool.endpoint_url))
    endpoints.append(consumer.client.meta.endpoint_url)
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
