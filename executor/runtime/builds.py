"""Virtualenv builds run like tasks: in the sandbox, as the task user, in a cgroup of their own.

Install-time code (a setup.py, a build backend, whatever a wheel URL brings) is code from the
recipe author; it gets what a task gets, and no more: no executor credentials, its own memory
and process limits, a timeout, and the output it leaves kept to its last lines for the error.
"""
from __future__ import annotations

import secrets
import subprocess

from sandbox import Limits, Sandbox, SandboxError

from .rejection import TaskRejected
from .venvs import INSTALL_TIMEOUT_S, InstallStep

BUILD_MEMORY_BYTES = 4 << 30
BUILD_PIDS_MAX = 1024
OUTPUT_KEPT_BYTES = 64 << 10


class ConfinedBuilder:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def __call__(self, step: InstallStep) -> tuple[int, str]:
        limits = Limits(memory_max_bytes=BUILD_MEMORY_BYTES, pids_max=BUILD_PIDS_MAX, timeout_s=INSTALL_TIMEOUT_S)
        try:
            process = self.sandbox.start(step.argv, limits, name=f"venv-build-{secrets.token_hex(4)}", env=step.env,
                                         cwd=step.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, user=step.user)
        except SandboxError as exc:
            raise TaskRejected("VENV_INSTALL_FAILED", f"the virtualenv build could not start: {exc}") from None
        kept = b""
        while chunk := process.stdout.read(1 << 16):
            kept = (kept + chunk)[-OUTPUT_KEPT_BYTES:]
        outcome = process.wait()
        if outcome.killed_by == "timeout":
            raise TaskRejected("VENV_INSTALL_FAILED", f"installing the task environment took over {INSTALL_TIMEOUT_S}s")
        code = outcome.exit_code if outcome.exit_code is not None else 128 + (outcome.signal or 0)
        return code, kept.decode("utf-8", "replace")
