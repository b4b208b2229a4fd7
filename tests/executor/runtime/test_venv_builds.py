"""Virtualenv builds for real: uv, a package index on 127.0.0.1, install-time code run in the
sandbox as an unprivileged task user, and what the (root) executor does with the venv after.

The build's user owns the venv's directory while it builds, so install-time code can leave
anything in it; nothing the executor does to the venv afterwards may follow what it left."""
from __future__ import annotations

import fcntl
import functools
import http.server
import json
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from executor.runtime.builds import ConfinedBuilder
from executor.runtime.rejection import TaskRejected
from executor.runtime.venvs import VenvCache, plugins_for, run_locally
from sandbox import TaskUser
from tests.e2e.probe_packages import PackageServer, fake_datahub_wheel, sdist_with_backend
from tests.sandbox.conftest import TASK_PYTHON, _open_or_skip

ROOT = Path(__file__).resolve().parents[3]
BUILD_USER = TaskUser(61234, 61234)

# A build backend that, while it builds, leaves a link named as the venv's old ready marker (in the
# venv) pointing at a file only root may write, and tries to write the real one beside the venv
# (HOME is the venv being built).
PLANTING_BACKEND = '''
import os
import zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    home = os.environ["HOME"]
    os.symlink(VICTIM, os.path.join(home, ".ready"))
    try:  # the venv's real marker, beside it: the build must not be able to write it
        with open(home.rstrip("/") + ".ready", "w") as marker:
            marker.write('{"planted": true}')
    except PermissionError:
        pass
    name = "dhxplant-0.1-py3-none-any.whl"
    files = {"dhxplant-0.1.dist-info/METADATA": "Metadata-Version: 2.1\\nName: dhxplant\\nVersion: 0.1\\n",
             "dhxplant-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: dhx\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
        record = [*files, "dhxplant-0.1.dist-info/RECORD"]
        wheel.writestr("dhxplant-0.1.dist-info/RECORD", "".join(f"{path},,\\n" for path in record))
    return name

def get_requires_for_build_wheel(config_settings=None):
    return []
'''


def planting_sdist(directory: Path, victim: Path) -> str:
    return sdist_with_backend(directory, "dhxplant", f"VICTIM = {str(victim)!r}\n{PLANTING_BACKEND}".encode())


@pytest.fixture
def build_as_task_user(tmp_path):
    """A VenvCache whose builds run confined as BUILD_USER, under a directory that user can reach
    (not below /tmp/pytest-of-root, which is root's alone), and a package server."""
    if os.geteuid() != 0:
        pytest.skip("builds run as another user only when the executor runs as root")
    if TASK_PYTHON is None:
        pytest.skip("no Python interpreter here that an unprivileged task user may run")
    sandbox = _open_or_skip()
    cache_dir = ROOT / ".cache" / f"venv-builds-{uuid.uuid4().hex[:8]}"
    server = PackageServer(tmp_path / "packages")
    try:
        yield VenvCache(str(cache_dir), python=TASK_PYTHON, builder=ConfinedBuilder(sandbox)), server, cache_dir
    finally:
        server.stop()
        shutil.rmtree(cache_dir, ignore_errors=True)
        leftovers = sandbox.sweep()
        sandbox.close()
        assert not leftovers, f"a build left task cgroups behind: {leftovers}"


def test_install_time_code_can_neither_write_the_ready_marker_nor_make_the_executor_write_through_a_link(
        build_as_task_user, tmp_path):
    """The marker was in the venv, which the build's user owns while it builds: install-time code
    could write it, and a venv still being built (or whose build died) was handed to tasks as
    built. It is beside the venv now, in the cache directory the executor alone writes; a link the
    build leaves in the venv under the old name is inert."""
    venvs, server, _ = build_as_task_user
    victim = tmp_path / "root-only"
    victim.write_text("untouched")
    os.chmod(victim, 0o600)
    sdist = planting_sdist(tmp_path / "packages", victim)
    requirement = f"dhxplant @ {server.url(sdist)}"
    cli = venvs.datahub_cli(server.url(server.wheel), [], [requirement], BUILD_USER)
    venv = Path(cli).parents[1]
    assert victim.read_text() == "untouched", "the executor wrote, as root, through a link install-time code made"
    assert os.path.islink(venv / ".ready"), "the build's backend did not run"
    marker = venv.with_name(venv.name + ".ready")
    assert json.loads(marker.read_text())["requirements"][-1] == requirement, "the marker is not the executor's"
    assert os.stat(marker).st_uid == os.geteuid()


# A project on the executor's disk calling itself acryl-datahub, built by an in-tree backend (no
# package index needed): what a source type of `x] @ file:///<it>#` made uv install.
LOCAL_PROJECT_BACKEND = '''
import os
import zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    dist = "acryl_datahub-0.0.2.dist-info"
    files = {"dhx_from_a_source_type.py": "",
             f"{dist}/METADATA": "Metadata-Version: 2.1\\nName: acryl-datahub\\nVersion: 0.0.2\\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\\nGenerator: dhx\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
    name = "acryl_datahub-0.0.2-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
        wheel.writestr(f"{dist}/RECORD", "".join(f"{path},,\\n" for path in [*files, f"{dist}/RECORD"]))
    return name

def get_requires_for_build_wheel(config_settings=None):
    return []
'''


def test_a_source_type_carrying_requirement_text_installs_nothing(tmp_path):
    project = tmp_path / "project"  # no dot in the path: a dotted type is a class, never installed
    project.mkdir()
    (project / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "build_backend"\n'
                                            'backend-path = ["."]\n\n[project]\nname = "acryl-datahub"\nversion = "0.0.2"\n')
    (project / "build_backend.py").write_text(LOCAL_PROJECT_BACKEND)
    assert "." not in str(project)
    venvs = VenvCache(str(tmp_path / "venvs"))
    recipe = {"source": {"type": "x] @ file://" + str(project) + "#"}}
    with pytest.raises(TaskRejected) as refused:
        venvs.datahub_cli("1.7.0.17", plugins_for(recipe), [], None)
    assert refused.value.reason == "INVALID_RECIPE"
    assert "source type" in str(refused.value)
    assert not list((tmp_path / "venvs").glob("*/lib/*/site-packages/dhx_from_a_source_type.py"))


@pytest.mark.parametrize("plugin", ["mysql]==0 ; python_version<'0'", "-e /", "mysql --index-url=http://x", "x]"])
def test_a_plugin_that_is_no_extra_name_is_refused_before_any_build(tmp_path, plugin):
    def no_build(step):
        raise AssertionError(f"a build ran for plugin {plugin!r}: {step.argv}")

    with pytest.raises(TaskRejected) as refused:
        VenvCache(str(tmp_path / "venvs"), builder=no_build).datahub_cli("1.7.0.17", [plugin], [], None)
    assert refused.value.reason == "INVALID_RECIPE"


@pytest.fixture
def local_cache(tmp_path):
    """A VenvCache building for real with uv, as this process's user, from a package server."""
    server = PackageServer(tmp_path / "packages")
    try:
        yield VenvCache(str(tmp_path / "venvs")), server
    finally:
        server.stop()


def _age(cli: str, days: int) -> None:
    venv = Path(cli).parents[1]
    marker = venv.with_name(venv.name + ".ready")
    then = time.time() - days * 86400
    os.utime(marker, (then, then))


def test_the_next_build_evicts_a_venv_unused_for_a_month_but_never_one_a_running_task_holds(local_cache):
    venvs, server = local_cache
    wheel = server.url(server.wheel)
    released = venvs.datahub_cli(wheel, ["a"], [])
    running = venvs.datahub_cli(wheel, ["b"], [])
    venvs.release(released)  # its task ended
    _age(released, 40)
    _age(running, 40)  # a task that has run for as long

    venvs.datahub_cli(wheel, ["c"], [])  # a build: the cache grows here

    assert not Path(released).parents[1].exists(), "a venv nobody used for 40 days is still in the cache"
    assert Path(running).exists(), "a venv a running task holds was evicted under it"
    venvs.release(running)
    assert venvs.evict_unused() == [Path(running).parents[1].name]


def test_a_latest_of_a_past_day_and_what_a_dead_build_left_are_evicted_while_a_build_in_progress_is_not(local_cache):
    venvs, server = local_cache
    latest = venvs.datahub_cli("latest", [], [f"acryl-datahub @ {server.url(server.wheel)}"])
    venvs.release(latest)
    dead = venvs.cache_dir / ("d" * 20)  # a build whose executor was killed: no marker, no lock held
    (dead / "lib").mkdir(parents=True)
    building = venvs.cache_dir / ("b" * 20)
    (building / "lib").mkdir(parents=True)

    with open(venvs.cache_dir / f"{building.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build of another task, in progress
        tomorrow = time.time() + 86400
        evicted = venvs.evict_unused(now=tomorrow)

    assert sorted(evicted) == sorted([Path(latest).parents[1].name, dead.name])
    assert building.exists(), "eviction removed a venv while it was being built"


def test_tasks_needing_the_same_new_venv_at_once_share_one_build_and_hold_it(local_cache):
    venvs, server = local_cache
    builds = []

    def counting(step):
        if step.argv[1] == "venv":
            builds.append(step.cwd)
        return run_locally(step)

    venvs.builder = counting
    got = []
    threads = [threading.Thread(target=lambda: got.append(venvs.datahub_cli(server.url(server.wheel), [], [])))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(got) == 3 and len(set(got)) == 1 and Path(got[0]).exists()
    assert len(builds) == 1, f"{len(builds)} builds ran in {builds[0]}"
    assert venvs.evict_unused(now=time.time() + 365 * 86400) == [], "a venv three tasks hold was evicted"
    for cli in got:
        venvs.release(cli)
    assert venvs.evict_unused(now=time.time() + 365 * 86400) == [Path(got[0]).parents[1].name]


def test_a_build_that_installs_no_datahub_command_fails_and_is_not_kept(local_cache):
    """It was marked ready: every run of the source then failed to start its `datahub` until the
    venv was evicted a month later."""
    venvs, server = local_cache
    wheel = server.url(fake_datahub_wheel(server.directory, "0.0.2", command=False))
    with pytest.raises(TaskRejected) as refused:
        venvs.datahub_cli(wheel, [], [])
    assert refused.value.reason == "VENV_INSTALL_FAILED" and "has no datahub command" in str(refused.value)
    assert not venvs.venv_dir(wheel, [], []).exists(), "the next run would not build it again"


@pytest.mark.parametrize("version", ["1.0; rm -rf /", "1.7.0.17\n", "--index-url=http://evil/x.whl", "-e /",
                                     "/srv/acryl_datahub-1.0-py3-none-any.whl",
                                     "https://h/a.whl ; python_version < '0' or os_name == 'x.whl",
                                     "https://h/a.whl\t--index-url=http://evil/x.whl"])
def test_a_version_that_is_no_version_nor_one_wheel_url_is_refused_before_any_build(tmp_path, version):
    def no_build(step):
        raise AssertionError(f"a build ran for version {version!r}: {step.argv}")

    with pytest.raises(TaskRejected) as refused:
        VenvCache(str(tmp_path / "venvs"), builder=no_build).datahub_cli(version, [], [], None)
    assert refused.value.reason == "UNKNOWN_VERSION"


class StalledWheels(http.server.SimpleHTTPRequestHandler):
    """Serves the package directory; a request for a wheel waits STALL first (a slow network)."""

    stall = threading.Event()

    def do_GET(self):
        if self.path.endswith(".whl"):
            self.stall.wait(30)
        super().do_GET()

    def log_message(self, *args):
        pass


def _kill_the_install(cache_dir: Path, deadline_s: float = 20) -> int | None:
    """SIGKILL the `uv pip install` building under CACHE_DIR, once it runs; its pid. Only uv
    itself: the sandbox's held wrapper (setpriv, bash) carries the same arguments until it execs
    uv, and killing it is a start that failed, not a build killed halfway."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "uv" and b"install" in argv and any(str(cache_dir).encode() in arg for arg in argv):
                os.kill(int(pid), signal.SIGKILL)
                return int(pid)
        time.sleep(0.02)
    return None


def test_a_build_killed_halfway_fails_its_task_clearly_and_the_next_task_builds_it_again(build_as_task_user, tmp_path):
    venvs, server, cache_dir = build_as_task_user
    handler = functools.partial(StalledWheels, directory=str(tmp_path / "packages"))
    stalled = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=stalled.serve_forever, daemon=True).start()
    wheel = f"http://127.0.0.1:{stalled.server_address[1]}/{server.wheel}"
    killed = []
    killer = threading.Thread(target=lambda: killed.append(_kill_the_install(cache_dir)))
    killer.start()
    try:
        with pytest.raises(TaskRejected) as failed:
            venvs.datahub_cli(wheel, [], [], BUILD_USER)
        killer.join()
        assert killed[0] is not None, "the install never ran"
        assert failed.value.reason == "VENV_INSTALL_FAILED"
        assert "killed by signal 9" in str(failed.value), f"the run is not told what happened: {failed.value}"
        target = venvs.venv_dir(wheel, [], [])
        assert not target.exists(), "a half-made venv stayed in the cache"

        StalledWheels.stall.set()
        cli = venvs.datahub_cli(wheel, [], [], BUILD_USER)
        assert Path(cli).exists() and target.with_name(target.name + ".ready").exists()
    finally:
        StalledWheels.stall.set()
        stalled.shutdown()


def test_a_task_asking_for_a_venv_while_install_time_code_plants_a_marker_waits_for_the_build(tmp_path):
    """Install-time code wrote `.ready` in the venv it was building (its HOME): a second task
    needing the same venv took it at once, half built and unsealed, and the real build then
    failed on that marker and removed the venv the second task held."""
    planted, finish = threading.Event(), threading.Event()

    def planting(step):
        target = Path(step.cwd)
        if step.argv[1] == "venv":
            (target / "bin").mkdir(exist_ok=True)
            return 0, ""
        (target / ".ready").write_text("{}")  # what install-time code may write, as the build's user
        planted.set()
        finish.wait(10)
        cli = target / "bin" / "datahub"
        cli.write_text("#!/bin/sh\n")
        cli.chmod(0o755)
        return 0, ""

    venvs = VenvCache(str(tmp_path / "venvs"), builder=planting)
    first: list = []
    building = threading.Thread(target=lambda: first.append(venvs.datahub_cli("1.2.0", [], [])))
    building.start()
    assert planted.wait(10)
    second: list = []
    asking = threading.Thread(target=lambda: second.append(venvs.datahub_cli("1.2.0", [], [])))
    asking.start()
    asking.join(timeout=1.0)
    assert asking.is_alive() and not second, "a venv still being built was handed to a task"
    finish.set()
    building.join(timeout=10)
    asking.join(timeout=10)
    assert first and second == first and Path(second[0]).exists()


def test_a_marker_whose_venv_was_removed_by_hand_is_built_again(tmp_path, local_cache):
    venvs, server = local_cache
    wheel = server.url(server.wheel)
    cli = venvs.datahub_cli(wheel, [], [])
    venvs.release(cli)
    shutil.rmtree(Path(cli).parents[1])  # an operator's clean-up while no task runs
    again = venvs.datahub_cli(wheel, [], [])
    assert again == cli and Path(again).exists()


def test_what_the_build_wrote_is_synced_before_the_marker_says_ready(tmp_path, local_cache, monkeypatch):
    """No sync before the marker: after a power loss the marker could be on disk where the venv's
    files were empty, and each use kept that venv from eviction."""
    import executor.runtime.venvs as venvs_module

    venvs, server = local_cache
    target = venvs.venv_dir(server.url(server.wheel), [], [])
    marker = target.with_name(target.name + ".ready")
    events: list[str] = []
    sync_filesystem, fsync = venvs_module._sync_filesystem_of, os.fsync

    def recording_sync(path: Path) -> None:
        events.append(f"syncfs (marker there: {marker.exists()})")
        sync_filesystem(path)

    def recording_fsync(fd: int) -> None:
        events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}")
        fsync(fd)

    monkeypatch.setattr(venvs_module, "_sync_filesystem_of", recording_sync)
    monkeypatch.setattr(venvs_module.os, "fsync", recording_fsync)
    venvs.datahub_cli(server.url(server.wheel), [], [])
    assert events == ["syncfs (marker there: False)", f"fsync {marker}", f"fsync {venvs.cache_dir}"], events
