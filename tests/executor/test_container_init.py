"""`datahub-executor-init`, the image's PID 1, run for real: its status, the signals it passes on
(to its child alone), the orphans it reaps, and the environment it keeps from its own uid."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

INIT = [sys.executable, "-m", "executor.container_init"]
ROOT = Path(__file__).resolve().parents[2]
UNPRIVILEGED = 10001  # the image's user


def _start(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*INIT, "--", *argv], cwd=ROOT, **kwargs)


def _wait_for(path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def test_it_exits_with_its_commands_status_and_128_plus_a_killing_signal():
    assert _start(["sh", "-c", "exit 7"]).wait(timeout=30) == 7
    assert _start(["sh", "-c", "kill -TERM $$"]).wait(timeout=30) == 128 + signal.SIGTERM
    assert _start(["no-such-command-here"], stderr=subprocess.DEVNULL).wait(timeout=30) == 127


def test_its_command_gets_the_default_action_for_sigpipe_and_sigxfsz():
    """Python starts with both ignored, and exec keeps an ignored signal ignored: under the init,
    `yes | head -1` left yes with EPIPE (exit 1, "Broken pipe") instead of dying of SIGPIPE."""
    shown = subprocess.run([*INIT, "--", "sh", "-c", "grep SigIgn /proc/self/status; yes | head -1 >/dev/null; "
                            "echo ${PIPESTATUS:-}"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    ignored = int(shown.stdout.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)) and not ignored & (1 << (signal.SIGXFSZ - 1)), shown.stdout
    piped = subprocess.run([*INIT, "--", "bash", "-c", "yes | head -1 >/dev/null; echo ${PIPESTATUS[0]}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=30)
    assert piped.stdout.strip() == str(128 + signal.SIGPIPE), piped


def test_sigterm_reaches_the_command_alone_not_the_tasks_in_its_process_group(tmp_path):
    """`docker stop`'s SIGTERM is the master's to act on (it drains): a task in the master's process
    group must not get it directly."""
    script = textwrap.dedent(f"""
        import os, signal, subprocess, sys, time
        task = subprocess.Popen([sys.executable, "-c", '''
        import pathlib, signal, time
        signal.signal(signal.SIGTERM, lambda *_: pathlib.Path("{tmp_path}/task-got-sigterm").touch())
        pathlib.Path("{tmp_path}/task-ready").touch()
        time.sleep(60)
        '''])
        def drain(*_):
            open("{tmp_path}/master-got-sigterm", "w").close()
            time.sleep(0.5)  # long enough for a SIGTERM sent to the whole group to land on the task
            task.kill(); task.wait(); sys.exit(0)
        signal.signal(signal.SIGTERM, drain)
        while not os.path.exists("{tmp_path}/task-ready"):
            time.sleep(0.01)
        open("{tmp_path}/master-ready", "w").close()
        time.sleep(60)
    """)
    init = _start([sys.executable, "-c", script])
    try:
        _wait_for(tmp_path / "master-ready")
        init.send_signal(signal.SIGTERM)
        assert init.wait(timeout=30) == 0
    finally:
        if init.poll() is None:
            init.kill()
    assert (tmp_path / "master-got-sigterm").exists()
    assert not (tmp_path / "task-got-sigterm").exists()


def _zombie_children(pid: int) -> list[int]:
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state == "Z":
            zombies.append(int(entry.name))
    return zombies


def test_an_orphan_left_by_a_task_is_reaped_while_the_command_runs(tmp_path):
    # The subshell exits at once; its `sleep` is orphaned, reparented to the init, and exits.
    init = _start(["sh", "-c", f"(sleep 0.3 & echo $! > {tmp_path}/orphan) ; sleep 30"])
    try:
        _wait_for(tmp_path / "orphan")
        orphan = int((tmp_path / "orphan").read_text())
        deadline = time.monotonic() + 20
        while Path(f"/proc/{orphan}").exists():
            assert time.monotonic() < deadline, f"the orphan is still there: zombies {_zombie_children(init.pid)}"
            time.sleep(0.05)
        assert _zombie_children(init.pid) == []
    finally:
        init.send_signal(signal.SIGTERM)
        assert init.wait(timeout=30) == 128 + signal.SIGTERM


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the init and a reader as another uid")
def test_a_process_of_its_own_uid_cannot_read_its_environment(tmp_path):
    """A task of an unprivileged container shares PID 1's uid. tini, dumpable, let it read the
    container's environment (the executor's token) from /proc/1/environ."""
    tmp_path.chmod(0o755)
    as_user = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups", "--"]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "DATAHUB_GMS_TOKEN": "not-a-real-token"}
    init = subprocess.Popen([*as_user, *INIT, "--", "sleep", "30"], env=env, cwd="/")
    try:
        deadline = time.monotonic() + 20
        while not _has_child(init.pid):  # it forks only once it is undumpable
            assert time.monotonic() < deadline, "the init never started its command"
            time.sleep(0.02)
        assert not _readable_by(as_user, init.pid), "its environment was readable"
    finally:
        init.send_signal(signal.SIGTERM)
        init.wait(timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the command and a reader as another uid")
def test_a_healthcheck_keeps_the_environment_from_its_own_uid_while_it_waits(tmp_path):
    """The image's HEALTHCHECK (and `docker exec ... check`) starts beside the master with the
    container's whole environment; it is undumpable before it does anything else."""
    as_user = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups", "--"]
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the connection, never answers
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "DATAHUB_GMS_TOKEN": "not-a-real-token",
               "DATAHUB_EXECUTOR_HEALTH_ADDRESS": f"127.0.0.1:{silent.getsockname()[1]}"}
        probe = subprocess.Popen([*as_user, sys.executable, "-m", "executor.cli", "healthcheck"], env=env, cwd="/",
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            silent.settimeout(30)
            connection, _ = silent.accept()
            with connection:
                assert not _readable_by(as_user, probe.pid), "the healthcheck's environment was readable"
        finally:
            assert probe.wait(timeout=30) == 1


def _readable_by(as_user: list[str], pid: int) -> bool:
    """Whether a process run as AS_USER reads PID's environment. Judged here, never shown: it holds a token."""
    reader = subprocess.run([*as_user, "cat", f"/proc/{pid}/environ"], capture_output=True, timeout=30, cwd="/")
    return reader.returncode == 0 or b"Permission denied" not in reader.stderr


def _has_child(pid: int) -> bool:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return children.exists() and children.read_text().strip() != ""


def test_one_ctrl_c_on_a_terminal_reaches_the_command_once(tmp_path):
    """`docker run -it`: the command shared this process's group, the terminal's foreground one,
    so a Ctrl-C reached it from the terminal and again forwarded by the init; the executor took
    the second SIGINT for "kill the running tasks now". A real pseudo-terminal, one Ctrl-C."""
    import pty
    import select

    counted = tmp_path / "sigints"
    script = textwrap.dedent(f"""
        import signal, time
        count = 0
        def on_sigint(*_):
            global count
            count += 1
            open("{counted}", "w").write(str(count))
        signal.signal(signal.SIGINT, on_sigint)
        open("{tmp_path}/ready", "w").close()
        time.sleep(3)
    """)
    pid, terminal = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, [*INIT, "--", sys.executable, "-c", script])
    try:
        _wait_for(tmp_path / "ready")
        time.sleep(0.2)
        os.write(terminal, b"\x03")
        deadline = time.monotonic() + 30
        while True:  # drain the terminal until the init exits
            ready, _, _ = select.select([terminal], [], [], 0.1)
            if ready:
                try:
                    os.read(terminal, 65536)
                except OSError:
                    break
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                pid = 0
                break
            assert time.monotonic() < deadline
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(terminal)
    assert counted.read_text() == "1", f"{counted.read_text()} SIGINTs for one Ctrl-C"
