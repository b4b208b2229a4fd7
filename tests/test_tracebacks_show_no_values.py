"""A logged traceback never shows the values in its frames, in the executor's logs or the
control plane's. loguru's default (diagnose) prints, under each line of a traceback it can read,
the values of the variables on it; a runner's frames hold its lease token, the ingest token and
resolved secrets, the control plane's executor and upstream tokens."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("set_up", ["from executor.operability import configure_logging; configure_logging(json=False)",
                                    "from executor.operability import configure_logging; configure_logging(json=True)",
                                    "from controlplane.log_setup import configure_logging; configure_logging()"])
def test_a_logged_traceback_never_shows_the_values_in_its_frames(set_up, tmp_path):
    script = tmp_path / "service.py"  # a file, as our modules are: loguru can show its lines
    script.write_text(f"from loguru import logger\n{set_up}\n"
                      "def claim(token):\n    raise ValueError('claim answer is not a claim' if token else '')\n"
                      "try:\n    claim('tok' + 'en-value-in-a-frame')\nexcept ValueError:\n"
                      "    logger.exception('failed')\n")
    stderr = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stderr
    assert "claim answer is not a claim" in stderr and "service.py" in stderr
    assert "token-value-in-a-frame" not in stderr
