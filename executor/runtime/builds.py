"""Virtualenv builds run like tasks: in the sandbox, as the task user, in a cgroup of their own.

Install-time code (a setup.py, a build backend, whatever a wheel URL brings) is code from the
recipe author; it gets what a task gets, and no more: no executor credentials, its own memory
and process limits, a timeout, and the output it leaves kept to its last lines for the error.
"""
from __future__ import annotations

import os
import secrets
import select
import subprocess
import threading

from sandbox import Limits, Sandbox, SandboxError

from .rejection import TaskRejected
from .venvs import INSTALL_TIMEOUT_S, InstallStep, PreparationStopped

BUILD_MEMORY_BYTES = 4 << 30
BUILD_PIDS_MAX = 1024
OUTPUT_KEPT_BYTES = 64 << 10


STOP_POLL_S = 0.5  # how often a running build looks at whether the executor is stopping


class ConfinedBuilder:
    def __init__(self, sandbox: Sandbox, stopping: threading.Event | None = None) -> None:
        self.sandbox = sandbox
        self.stopping = stopping  # set when the executor stops: a running build is killed

    def __call__(self, step: InstallStep) -> tuple[int, str]:
        limits = Limits(memory_max_bytes=BUILD_MEMORY_BYTES, pids_max=BUILD_PIDS_MAX, timeout_s=INSTALL_TIMEOUT_S)
        try:
            process = self.sandbox.start(step.argv, limits, name=f"venv-build-{secrets.token_hex(4)}", env=step.env,
                                         cwd=step.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, user=step.user)
        except SandboxError as exc:
            raise TaskRejected("VENV_INSTALL_FAILED", f"the virtualenv build could not start: {exc}") from None
        try:
            kept = self._drain(process, step.stop if step.stop is not None else self.stopping)
        except BaseException:
            # Whatever broke the reading, the build must not outlive it: its runner gives back the
            # weight and the uid next, and a build left running as that uid would be reachable by
            # the next task given it.
            process.kill()
            process.wait()
            process.stdout.close()
            raise
        process.stdout.close()
        outcome = process.wait()
        if outcome.killed_by == "timeout":
            raise TaskRejected("VENV_INSTALL_FAILED", f"installing the task environment took over {INSTALL_TIMEOUT_S}s")
        code = outcome.exit_code if outcome.exit_code is not None else -(outcome.signal or 1)
        if code != 0 and outcome.oom_kills:
            raise TaskRejected("VENV_INSTALL_FAILED", "installing the task environment ran out of memory (a build may "
                                                      f"use {BUILD_MEMORY_BYTES >> 30} GiB)")
        return code, kept.decode("utf-8", "replace")

    def _drain(self, process, stop) -> bytes:
        """The build's output to its end, keeping the last OUTPUT_KEPT_BYTES; PreparationStopped
        once STOP is set meanwhile (the executor stopping, the run cancelled). poll(), not select(): the master's
        descriptors pass 1023 once it runs a few hundred tasks (its open-files limit is raised),
        and select() refuses those."""
        kept = b""
        fd = process.stdout.fileno()
        waiting = select.poll()
        waiting.register(fd, select.POLLIN)
        while True:
            if stop is not None and stop.is_set():  # killed by the caller, as on any exception
                raise PreparationStopped("the virtualenv build was killed: the executor is stopping, or the run was "
                                         "cancelled")
            if not waiting.poll(STOP_POLL_S * 1000):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return kept
            kept = (kept + chunk)[-OUTPUT_KEPT_BYTES:]
