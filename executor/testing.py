"""A running executor process and the pieces around it, for tests, benchmarks and the
quickstart (as controlplane/testing.py is for the control plane): a `datahub-executor run` child
whose log lines are collected, a free port, a cheap recipe, and the removal of the cgroup roots
executors made below this process's own cgroup."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
VENV_CACHE = ROOT / ".cache" / "venvs"  # shared across tests and runs: acryl-datahub is installed once
DATAHUB_VERSION = "1.7.0.17"
EXECUTOR = [str(Path(sys.executable).parent / "datahub-executor"), "run"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mock_recipe(out_file: Path, extra_source_config: str = "{}") -> str:
    return (f"source:\n  type: datahub-mock-data\n  config: {extra_source_config}\n"
            f"sink:\n  type: file\n  config:\n    filename: {out_file}\n")


class ExecutorProcess:
    """A `datahub-executor run` child whose log lines are collected for assertions."""

    def __init__(self, env: dict[str, str], argv: list[str] | None = None) -> None:
        self.env = env
        self.lines: list[str] = []
        self.process = subprocess.Popen(argv or EXECUTOR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line with {text!r}; log:\n" + "\n".join(self.lines[-40:]))

    def stop(self, timeout_s: float = 60) -> int:
        """Stop as an operator does: one SIGTERM, and the master drains."""
        self.request_stop()
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def request_stop(self) -> None:
        """Send SIGTERM (a second one kills the running tasks at once and reports them)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait()


def stop_all_without_draining(executors: list[ExecutorProcess], drain_s: float = 2.0) -> None:
    """Stop several executors at once, for a harness's teardown: each gets a SIGTERM, and a second
    one after `drain_s` if it still drains, so nobody waits out a task a test left running."""
    for executor in executors:
        executor.request_stop()
    deadline = time.monotonic() + drain_s
    for executor in executors:
        try:
            executor.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            executor.request_stop()
    for executor in executors:
        try:
            executor.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            executor.kill9()


def remove_cgroup_roots(names: set[str]) -> list[str]:
    """Tests create cgroups only below their own and remove them after: sweep each executor's
    root (killing any task left in it) and remove it. Returns the task cgroups that were left."""
    from sandbox import Sandbox

    left = []
    for name in sorted(names):
        sandbox = Sandbox.open(name)
        left += [f"{name}/{task}" for task in sandbox.sweep()]
        sandbox.close()
    return left
