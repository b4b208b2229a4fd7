"""The systemd unit, verified by systemd itself, and the install script run for real into a
temporary root (nothing on the host is touched): first a bare staging tree, then the same tree as
an operating system tree with an /etc/passwd, where it also creates the task user."""
from __future__ import annotations

import fcntl
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from executor.settings import SETTINGS, load_settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "datahub-executor.service"
INSTALL = ROOT / "systemd" / "install.sh"
TASK_USER = "datahub-task"
# The tests that run install.sh share one worker (--dist loadgroup), and so the installed tree.
HOME_DIRECTORIES = ("/home/", "/root/", "/run/user/")  # what the unit's ProtectHome=yes hides


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        done = subprocess.run([python, "-c", "import sys; print('%d %d' % sys.version_info[:2])"], capture_output=True,
                              text=True, timeout=60)
    except OSError:
        return None
    return tuple(map(int, done.stdout.split())) if done.returncode == 0 else None


def _pythons(*patterns: str) -> list[str]:
    return [path for pattern in patterns for path in sorted(glob.glob(pattern)) if os.access(path, os.X_OK)]


# The service's Python, as on a host: the system's (this host's python3 on PATH may be pyenv's,
# under /root, which install.sh refuses).
SERVICE_PYTHON = next((p for p in _pythons("/usr/bin/python3", "/usr/local/bin/python3")
                       if (_python_version(p) or (0, 0)) >= (3, 10)), None)


def unit_settings() -> dict[str, str]:
    values = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#") and not line.startswith("["):
            key, _, value = line.partition("=")
            values.setdefault(key, value)
    return values


def test_systemd_accepts_the_unit_without_a_single_warning(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed: bin/install-system-deps installs systemd")
    # verify also checks that ExecStart's binary exists: point it at one that does.
    unit = tmp_path / "datahub-executor.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", UNIT.read_text(), flags=re.M))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"systemd warns: {result.stderr}"


def test_the_unit_keeps_the_master_safe_and_the_children_confined():
    unit = unit_settings()
    assert unit["Type"] == "notify" and unit["Delegate"] == "yes"
    assert int(unit["OOMScoreAdjust"]) < 0 and unit["OOMPolicy"] == "continue" and unit["KillMode"] == "mixed"
    assert unit["Restart"] == "on-failure" and int(unit["WatchdogSec"]) > 0
    drain_default = float(next(s.default for s in SETTINGS if s.env == "DATAHUB_EXECUTOR_DRAIN_TIMEOUT"))
    assert int(unit["TimeoutStopSec"]) > drain_default, "systemd must not kill the master while it drains"
    assert unit.get("ProtectControlGroups", "no") == "no", "the executor writes its own cgroup subtree"


def test_the_doc_says_how_to_keep_the_stop_timeout_above_a_longer_drain():
    """TimeoutStopSec= is fixed in the unit and systemd cannot take it from the environment file
    where DATAHUB_EXECUTOR_DRAIN_TIMEOUT is set: an operator who raises the drain there must be
    told to raise the stop timeout too (a drop-in), or systemd SIGKILLs the drain."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc[doc.index("### On a VM, as a systemd service"):doc.index("### As a container")]
    stop_timeout = int(unit_settings()["TimeoutStopSec"])
    assert f"TimeoutStopSec={stop_timeout}" in section, "the doc states the unit's stop timeout"
    example = re.search(r"DATAHUB_EXECUTOR_DRAIN_TIMEOUT=(\d+):\n#\s+\[Service\]\n#\s+TimeoutStopSec=(\d+)", section)
    assert example and "systemctl edit datahub-executor" in section, "no drop-in for a longer drain"
    drain, raised = map(int, example.groups())
    assert drain > stop_timeout and raised - drain == stop_timeout - 300, "the same margin as the unit's"


def install(root: Path, *args: str, python: str | None = None) -> subprocess.CompletedProcess:
    """install.sh --root ROOT of this checkout, with PYTHON=PYTHON (the system's by default)."""
    python = python or SERVICE_PYTHON
    if python is None:
        pytest.fail("no Python 3.10 or newer at /usr/bin/python3 or /usr/local/bin/python3 for the service")
    # One at a time: pip builds the package in the checkout's own build/ directory, and two
    # builds at once (two test workers) trip over each other's files there.
    with open("/tmp/dhx-install-sh.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run([str(INSTALL), "--root", str(root), "--package", str(ROOT), *args],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": python})


def passwd_entry(root: Path, name: str) -> list[str] | None:
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


def test_install_script_installs_into_a_root_is_idempotent_and_keeps_the_environment_file(tmp_path):
    root = tmp_path / "root"
    first = install(root)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (root / "etc/systemd/system/datahub-executor.service").read_text() == UNIT.read_text()
    conf = root / "etc/sysusers.d/datahub-executor.conf"
    assert conf.read_text() == (ROOT / "systemd/datahub-executor.sysusers").read_text()
    assert not (root / "etc/passwd").exists(), "a staging tree gets no user database"
    assert f"the task user {TASK_USER} is not created there" in first.stderr
    env_file = root / "etc/datahub-executor/executor.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    template = env_file.read_text()
    for setting in SETTINGS:
        assert setting.env in template
    # The installed CLI validates the template once the required values are filled in.
    filled = template.replace("DATAHUB_GMS_URL=\n", "DATAHUB_GMS_URL=https://acme.acryl.io/gms\n") \
                     .replace("DATAHUB_GMS_TOKEN=\n", "DATAHUB_GMS_TOKEN=x\n") \
                     .replace("DATAHUB_EXECUTOR_POOL_ID=\n", "DATAHUB_EXECUTOR_POOL_ID=remote\n")
    env_file.write_text(filled)
    settings = load_settings({}, file=str(env_file))
    assert settings.pool_id == "remote" and settings.ingestion_max_workers == 4
    installed = root / "opt/datahub-executor/venv/bin/datahub-executor"
    unset = subprocess.run([str(installed), "run"], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert unset.returncode == 2 and "DATAHUB_GMS_URL is not set" in unset.stderr
    # The same tree as an operating system's: the second run (an upgrade) creates the task user
    # there and leaves the environment file as it is.
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    again = install(root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "kept" in again.stdout and env_file.read_text() == filled, "the environment file is untouched"
    name, _, uid, gid, _, home, shell = passwd_entry(root, TASK_USER)
    assert 0 < int(uid) < 1000, "a system user"
    assert shell == "/usr/sbin/nologin" and home == "/nonexistent", "no login shell, no home"
    assert f"{TASK_USER}:x:{gid}:" in (root / "etc/group").read_text(), "its own group"
    assert passwd_entry(root, "root") == ["root", "x", "0", "0", "root", "/root", "/bin/bash"]
    # What install.sh runs again on every upgrade changes nothing once the user exists.
    users = (root / "etc/passwd").read_text()
    subprocess.run(["systemd-sysusers", "--root", str(root), str(conf)], check=True, capture_output=True, timeout=60)
    assert (root / "etc/passwd").read_text() == users


OLD_PYTHONS = [p for p in _pythons("/usr/bin/python3.[6-9]", "/usr/local/bin/python3.[6-9]",
                                   "/root/.pyenv/versions/3.[6-9].*/bin/python3")
               if (_python_version(p) or (3, 10)) < (3, 10)]


def test_install_refuses_a_python_older_than_3_10_before_it_installs_anything(tmp_path):
    """The package needs Python 3.10 (setup.cfg): install.sh made the venv with an older PYTHON,
    then failed at the package install, and every later run kept that venv."""
    if not OLD_PYTHONS:
        pytest.skip("no Python older than 3.10 on this host")
    old = OLD_PYTHONS[-1]
    root = tmp_path / "root"
    refused = install(root, "--datahub-version", "", python=old)
    major, minor = _python_version(old)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"install.sh: PYTHON={old} is Python {major}.{minor}; the executor needs 3.10 or "
                                      "newer: install one and run again with PYTHON= naming it (such as "
                                      "PYTHON=/usr/bin/python3.11)")
    assert not root.exists(), "install.sh wrote into the root before it refused"


def test_install_refuses_a_python_under_a_home_directory_which_the_unit_hides(tmp_path):
    """ProtectHome=yes hides /home, /root and /run/user from the service: a venv whose Python is
    there (pyenv's, conda's) installs, and the service then cannot exec it. Refused, whatever the
    path PYTHON names links to it by."""
    hidden = [p for p in (os.path.realpath(sys.executable), *_pythons("/root/.pyenv/versions/3.1[0-9]*/bin/python3",
                                                                       "/home/*/.pyenv/versions/3.1[0-9]*/bin/python3"))
              if os.path.realpath(p).startswith(HOME_DIRECTORIES) and (_python_version(p) or (0, 0)) >= (3, 10)]
    if not hidden:
        pytest.skip("no Python 3.10 or newer under /home or /root on this host")
    link = tmp_path / "python3"
    link.symlink_to(hidden[0])
    root = tmp_path / "root"
    refused = install(root, "--datahub-version", "", python=str(link))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"install.sh: PYTHON={link} is under a home directory "
                                     f"({os.path.realpath(hidden[0])}): the unit's ProtectHome=yes hides /home, /root "
                                     "and /run/user from the service, which could not start it;"), refused.stderr
    assert not root.exists(), "install.sh wrote into the root before it refused"


@pytest.mark.parametrize("made_with", ["an older Python", "a Python since removed"])
def test_running_install_again_makes_again_a_venv_made_with_another_python(tmp_path, made_with):
    """A venv made by an earlier run with another Python (too old, or one a system upgrade took
    away) was kept by every later run: pyvenv.cfg was all install.sh looked at. Made again with
    PYTHON, the install goes through and the service's executor starts."""
    root = tmp_path / "root"
    venv = root / "opt/datahub-executor/venv"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    if made_with == "an older Python":
        if not OLD_PYTHONS:
            pytest.skip("no Python older than 3.10 on this host")
        subprocess.run([uv, "venv", "--quiet", "--relocatable", "--python", OLD_PYTHONS[-1], str(venv)], check=True,
                       timeout=120)
    else:
        gone = tmp_path / "gone" / "python3"
        gone.parent.mkdir()
        gone.symlink_to(SERVICE_PYTHON)
        subprocess.run([uv, "venv", "--quiet", "--relocatable", "--python", str(gone), str(venv)], check=True, timeout=120)
        gone.unlink()
    again = install(root, "--datahub-version", "")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{venv} was made with" in again.stderr and "making it again" in again.stderr
    assert (venv / "bin/python").resolve() == Path(SERVICE_PYTHON).resolve()
    ran = subprocess.run([str(venv / "bin/datahub-executor"), "settings-table"], capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr[-2000:]


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """One install.sh --root run, shared by the tests that only read what it installed (session
    scope: other modules' tests may run between them on their worker)."""
    root = tmp_path_factory.mktemp("installed") / "root"
    result = install(root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root


def documented_vm_commands() -> list[list[str]]:
    """The commands of docs/operations.md that run the installed executor on a VM (sudo dropped),
    split as the shell would."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    commands = [shlex.split(line) for line in re.findall(r"sudo (/opt/datahub-executor/\S+ [^`\n#]*)", doc)]
    assert commands, "docs/operations.md shows no command of the installed executor"
    return commands


def test_the_unit_and_the_documented_commands_run_what_install_sh_installs(installed):
    """What install.sh puts on the machine is what the unit starts and what the operator is told
    to run: each documented command is run, its paths moved into the install root."""
    exec_start = shlex.split(unit_settings()["ExecStart"])
    assert (installed / exec_start[0].lstrip("/")).is_file(), f"ExecStart={exec_start[0]}: install.sh installs no such file"
    for argv in documented_vm_commands():
        rooted = [str(installed / word.lstrip("/")) if word.startswith(("/opt/", "/etc/")) else word for word in argv]
        assert Path(rooted[0]).is_file(), f"docs/operations.md runs {argv[0]}, which install.sh does not install"
        # The environment file as install.sh leaves it: the check stops at the first missing setting.
        ran = subprocess.run(rooted, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert ran.returncode == 2 and "DATAHUB_GMS_URL is not set" in ran.stderr, (argv, ran.stderr)


def test_the_installed_executor_runs_a_recipe_that_names_no_version(installed, tmp_path):
    """DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION is `native` by default: a recipe naming no version runs
    the acryl-datahub installed beside the executor, so install.sh must install it, as the image
    does. The installed executor, as the unit starts it, runs the first hour's recipe for real."""
    from controlplane.testing import running_controlplane
    from executor.testing import ExecutorProcess, mock_recipe

    exec_start = shlex.split(unit_settings()["ExecStart"])
    argv = [str(installed / exec_start[0].lstrip("/")), *exec_start[1:]]
    out = tmp_path / "events.json"
    with running_controlplane(tmp_path / "controlplane") as cp:
        cp.create_pool("vpc-a", default=True, visibility_timeout_s=30)
        env = {"PATH": "/usr/bin:/bin", "DATAHUB_GMS_URL": cp.gms_url,
               "DATAHUB_GMS_TOKEN": cp.create_executor_token(["vpc-a"]), "DATAHUB_EXECUTOR_POOL_ID": "vpc-a",
               "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path / "work"),
               "DATAHUB_EXECUTOR_VENV_CACHE_DIR": str(tmp_path / "venvs"),
               "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0", "DATAHUB_EXECUTOR_SANDBOX_MODE": "none",
               # This host has no datahub-task user (the unit's host gets one from install.sh).
               "DATAHUB_EXECUTOR_TASK_USER": "none", "DATAHUB_EXECUTOR_TASK_PRIVATE_TMP": "false"}
        executor = ExecutorProcess(env, argv=argv)
        try:
            executor.wait_for_line("Starting datahub executor worker", timeout_s=60)
            execution = cp.run_source(cp.create_source("mock", mock_recipe(out), pool_id="vpc-a")["id"])
            done = cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)
            assert done["status"] == "SUCCESS", cp.logs(execution["id"])["log"][-3000:]
            assert out.exists()
        finally:
            executor.stop()


def test_a_tree_staged_with_root_runs_wherever_it_is_unpacked(installed):
    """--root DIR stages a package's payload (or an image's tree): on the target it lives at /, not
    at DIR, so the venv's scripts must not name DIR. The staged tree, moved, runs its executor
    (as the unit starts it) and the datahub CLI that native recipes run."""
    moved = installed.with_name("unpacked")
    installed.rename(moved)
    try:
        bin_dir = moved / "opt/datahub-executor/venv/bin"
        for argv in ([bin_dir / "datahub-executor", "settings-table"], [bin_dir / "datahub", "--help"]):
            try:
                ran = subprocess.run([str(word) for word in argv], capture_output=True, text=True, timeout=120,
                                     env={"PATH": "/usr/bin:/bin"})
            except OSError as exc:
                interpreter = argv[0].read_text().splitlines()[0]
                pytest.fail(f"{argv[0].name} of the moved tree cannot start ({exc.strerror}): it begins {interpreter}")
            assert ran.returncode == 0, f"{argv[0].name} of the moved tree: {ran.stderr[-2000:]}"
    finally:
        moved.rename(installed)


def test_install_sh_installs_the_images_datahub_cli_version():
    """One native CLI version, whichever way the executor is deployed."""
    dockerfile = re.search(r"^ARG ACRYL_DATAHUB_VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    script = re.search(r'^datahub_version="([^"]*)"$', INSTALL.read_text(), re.M).group(1)
    assert script == dockerfile


def task_tmp_under(restrict_namespaces: str, tmp_path: Path) -> tuple[bool, str]:
    """A task started with a private /tmp by the executor's sandbox (as every runner starts one),
    in a process under the seccomp filter of RestrictNamespaces=<restrict_namespaces>
    (restrict_namespaces.py): (whether the task's /tmp was its own, what the sandbox says of it).
    The task looks for a file this test leaves in the host's /tmp."""
    import json
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="dhx-host-tmp-") as marker:
        wrapper = [sys.executable, str(Path(__file__).with_name("restrict_namespaces.py")), restrict_namespaces]
        result = subprocess.run([*wrapper, sys.executable, "-m", "sandbox", "run", "--mode", "none", "--private-tmp",
                                 "--json", "--", "/bin/sh", "-c", f"test ! -e {marker.name}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    outcome = json.loads(result.stdout.splitlines()[-1])
    return outcome["exit_code"] == 0, outcome["isolation"]["private_tmp"]


def test_the_units_namespace_restriction_leaves_tasks_their_private_tmp(tmp_path):
    """Tasks get a private /tmp by default (DATAHUB_EXECUTOR_TASK_PRIVATE_TMP, decision 33), made
    with unshare(CLONE_NEWNS | CLONE_NEWIPC): the unit must let the executor make mount and IPC
    namespaces."""
    assert next(s for s in SETTINGS if s.env == "DATAHUB_EXECUTOR_TASK_PRIVATE_TMP").default == "true"
    private, described = task_tmp_under(unit_settings().get("RestrictNamespaces", "no"), tmp_path)
    assert private, described


def test_the_namespace_restriction_really_applies(tmp_path):
    private, described = task_tmp_under("yes", tmp_path)
    assert not private and "unshare(CLONE_NEWNS | CLONE_NEWIPC) failed: Operation not permitted" in described, described
