"""The README's main command: the whole system on one machine, stopped with Ctrl-C, leaving no process
and no live executor token behind."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

from .conftest import ROOT


def test_quickstart_runs_the_sample_to_success_and_ctrl_c_leaves_no_process_nor_live_token(tmp_path):
    quickstart = subprocess.Popen([sys.executable, "-m", "controlplane.quickstart", "--state-dir", str(tmp_path),
                                   "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen: list[str] = []
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 300
    for line in quickstart.stdout:
        seen.append(line.strip())
        if not children:
            children = psutil.Process(quickstart.pid).children(recursive=True)
        if "Ctrl-C stops" in line or time.monotonic() > deadline:
            break
    statuses = [line.rsplit(": ", 1)[-1] for line in seen if ": " in line and "] execution " in line]
    assert statuses[-2:] == ["RUNNING", "SUCCESS"], seen
    written = next(line for line in seen if "the run wrote" in line)
    entities = int(written.split("the run wrote ")[1].split()[0])
    assert entities >= 10, f"the sample ingests real metadata into the control plane: {written}"
    assert any("web page: http://127.0.0.1:" in line for line in seen)
    assert children, "the executor ran as a child"
    quickstart.send_signal(signal.SIGINT)
    stopping = time.monotonic()
    assert quickstart.wait(timeout=90) == 0
    assert time.monotonic() - stopping < 10, "an idle executor and the control plane stop at once on Ctrl-C"
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left behind: {alive}"
    token = (tmp_path / "controlplane" / "admin-token").read_text().strip()
    assert token not in "\n".join(seen)
    from controlplane.testing import running_controlplane

    with running_controlplane(tmp_path / "controlplane") as cp:
        left = [t["kind"] for t in cp.cp.tokens.list()]
    assert left == ["admin"], f"the executor's token is revoked when the quickstart stops, not left live: {left}"


def test_ctrl_c_while_the_sample_runs_says_it_stops_not_that_it_is_running_and_leaves_no_process(tmp_path):
    quickstart = subprocess.Popen([sys.executable, "-m", "controlplane.quickstart", "--state-dir", str(tmp_path),
                                   "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 300
    for line in quickstart.stdout:
        if not children:
            children = psutil.Process(quickstart.pid).children(recursive=True)
        if line.rstrip().endswith(": RUNNING") or time.monotonic() > deadline:
            break
    assert line.rstrip().endswith(": RUNNING"), line
    quickstart.send_signal(signal.SIGINT)
    after = quickstart.stdout.read().splitlines()

    assert quickstart.wait(timeout=90) != 0, "a sample run that did not finish is not a success"
    assert not any("Ctrl-C stops" in line or "web page:" in line for line in after), \
        f"after Ctrl-C the quickstart says it stops, not that it runs on: {after}"
    assert after[-1].endswith("stopped"), after
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left behind: {alive}"
