"""The container image, checked without a Docker engine (none runs here).

hadolint lints the Dockerfile. Then the Dockerfile is replayed on the host, instruction by
instruction: the build stage's COPY and RUN (deploy/docker/install-executor.sh into a fresh
virtualenv), the final stage's directories, ENV, USER, ENTRYPOINT and CMD, with every absolute
path of the image moved under one temporary directory and USER applied with setpriv. What runs is
the image's own entrypoint (datahub-executor-init, then `datahub-executor run`) as the image's unprivileged user,
against the real control plane, running a real `datahub ingest` with the CLI the image installs.

What the replay cannot show: the base image's own packages (the final stage's apt-get is checked
for what it installs, not run) and a read-only cgroup filesystem (the unprivileged user cannot
write this host's cgroups, which is the same effect).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.testing import running_controlplane
from executor.settings import SETTINGS
from tests.e2e.conftest import ExecutorProcess, free_port, mock_recipe

from .dockerfile import arg_defaults, healthcheck_command, stages

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = str(Path(sys.executable).parent / "hadolint")
IMAGE_UID = 10001
TASK_UID = 10002  # the user a root executor runs its tasks as
KNOWN_KEYWORDS = {"ARG", "ENV", "COPY", "RUN", "LABEL", "USER", "WORKDIR", "EXPOSE", "STOPSIGNAL", "HEALTHCHECK",
                  "ENTRYPOINT", "CMD"}
SETTING_DEFAULTS = {s.env: s.default for s in SETTINGS}


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([HADOLINT, "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing_in_the_dockerfile():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout


def test_hadolint_really_checks_it(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("apt-get install -y --no-install-recommends",
                                                     "apt-get install -y"))
    result = hadolint(broken)
    assert result.returncode != 0 and "DL3015" in result.stdout


def test_the_image_has_a_task_user_with_a_fixed_id_no_login_shell_and_no_home(tmp_path):
    """The final stage's groupadd and useradd, run for real (with --root) on an empty user database."""
    _, (_, final) = stages(DOCKERFILE)
    (run,) = final.all("RUN")
    commands = [shlex.split(part) for part in run.split("&&") if part.split()[0] in ("groupadd", "useradd")]
    assert [argv[0] for argv in commands] == ["groupadd", "useradd", "groupadd", "useradd"]
    (tmp_path / "etc").mkdir()
    for database in ("passwd", "group", "shadow", "gshadow"):
        (tmp_path / "etc" / database).write_text("")
    for program, *arguments in commands:
        subprocess.run([program, "--root", str(tmp_path), *arguments], check=True, capture_output=True, timeout=60)
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    assert int(users["datahub"][2]) == IMAGE_UID
    _, _, uid, gid, _, home, shell = users["datahub-task"]
    assert (int(uid), int(gid)) == (TASK_UID, TASK_UID)
    assert shell == "/usr/sbin/nologin" and home == "/nonexistent", "no login shell, no home"
    assert f"datahub-task:x:{TASK_UID}:" in (tmp_path / "etc/group").read_text(), "its own group"


class ReplayedImage:
    """The image's file system as a directory on the host: /x/y lives at root/x/y."""

    def __init__(self, root: Path) -> None:
        self.root = root
        _, (self.build, self.final) = stages(DOCKERFILE)

    def path(self, image_path: str) -> Path:
        assert image_path.startswith("/"), image_path
        return self.root / image_path.lstrip("/")

    def rewrite(self, text: str) -> str:
        """Image paths in a command or value, moved under the root."""
        return re.sub(r"(?<![\w$}])/(src|opt|var|mnt)(?=/|\b)", lambda m: f"{self.root}/{m.group(1)}", text)

    def build_stage(self) -> None:
        for argument in self.build.all("COPY"):
            *sources, destination = argument.split()
            for source in sources:
                target = self.path(destination) / Path(source).name if destination.endswith("/") else self.path(destination)
                target.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(ROOT / source, target)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUB_", "VIRTUAL_ENV", "PYTHON"))}
        env.update(self.build.env({}))
        env["PATH"] = f"{self._world_readable_python()}:{env['PATH']}"
        # The image disables the installers' caches to keep its layers small; here the host's
        # caches make the install take seconds. What gets installed is the same.
        env.pop("UV_NO_CACHE", None)
        env.pop("PIP_NO_CACHE_DIR", None)
        args = arg_defaults(self.build)
        for command in self.build.all("RUN"):
            command = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], command)
            subprocess.run(["/bin/sh", "-c", self.rewrite(command)], env=env, check=True, timeout=900)

    def _world_readable_python(self) -> Path:
        """A directory whose python3 the image's user can run. The image's Python lives in
        /usr/local; this host's may live under /root (pyenv), which that user cannot reach, and
        a venv's scripts point at the Python that made it. Debian's /usr/bin/python3 can."""
        shim = self.root / "python-shim"
        shim.mkdir(exist_ok=True)
        for candidate in (Path("/usr/local/bin/python3"), Path("/usr/bin/python3")):
            probe = subprocess.run(self.as_image_user([str(candidate), "-c", "import venv, ensurepip"]),
                                   capture_output=True, timeout=30)
            if probe.returncode == 0:
                (shim / "python3").symlink_to(candidate)
                return shim
        pytest.fail("no python3 the image's user can run: bin/install-system-deps installs python3-venv")

    def final_stage(self) -> None:
        (run,) = self.final.all("RUN")
        for package in ("util-linux", "bash"):
            assert re.search(rf"apt-get install[^&]*\b{package}\b", run), f"the image does not install {package}"
        assert f"useradd --uid {IMAGE_UID} --gid {IMAGE_UID}" in run
        for owner, group, mode, paths in re.findall(r"install -d -o (\d+) -g (\d+) -m (\d+) ((?:/[\w/.-]+\s*)+)", run):
            for path in paths.split():
                self.path(path).mkdir(parents=True, exist_ok=True)
                os.chown(self.path(path), int(owner), int(group))
                self.path(path).chmod(int(mode, 8))
        (copy,) = self.final.all("COPY")
        _, source, destination = copy.split()
        assert source == destination, "the venv must keep its path between stages: its scripts name it"

    def environment(self, **settings: str) -> dict[str, str]:
        env = {"PATH": os.environ["PATH"], "HOME": str(self.path("/var/lib/datahub-executor"))}
        for key, value in self.final.env({"PATH": os.environ["PATH"]}).items():
            env[key] = self.rewrite(value) if key != "PATH" else self.rewrite(value.split(":", 1)[0]) + ":" + value.split(":", 1)[1]
        env.update(settings)
        return env

    def as_image_user(self, argv: list[str]) -> list[str]:
        (user,) = self.final.all("USER")
        uid, _, gid = user.partition(":")
        return ["setpriv", f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups", "--", *argv]

    def entrypoint(self) -> list[str]:
        return self.as_image_user(self.final.exec_form("ENTRYPOINT") + self.final.exec_form("CMD"))


@pytest.fixture(scope="module")
def image() -> Iterator[ReplayedImage]:
    # Not below pytest's tmp_path: that is private to root, and the image's user must reach it.
    root = Path(tempfile.mkdtemp(prefix="dhx-image-", dir="/tmp"))
    root.chmod(0o755)
    try:
        replay = ReplayedImage(root)
        replay.build_stage()
        replay.final_stage()
        yield replay
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_dockerfile_uses_only_instructions_the_replay_knows():
    _, all_stages = stages(DOCKERFILE)
    used = {i.keyword for stage in all_stages for i in stage.instructions}
    assert used <= KNOWN_KEYWORDS, f"teach the replay {used - KNOWN_KEYWORDS}"


def test_the_image_documents_the_seed_settings_at_their_defaults_and_bakes_in_no_token():
    _, (_, final) = stages(DOCKERFILE)
    env = final.env({})
    for name in ("DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS", "DATAHUB_EXECUTOR_MONITORS_MAX_WORKERS",
                 "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR", "DATAHUB_EXECUTOR_FILE_SECRET_MAXLEN"):
        assert name in env, f"{name} is not documented in the image"
    for name, value in env.items():
        if name == "DATAHUB_EXECUTOR_HEALTH_ADDRESS":
            assert value.startswith("0.0.0.0:"), "probes from outside the container must reach /health"
            assert value.split(":")[1] == SETTING_DEFAULTS[name].split(":")[1]
        elif name.startswith("DATAHUB_"):
            assert SETTING_DEFAULTS[name] == value, f"{name}={value} in the image, {SETTING_DEFAULTS[name]} in settings"
    assert not {"DATAHUB_GMS_TOKEN", "DATAHUB_GMS_URL", "DATAHUB_EXECUTOR_POOL_ID"} & env.keys()
    for required in ("DATAHUB_GMS_URL", "DATAHUB_GMS_TOKEN", "DATAHUB_EXECUTOR_POOL_ID"):
        assert required in DOCKERFILE.read_text(), f"the required {required} is not documented"


def test_the_entrypoint_without_settings_exits_2_naming_the_first_missing_one(image: ReplayedImage):
    result = subprocess.run(image.entrypoint(), env=image.environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "DATAHUB_GMS_URL is not set" in result.stderr


def test_the_image_runs_a_real_ingestion_as_its_unprivileged_user_and_stops_cleanly_on_sigterm(image: ReplayedImage):
    work = image.path("/var/lib/datahub-executor")
    out = work / "events.json"
    with running_controlplane(image.root / "controlplane") as cp:
        cp.create_pool("remote", default=True, visibility_timeout_s=30)
        env = image.environment(DATAHUB_GMS_URL=cp.gms_url, DATAHUB_GMS_TOKEN=cp.create_executor_token(["remote"]),
                                DATAHUB_EXECUTOR_POOL_ID="remote", DATAHUB_EXECUTOR_ID="container-1",
                                DATAHUB_EXECUTOR_HEALTH_ADDRESS=f"0.0.0.0:{free_port()}")
        executor = ExecutorProcess(env, argv=image.entrypoint())
        try:
            executor.wait_for_line("Starting datahub executor worker", timeout_s=60)
            assert executor.wait_for_line("sandbox mode none"), "an unprivileged container cannot write cgroups"
            probe = subprocess.run(image.as_image_user(healthcheck_command(image.final)), env=env,
                                   capture_output=True, text=True, timeout=30)
            assert probe.returncode == 0, probe.stderr
            _assert_no_process_of_the_tasks_uid_reads_the_token(image, executor.process.pid)
            execution = cp.run_source(cp.create_source("mock", mock_recipe(out))["id"])
            done = cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)
            assert done["status"] == "SUCCESS", cp.logs(execution["id"])["log"][-3000:]
            assert out.stat().st_uid == IMAGE_UID, "the task ran as the image's user"
            executor.process.send_signal(signal.SIGTERM)  # to PID 1, as `docker stop` does
            assert executor.process.wait(timeout=60) == 0
            executor.wait_for_line("executor stopped")
        finally:
            executor.stop()



def _assert_no_process_of_the_tasks_uid_reads_the_token(image: ReplayedImage, entrypoint: int) -> None:
    """Tasks here run as the image's user, as the entrypoint (PID 1 in a container) and the master
    do: each of those must keep the container's environment from them. With tini as PID 1, a task
    read DATAHUB_GMS_TOKEN from /proc/1/environ."""
    tree = [entrypoint, *(int(p) for p in Path(f"/proc/{entrypoint}/task/{entrypoint}/children").read_text().split())]
    assert len(tree) == 2, "PID 1 runs the master as its only child"
    for pid in tree:
        reader = subprocess.run(image.as_image_user(["cat", f"/proc/{pid}/environ"]), capture_output=True, timeout=30,
                                cwd="/")
        # Judged into a bool first: a failing assert would otherwise show what was read, the token.
        refused = reader.returncode != 0 and b"Permission denied" in reader.stderr and not reader.stdout
        assert refused, f"pid {pid}'s environment was readable by a process of the tasks' uid"


def test_the_image_run_as_root_runs_a_real_ingestion_as_its_task_user(image: ReplayedImage):
    """`docker run --user 0` (the documented way to get kernel-enforced limits; the chart's
    sandbox.privileged is the same user): the executor is root, its tasks run as the image's
    datahub-task (10002) and must reach their work directory and the CLI below the image's
    directories, which the image made for user 10001."""
    out_dir = image.root / "task-output"
    out_dir.mkdir()
    os.chown(out_dir, TASK_UID, TASK_UID)
    out = out_dir / "events.json"
    with running_controlplane(image.root / "controlplane-root") as cp:
        cp.create_pool("remote", default=True, visibility_timeout_s=30)
        # The image's user database names 10002 datahub-task; this host's need not, so by number.
        env = image.environment(DATAHUB_GMS_URL=cp.gms_url, DATAHUB_GMS_TOKEN=cp.create_executor_token(["remote"]),
                                DATAHUB_EXECUTOR_POOL_ID="remote", DATAHUB_EXECUTOR_ID="container-root",
                                DATAHUB_EXECUTOR_HEALTH_ADDRESS=f"0.0.0.0:{free_port()}",
                                DATAHUB_EXECUTOR_TASK_USER=f"{TASK_UID}:{TASK_UID}", DATAHUB_EXECUTOR_SANDBOX_MODE="none",
                                HOME="/root",
                                # The replay lives below /tmp, which a task's private /tmp would hide
                                # from it; the image's own paths are not there.
                                DATAHUB_EXECUTOR_TASK_PRIVATE_TMP="false")
        argv = image.final.exec_form("ENTRYPOINT") + image.final.exec_form("CMD")
        executor = ExecutorProcess(env, argv=argv)
        try:
            executor.wait_for_line("Starting datahub executor worker", timeout_s=60)
            execution = cp.run_source(cp.create_source("mock", mock_recipe(out))["id"])
            done = cp.wait_for_status(execution["id"], {"SUCCESS", "FAILURE"}, timeout_s=300)
            assert done["status"] == "SUCCESS", cp.logs(execution["id"])["log"][-3000:]
            assert out.stat().st_uid == TASK_UID, "the task ran as the image's task user"
            executor.process.send_signal(signal.SIGTERM)
            assert executor.process.wait(timeout=60) == 0
        finally:
            executor.stop()
