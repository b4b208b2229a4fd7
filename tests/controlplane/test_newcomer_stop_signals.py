"""A stop signal that comes while `datahub-executor-admin serve` or the quickstart is still
importing and starting. Started with `&` by a script, a command gets SIGINT ignored (POSIX), and
the signal was lost until the command installed its own handler, after the start: the control
plane then ran on for good. Each test starts the command that way and signals it from inside the
import of the control plane's server module, the longest part of the start."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Ignores SIGINT as a script's `&` does, then sends it to itself when controlplane.server is
# first imported, and runs MODULE's main with the rest of the arguments.
LAUNCHER = """
import importlib, os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)

class SignalOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "controlplane.server":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, SignalOnImport())
module = importlib.import_module(sys.argv[1])
sys.exit(module.main(sys.argv[2:]))
"""


def launch(tmp_path: Path, module: str, *args: str) -> subprocess.Popen:
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUB_")}
    return subprocess.Popen([sys.executable, str(launcher), module, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def ended(process: subprocess.Popen) -> str:
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        pytest.fail(f"still running long after its stop signal:\n{output}")
    return output


def test_serve_signalled_while_it_starts_starts_nothing_and_says_so(tmp_path):
    process = launch(tmp_path, "controlplane.admin_cli", "serve", "--state-dir", str(tmp_path / "cp"), "--port", "0")
    output = ended(process)
    assert process.returncode == 0, output
    assert "control plane not started: stop signal received while starting" in output
    assert "control plane on" not in output


def test_quickstart_signalled_while_it_starts_starts_no_executor_and_says_so(tmp_path):
    process = launch(tmp_path, "controlplane.quickstart", "--state-dir", str(tmp_path / "qs"), "--port", "0")
    output = ended(process)
    assert process.returncode == 1, output
    assert "[quickstart] interrupted before starting; nothing started" in output
    assert "Starting datahub executor worker" not in output
