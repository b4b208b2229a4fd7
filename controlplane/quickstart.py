"""The whole system on one machine: the control plane with its embedded queue, one executor,
a sample source run to completion. `bin/quickstart` runs this; Ctrl-C stops everything.

Prints no token: the admin token is in <state-dir>/controlplane/admin-token.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

SAMPLE_SOURCE = "sample-mock-data"
# No sink: DataHub's default (datahub-rest) writes to the control plane, as in DataHub's UI. gen_1
# makes a small lineage graph of tables and views with status, subtypes, lineage and profiles.
SAMPLE_RECIPE = """source:
  type: datahub-mock-data
  config:
    gen_1:
      enabled: true
      emit_lineage: true
      emit_usage: true
      lineage_fan_out: 3
      lineage_hops: 2
"""
DEFAULT_DATAHUB_VERSION = "1.7.0.17"
EXECUTOR_TOKEN_DESCRIPTION = "the quickstart's executor (revoked when the quickstart stops)"


def _free_or(port: int) -> int:
    """`port` if the control plane can listen on it, else a free one. The probe binds as uvicorn
    does, with SO_REUSEADDR: a plain bind fails while the previous run's connections sit in
    TIME_WAIT (up to a minute), so a quick restart would move to a random port for nothing.
    A port some process listens on still fails the probe."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]


def _say(text: str) -> None:
    print(f"[quickstart] {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", default=".state/quickstart")
    parser.add_argument("--port", type=int, default=9002, help="control plane port (a free one if taken)")
    parser.add_argument("--datahub-version", default=DEFAULT_DATAHUB_VERSION)
    parser.add_argument("--exit-after-run", action="store_true", help="stop once the sample run has finished")
    args = parser.parse_args(argv)
    # Before the control plane's imports, which take seconds on a busy machine: a stop signal
    # during them was lost where SIGINT comes in ignored (`bin/quickstart &` in a script, then
    # `kill -INT`), and the whole quickstart ran on as if none had come.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from .log_setup import configure_logging
    from .server import StartRefused
    from .testing import ControlPlaneHandle

    configure_logging()
    state = Path(args.state_dir).resolve()
    if stop.is_set():
        _say("interrupted before starting; nothing started")
        return 1
    cp = ControlPlaneHandle(state / "controlplane", port=_free_or(args.port))
    try:
        cp.start()
    except StartRefused as exc:
        _say(f"cannot start: {exc}")
        return 1
    executor: subprocess.Popen | None = None
    executor_token: dict | None = None
    try:
        _say(f"control plane on {cp.base_url} with its embedded SQS server at {cp.sqs_endpoint_url}")
        if stop.is_set():
            _say("interrupted while the control plane started; stopping")
            return 1
        if "default" not in cp.cp.pools.ids():
            cp.create_pool("default", default=True, description="quickstart pool")
        # The executor's token lives as long as this quickstart: one left by a run that was killed
        # is revoked here (the state dir's lock says no other quickstart uses it), this one at the end.
        for stale in cp.cp.tokens.list():
            if stale["description"] == EXECUTOR_TOKEN_DESCRIPTION:
                cp.cp.tokens.revoke(stale["id"])
        executor_token, token = cp.cp.tokens.create("executor", ["default"], EXECUTOR_TOKEN_DESCRIPTION)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}
        env.update({
            "DATAHUB_GMS_URL": cp.gms_url, "DATAHUB_GMS_TOKEN": token, "DATAHUB_EXECUTOR_POOL_ID": "default",
            "DATAHUB_EXECUTOR_WORK_DIR": str(state / "executor"),
            "DATAHUB_EXECUTOR_VENV_CACHE_DIR": str(Path(".cache/venvs").resolve()),
            "DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION": args.datahub_version,
            "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(state / "secrets"),
            "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0", "DATAHUB_EXECUTOR_HEARTBEAT_INTERVAL": "5",
            "DATAHUB_EXECUTOR_CGROUP_ROOT": "datahub-executor-quickstart",
            # One machine, no system users made for it: tasks run as the user running the
            # quickstart (systemd/install.sh and the image create datahub-task for real installs).
            "DATAHUB_EXECUTOR_TASK_USER": "none",
        })
        executor = subprocess.Popen([str(Path(sys.executable).parent / "datahub-executor"), "run"], env=env)
        source = next((s for s in cp.cp.sources.list() if s["name"] == SAMPLE_SOURCE), None)
        if source is None:
            source = cp.create_source(SAMPLE_SOURCE, SAMPLE_RECIPE, extra_env={"EXECUTOR_TASK_MEMORY_LIMIT": "1G"})
        _say(f"running source {SAMPLE_SOURCE} (datahub-mock-data into this control plane, through DataHub's default "
             f"datahub-rest sink); the first run installs acryl-datahub {args.datahub_version} into a cached virtualenv")
        execution = cp.run_source(source["id"])
        last = None
        while not stop.is_set():
            current = cp.execution(execution["id"])
            if current["status"] != last:
                last = current["status"]
                _say(f"execution {execution['id']}: {last}" + (f" ({current['reason']})" if current.get("reason") else ""))
            if last not in ("PENDING", "RUNNING"):
                written = cp.cp.executions.run_summary(execution["id"])
                _say(f"the run wrote {written['entities']} entities ({written['aspects']} aspects) into the control "
                     "plane; see them on the web page (Executions: metadata)")
                break
            if executor.poll() is not None:
                _say(f"the executor exited with code {executor.returncode}")
                return 1
            stop.wait(0.5)
        if last in (None, "PENDING", "RUNNING"):
            # Ctrl-C before the run finished: the page and the CLI are about to go, so name neither.
            _say(f"interrupted before execution {execution['id']} finished; stopping")
            return 1
        _say(f"web page: {cp.base_url}/  (paste the admin token from {cp.server.admin_token_path})")
        _say(f"admin CLI: .venv/bin/datahub-executor-admin --state-dir {state / 'controlplane'} executions list")
        if not args.exit_after_run:
            _say("running; Ctrl-C stops the executor and the control plane")
            stop.wait()
        return 0 if last == "SUCCESS" else 1
    finally:
        if executor is not None and executor.poll() is None:
            executor.send_signal(signal.SIGTERM)
            try:
                executor.wait(timeout=60)
            except subprocess.TimeoutExpired:
                executor.kill()
                executor.wait()
        if executor_token is not None:
            cp.cp.tokens.revoke(executor_token["id"])
        cp.stop()
        _say("stopped")


if __name__ == "__main__":
    sys.exit(main())
