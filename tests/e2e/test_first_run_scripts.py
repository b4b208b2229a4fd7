"""What a new user meets first: `bin/quickstart` and `bin/test` on a fresh machine, and the
quickstart's port on a quick restart."""
from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.quickstart import _free_or

from .conftest import ROOT


def _tcp_states(port: int) -> set[str]:
    """The kernel's states (hex codes of /proc/net/tcp) of IPv4 sockets whose local port is `port`."""
    states = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            states.add(fields[3])
    return states


TIME_WAIT = "06"


def test_the_quickstart_keeps_its_port_while_the_previous_runs_connections_are_in_time_wait():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first, so its end of the connection goes to TIME_WAIT
        client.close()
    assert TIME_WAIT in _tcp_states(port)
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the probe used to do: the port looked taken

    assert _free_or(port) == port


def test_a_port_something_listens_on_gives_a_different_free_port():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]

        chosen = _free_or(taken)

        assert chosen != taken
        with socket.socket() as check:
            check.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            check.bind(("127.0.0.1", chosen))
            check.listen()


# The first run of bin/quickstart and bin/test. The scripts run in a toy checkout: a copy of bin/
# next to a setup.cfg with one tiny package, so a real .venv is created with real pip and uv
# without touching this checkout's. Debian packages are not really installed: apt-get (and sudo,
# id) are stand-ins on a PATH that hides the tools the scripts look for.

BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
STEP = re.compile(r"^\[setup\] (?P<label>.+) \.\.\. (?P<summary>.+) \((?P<seconds>\d+\.\d) s\)$")
TESTS_ONLY = {"chromium", "systemd"}
TOY_SETUP_CFG = """\
[metadata]
name = toy-checkout
version = 0.1.0

[options]
packages = controlplane

[options.extras_require]
controlplane =
test =
    pytest
"""


def run(checkout: Path, *argv: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHON", "CI")}
    environment.update(PYTHON=BASE_PYTHON, **env)
    if path is not None:
        environment["PATH"] = path
    return subprocess.run([str(checkout / argv[0]), *argv[1:]], cwd=checkout, env=environment,
                          capture_output=True, text=True, timeout=600)


def setup_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("[setup]")]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A toy checkout after its first bin/bootstrap, and what that run printed."""
    checkout = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT / "bin", checkout / "bin")
    (checkout / "setup.cfg").write_text(TOY_SETUP_CFG)
    shutil.copy(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    (checkout / "controlplane").mkdir()
    (checkout / "controlplane" / "__init__.py").write_text("")
    (checkout / "controlplane" / "quickstart.py").write_text("import sys\nprint('toy quickstart', *sys.argv[1:])\n")
    return checkout, run(checkout, "bin/bootstrap")


@pytest.fixture
def checkout(first_run) -> Path:
    return first_run[0]


def path_without(tmp_path: Path, hidden: set[str], **stubs: str) -> str:
    """A PATH holding every command of this one except `hidden`, plus shell-script `stubs`."""
    bindir = tmp_path / "path"
    bindir.mkdir()
    for name, body in stubs.items():
        (bindir / name).write_text("#!/bin/sh\n" + body)
        (bindir / name).chmod(0o755)
    for directory in os.environ["PATH"].split(os.pathsep) + ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]:
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = bindir / entry.name
            if entry.name not in hidden and not target.exists() and not target.is_symlink():
                target.symlink_to(entry.path)
    return str(bindir)


def apt_stub(record: Path) -> str:
    """apt-get that writes its arguments (and DEBIAN_FRONTEND) to `record` and answers as apt does."""
    return (f'echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> {record}\n'
            'case "$*" in\n'
            '  *" update"*) echo "Fetched 9,143 kB in 2s (4,110 kB/s)" ;;\n'
            '  *" install "*) echo "0 upgraded, 7 newly installed, 0 to remove and 0 not upgraded." ;;\n'
            'esac\n')


def installed_packages(record: Path) -> set[str]:
    (install,) = [line for line in record.read_text().splitlines() if " install " in line]
    return set(install.split(" --no-install-recommends ", 1)[1].split())


def test_a_first_run_prints_one_line_per_step_with_its_duration_and_counts_not_the_tools_output(first_run):
    checkout, done = first_run
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    steps = [STEP.match(line) for line in lines[:-1]]
    assert all(steps), lines
    assert [step["label"] for step in steps] == [
        f"creating the virtualenv .venv (Python {platform.python_version()})",
        "installing uv into .venv",
        "installing Python packages: -e .[controlplane,test]",
    ]
    assert re.fullmatch(r"installed uv-[\d.]+", steps[1]["summary"])
    assert re.fullmatch(r"(\d+) of \1 packages installed", steps[2]["summary"])  # pytest and its few dependencies
    assert re.fullmatch(r"\[setup\] ready in \d+\.\d s \(each tool's output: \.cache/setup/\)", lines[-1])
    assert done.stdout == ""
    assert "Successfully installed uv" in (checkout / ".cache" / "setup" / "uv.log").read_text()


def test_a_second_run_says_it_is_up_to_date_in_one_line(checkout):
    done = run(checkout, "bin/bootstrap")

    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "[setup] up to date (Debian packages present, .venv matches setup.cfg and pyproject.toml)"]


def test_a_changed_setup_cfg_reinstalls_the_python_packages_then_it_is_up_to_date_again(checkout):
    with (checkout / "setup.cfg").open("a") as setup_cfg:
        setup_cfg.write(f"# changed by {__name__}\n")

    changed = run(checkout, "bin/bootstrap")
    again = run(checkout, "bin/bootstrap")

    assert [STEP.match(line)["label"] for line in changed.stderr.splitlines()[:-1]] == [
        "installing Python packages: -e .[controlplane,test]"], changed.stderr
    assert len(again.stderr.splitlines()) == 1 and "up to date" in again.stderr


def test_a_failing_install_shows_the_end_of_the_tools_output_and_where_the_rest_is(checkout):
    setup_cfg = checkout / "setup.cfg"
    good = setup_cfg.read_text()
    setup_cfg.write_text(good.replace("[options]\n", "[options]\ninstall_requires = not a requirement ===\n"))
    try:
        done = run(checkout, "bin/bootstrap")
    finally:
        setup_cfg.write_text(good)

    assert done.returncode != 0
    lines = done.stderr.splitlines()
    failed = next(i for i, line in enumerate(lines) if "FAILED after" in line)
    assert lines[failed].startswith("[setup] installing Python packages: -e .[controlplane,test] ... FAILED after ")
    tail = lines[failed + 1:-1]
    assert 0 < len(tail) <= 25 and all(line.startswith("    ") for line in tail)
    assert "install_requires" in "\n".join(tail)  # the tool's own words, enough to act on
    assert lines[-1] == f"[setup] full output: {checkout}/.cache/setup/python-packages.log"
    restored = run(checkout, "bin/bootstrap")
    assert len(restored.stderr.splitlines()) == 1 and "up to date" in restored.stderr


def test_the_quickstart_installs_what_the_product_runs_with_and_none_of_the_tests_tools(checkout, tmp_path):
    record = tmp_path / "apt-get.calls"
    path = path_without(tmp_path, {"setpriv", "chromium", "chromium-browser", "systemd-analyze", "apt-get"},
                        **{"apt-get": apt_stub(record)})

    done = run(checkout, "bin/quickstart", "--exit-after-run", path=path)

    assert done.returncode == 0, done.stderr
    assert done.stdout == "toy quickstart --exit-after-run\n"
    packages = installed_packages(record)
    assert "util-linux" in packages and not packages & TESTS_ONLY, packages
    assert all(line.startswith("DEBIAN_FRONTEND=noninteractive ") for line in record.read_text().splitlines())
    lines = setup_lines(done)
    assert [STEP.match(line)["summary"] for line in lines[:2]] == [
        "fetched 9,143 kB", "7 packages installed, dependencies included"]
    assert lines[1].startswith(f"[setup] installing Debian packages: {' '.join(sorted(packages))} ... ")
    assert len(lines) == 3 and lines[2].startswith("[setup] ready in ")


def test_bin_test_also_installs_what_the_tests_drive(checkout, tmp_path):
    record = tmp_path / "apt-get.calls"
    path = path_without(tmp_path, {"setpriv", "chromium", "chromium-browser", "systemd-analyze", "apt-get"},
                        **{"apt-get": apt_stub(record)})

    done = run(checkout, "bin/test", "--version", path=path)

    assert done.returncode == 0, done.stderr
    assert "pytest" in done.stdout + done.stderr
    assert {"util-linux", *TESTS_ONLY} <= installed_packages(record)


def test_with_nothing_missing_neither_apt_nor_sudo_runs(checkout, tmp_path):
    calls = tmp_path / "calls"
    present = {name: "exit 0\n" for name in ("setpriv", "chromium", "systemd-analyze")}
    path = path_without(tmp_path, set(), id="echo 1000\n", sudo=f'echo "sudo $*" >> {calls}\nexit 1\n',
                        **{"apt-get": f'echo "apt-get $*" >> {calls}\nexit 1\n'}, **present)

    done = run(checkout, "bin/test", "--version", path=path)

    assert done.returncode == 0, done.stderr
    assert setup_lines(done) == [
        "[setup] up to date (Debian packages present, .venv matches setup.cfg and pyproject.toml)"]
    assert not calls.exists()


def test_a_user_installs_missing_packages_through_sudo(checkout, tmp_path):
    record, sudo_calls = tmp_path / "apt-get.calls", tmp_path / "sudo.calls"
    path = path_without(tmp_path, {"setpriv"}, id="echo 1000\n",
                        sudo=f'echo "$*" >> {sudo_calls}\n[ "$1" = -n ] && exit 0\nexec "$@"\n',
                        **{"apt-get": apt_stub(record)})

    done = run(checkout, "bin/quickstart", path=path)

    assert done.returncode == 0, done.stderr
    assert installed_packages(record) == {"util-linux"}
    assert [line.split()[0] for line in sudo_calls.read_text().splitlines()] == ["-n", "env", "env"]


def test_a_user_without_sudo_is_told_what_to_run_as_root(checkout, tmp_path):
    path = path_without(tmp_path, {"setpriv", "sudo", "apt-get"}, id="echo 1000\n")

    done = run(checkout, "bin/quickstart", path=path)

    assert done.returncode == 1
    assert "needs root, and sudo is not installed" in done.stderr
    assert "apt-get install --no-install-recommends util-linux" in done.stderr
    assert "toy quickstart" not in done.stdout


def test_ci_runs_the_readmes_test_command_with_ci_true(tmp_path):
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (test_command,) = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.startswith("bin/test")]
    shutil.copytree(ROOT / ".ci", tmp_path / ".ci")
    (tmp_path / "bin").mkdir()
    (tmp_path / test_command).write_text('#!/bin/sh\necho "$(realpath "$0") $# CI=$CI"\n')
    (tmp_path / test_command).chmod(0o755)

    for ci in ("", "1", "true"):
        done = subprocess.run([str(tmp_path / ".ci" / "run")], env={**os.environ, "CI": ci},
                              capture_output=True, text=True, timeout=30)
        assert done.stdout == f"{tmp_path / test_command} 0 CI=true\n"
