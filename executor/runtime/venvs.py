"""Virtualenvs with the acryl-datahub CLI, one per (version, plugins, extra requirements).

DataHub's executor rebuilds the venv for every run; we build each once, with uv (many times
faster than pip), and share it between tasks. Concurrent tasks that need the same venv wait on
a file lock (flock) while one builds it. The venv's ready marker (`<key>.ready`, beside it in
the cache directory) is written last, once what the build wrote is on disk, so a half-built venv
(a crash mid-install, a power loss) is never used: the next build wipes and redoes it. The marker
is outside the venv because the build's user owns the venv's directory while it builds:
install-time code could otherwise write the marker itself, and a venv still being built (or one
whose build died) would be handed to tasks as built. (Building
elsewhere and renaming would break the absolute paths in the venv's scripts.) `native` runs the CLI of
the executor's own environment; `latest` is resolved once a day.

The cache is bounded by use: each task holds its venv's `.use` lock shared while it runs, and
each use stamps the marker. Every build first removes what no task holds and nothing needs again:
a venv unused for UNUSED_EVICTED_AFTER_S, a `latest` of a past day, the remains of a build that
died. A venv is removed only under both its locks held exclusively (`.lock` is the build's), so
never under a task or a build. Tasks hold `.use`, not `.lock`: a task waiting to build would
otherwise wait for every task running the venv to end.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from vocabulary import cli_versions

from . import network_env
from .masking import Masker
from .rejection import TaskRejected

INSTALL_TIMEOUT_S = 1800
LOCK_POLL_S = 0.2  # how often a task waiting for another's build looks at whether the executor is stopping
# Long enough that a weekly or fortnightly schedule pinned to a version keeps its venv.
UNUSED_EVICTED_AFTER_S = 31 * 86400
KEY = re.compile(r"[0-9a-f]{20}")
READY_SUFFIX = ".ready"


class PreparationStopped(Exception):
    """The executor began to stop while the task waited for, or ran, its virtualenv build: the
    task has not started, so it is given back (a build takes minutes; a drain must not)."""


def plugins_for(recipe: dict) -> list[str]:
    """acryl-datahub extras for the recipe's source and sink (vocabulary/cli_versions.py)."""
    try:
        return cli_versions.plugins_for(recipe)
    except cli_versions.InvalidPlugin as exc:
        raise TaskRejected("INVALID_RECIPE", str(exc)) from None


@dataclass(frozen=True)
class InstallStep:
    """One command of a build, as the builder runs it: confined, as the task user, with an
    environment made from scratch (the executor's credentials never reach install-time code,
    which a wheel URL or a requirement can bring)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    user: Any = None  # sandbox.TaskUser, or None: the executor's own user
    # What kills the build before its end: the executor stopping, or the run it is for being
    # cancelled (the runner's flag; is_set() as a threading.Event's). None: the builder's own.
    stop: Any = None


# Runs a step; returns its exit code (-N: killed by signal N) and (the end of) its output.
Builder = Callable[[InstallStep], tuple[int, str]]


def run_locally(step: InstallStep) -> tuple[int, str]:
    """A builder for tools and tests: a plain child process of this one."""
    try:
        done = subprocess.run(step.argv, env=step.env, cwd=step.cwd, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TaskRejected("VENV_INSTALL_FAILED", f"installing the task environment took over {INSTALL_TIMEOUT_S}s") from None
    return done.returncode, done.stderr or done.stdout


class VenvCache:
    """Builds run through BUILDER (confined, as the task user asking), in the venv's own
    directory, owned by that user while it builds; once built, the venv is handed to the
    executor's user and made read-only for everyone else, so no task can change what later tasks
    run."""

    def __init__(self, cache_dir: str, *, index_url: str | None = None, python: str = sys.executable,
                 builder: Builder = run_locally, network: dict[str, str] | None = None,
                 stopping: threading.Event | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.index_url = index_url
        self.python = python
        self.builder = builder
        self.network = dict(network or {})
        self.stopping = stopping  # set when the executor stops: waits for another's build end
        self._held: dict[str, list[Any]] = {}  # CLI path -> the shared locks its running tasks hold
        self._held_lock = threading.Lock()

    def datahub_cli(self, version: str, plugins: list[str], extra_requirements: list[str], user: Any = None,
                    stop: Any = None) -> str:
        """Path of the `datahub` executable for this combination, building its venv (as USER, a
        sandbox.TaskUser) if needed. The venv is held (never evicted) until release(path).
        STOP (is_set(), as a threading.Event's; the cache's `stopping` when None) ends a wait for
        another task's build and kills this one's: PreparationStopped. A run cancelled while it
        waits is given back within a poll, not when a build of minutes ends; a build killed so
        leaves the venv unbuilt, and the next task that needs it builds it."""
        stop = stop if stop is not None else self.stopping
        if version == cli_versions.NATIVE:
            try:
                cli_versions.check_version(version, extra_requirements)
            except cli_versions.InvalidVersion as exc:
                raise TaskRejected("UNKNOWN_VERSION", str(exc)) from None
            cli = Path(sys.executable).parent / "datahub"
            if not cli.exists():
                raise TaskRejected("UNKNOWN_VERSION", "version native: acryl-datahub is not installed in the executor's "
                                                      "environment; pin a version or install it")
            return str(cli)
        spec = self._spec(version, plugins)
        target = self._dir_for(spec, version, extra_requirements)
        key = target.name
        cli = target / "bin" / "datahub"
        self.cache_dir.mkdir(mode=0o755, parents=True, exist_ok=True)  # the markers' directory: ours alone
        use = self._lock_file(f"{key}.use")
        try:
            while True:
                if _is_ready(target):
                    self._lock_or_stop(use, stop, fcntl.LOCK_SH)  # waits out an eviction in progress, if any
                    if _is_ready(target):
                        break
                    fcntl.flock(use, fcntl.LOCK_UN)  # evicted: built again below
                with self._lock_file(f"{key}.lock") as lock:
                    self._lock_or_stop(lock, stop)  # the one that builds; the others wait, then find it ready
                    if not _is_ready(target):
                        self.evict_unused()
                        self._build(target, [spec, *extra_requirements], user,
                                    day=_day() if version == cli_versions.LATEST else None, stop=stop)
                # Taken shared at the loop's top; an eviction in between finds it just built and leaves it.
            os.utime(marker_of(target))
        except BaseException:
            use.close()
            raise
        with self._held_lock:
            self._held.setdefault(str(cli), []).append(use)
        return str(cli)

    def _lock_file(self, name: str):
        """The cache's lock file NAME, opened (made if new). Eviction runs only in builds, and a
        new venv's lock files come before its build: on a cache whose disk (or inodes) the venvs
        filled, they could not be made, no build ran, and nothing was ever evicted. So a full disk
        here first evicts what is unneeded, then tries once more."""
        try:
            return open(self.cache_dir / name, "a")
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
        self.evict_unused()
        try:
            return open(self.cache_dir / name, "a")
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise TaskRejected("VENV_INSTALL_FAILED", _full(self.cache_dir, exc)) from None

    def release(self, cli: str) -> None:
        """The task that was given CLI has ended: its venv may be evicted once nobody holds it."""
        with self._held_lock:
            holds = self._held.get(cli)
            if not holds:
                return
            lock = holds.pop()
            if not holds:
                del self._held[cli]
        lock.close()

    def evict_unused(self, now: float | None = None) -> list[str]:
        """Remove every venv no task holds and none will use again (see the module's doc); returns
        their keys. Venvs that another holds are skipped, never waited for."""
        now = time.time() if now is None else now
        evicted = []
        for entry in self._entries():
            with open(self.cache_dir / f"{entry.name}.lock", "a") as lock, \
                    open(self.cache_dir / f"{entry.name}.use", "a") as use:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # being built, or in use by a task
                if not self._unneeded(entry, now):
                    continue
                stamp = _stamp(entry)
                logger.info("evicting task virtualenv {} (last given to a task: {})", entry.name,
                            time.ctime(stamp) if stamp else "never, a build that died")
                marker_of(entry).unlink(missing_ok=True)  # first: a half-removed venv is never taken for built
                shutil.rmtree(entry, ignore_errors=True)
                evicted.append(entry.name)
        return evicted

    @staticmethod
    def _unneeded(venv: Path, now: float) -> bool:
        stamp = _stamp(venv)
        if stamp is None or not venv.is_dir():
            return True  # no marker and nobody building: what a build that died left (or a marker alone)
        if now - stamp > UNUSED_EVICTED_AFTER_S:
            return True
        try:
            day = json.loads(marker_of(venv).read_text()).get("day")
        except (OSError, ValueError, AttributeError):
            return False
        return day is not None and day != _day(now)

    def _entries(self) -> list[Path]:
        """The cache's venvs, and the names of those whose marker outlived them (a venv removed
        by hand): both are evicted as unneeded."""
        keys = set()
        for entry in self.cache_dir.iterdir():
            name = entry.name.removesuffix(READY_SUFFIX)
            if KEY.fullmatch(name) and not entry.is_symlink() and (entry.is_dir() or entry.name != name):
                keys.add(name)
        return [self.cache_dir / key for key in sorted(keys)]

    @staticmethod
    def _lock_or_stop(lock, stop: Any, operation: int = fcntl.LOCK_EX) -> None:
        """flock(OPERATION), given up once STOP is set (the executor stopping, the run cancelled):
        a blocking flock cannot be interrupted, and another task's build may hold the lock for up
        to INSTALL_TIMEOUT_S."""
        while True:
            try:
                fcntl.flock(lock, operation | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if stop is None:
                fcntl.flock(lock, operation)
                return
            if stop.is_set():
                raise PreparationStopped("the virtualenv is being built by another task, and this one was stopped "
                                         "(the executor is stopping, or the run was cancelled)")
            time.sleep(LOCK_POLL_S)

    def venv_dir(self, version: str, plugins: list[str], extra_requirements: list[str]) -> Path:
        """Where the venv for this combination lives (built or not): one directory per
        (requirements, python, and for `latest` the day), so equal recipes share it."""
        return self._dir_for(self._spec(version, plugins), version, extra_requirements)

    def _dir_for(self, spec: str, version: str, extra_requirements: list[str]) -> Path:
        key_source = json.dumps({"spec": spec, "extra": sorted(extra_requirements), "python": self.python,
                                 "day": _day() if version == cli_versions.LATEST else None})
        return self.cache_dir / hashlib.sha256(key_source.encode()).hexdigest()[:20]

    @staticmethod
    def _spec(version: str, plugins: list[str]) -> str:
        try:
            return cli_versions.requirement(version, plugins)
        except cli_versions.InvalidPlugin as exc:
            raise TaskRejected("INVALID_RECIPE", str(exc)) from None
        except cli_versions.InvalidVersion as exc:
            raise TaskRejected("UNKNOWN_VERSION", str(exc)) from None

    def _build(self, target: Path, requirements: list[str], user: Any, day: str | None = None,
               stop: Any = None) -> None:
        marker_of(target).unlink(missing_ok=True)  # one that outlived its venv (removed by hand)
        shutil.rmtree(target, ignore_errors=True)
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
        if uv is None:
            raise TaskRejected("VENV_INSTALL_FAILED", "uv is not installed next to the executor")
        started = time.monotonic()
        logger.info("building task virtualenv {} for {}", target.name, " ".join(requirements))
        # PIP_INDEX_URL is a setting (it may come from --env-file, not the environment), and uv
        # reads none of pip's names: network_env gives it uv's.
        network = {**self.network, "PIP_INDEX_URL": self.index_url} if self.index_url else self.network
        env = {**network_env.uv_names(network), "PATH": f"{Path(uv).parent}:/usr/local/bin:/usr/bin:/bin",
               "HOME": str(target), "VIRTUAL_ENV": str(target), "UV_NO_CACHE": "1", "UV_PYTHON_DOWNLOADS": "never",
               "LANG": "C.UTF-8"}
        try:
            target.mkdir(mode=0o755)
            if user is not None:
                os.chown(target, user.uid, user.gid)
            self._step([uv, "venv", "--quiet", "--allow-existing", "--python", self.python, str(target)], env, target, user,
                       stop)
            self._step([uv, "pip", "install", "--quiet", "--python", str(target / "bin" / "python"), *requirements], env,
                       target, user, stop)
            _seal(target)
            _check_cli(target)
            _mark_ready(target, requirements, day)
        except BaseException as exc:
            # The marker first, as in an eviction: one this build made (a disk that filled up
            # while it was written) must not outlive the venv, nor mark what rmtree left.
            marker_of(target).unlink(missing_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            if isinstance(exc, OSError):
                # The executor's own steps (the directory, the seal, the sync, the marker): a
                # failed install like any other, not an executor error the run is retried for.
                raise TaskRejected("VENV_INSTALL_FAILED", _full(self.cache_dir, exc)
                                   if exc.errno in (errno.ENOSPC, errno.EDQUOT) else
                                   f"installing the task environment failed: {exc}") from None
            raise
        logger.info("task virtualenv {} ready in {:.1f}s", target.name, time.monotonic() - started)

    def _step(self, argv: list[str], env: dict[str, str], target: Path, user: Any, stop: Any = None) -> None:
        returncode, output = self.builder(InstallStep(argv, env, str(target), user, stop))
        if returncode != 0:
            # The index's and the proxy's credentials are the operator's: an installer that
            # echoes a URL it failed on must not put them in the run's report.
            output = Masker(network_env.credentials(env)).mask(output)
            detail = output.strip().splitlines()[-5:]
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            raise TaskRejected("VENV_INSTALL_FAILED", f"installing the task environment failed ({Path(argv[0]).name} "
                                                      f"{argv[1]} {argv[2]}, {how}): " + " | ".join(detail))


def _full(cache_dir: Path, exc: OSError) -> str:
    return (f"the virtualenv cache DATAHUB_EXECUTOR_VENV_CACHE_DIR {cache_dir} is full ({exc.strerror}), even after "
            "removing the venvs no task needs: give it more space or inodes, or remove venvs by hand while no task "
            "runs (docs/operations.md, \"The virtualenv cache\")")


def _day(now: float | None = None) -> str:
    return time.strftime("%Y%m%d", time.localtime(now))


def marker_of(venv: Path) -> Path:
    """The venv's ready marker: beside it, in the cache directory the executor alone writes."""
    return venv.with_name(venv.name + READY_SUFFIX)


def _is_ready(venv: Path) -> bool:
    return marker_of(venv).is_file() and venv.is_dir()


def _stamp(venv: Path) -> float | None:
    """When the venv was last given to a task (its marker's mtime), or None: not built."""
    try:
        return os.lstat(marker_of(venv)).st_mtime
    except FileNotFoundError:
        return None


def _check_cli(target: Path) -> None:
    """A venv without a `datahub` command (a wheel URL of some other build of acryl-datahub, say)
    is no venv: marked ready, every run of the source would fail on it until it was evicted, a
    month later, where a failed build is tried again at the next run."""
    cli = target / "bin" / "datahub"
    if cli.is_symlink() or not cli.is_file() or not os.access(cli, os.X_OK):
        raise TaskRejected("VENV_INSTALL_FAILED", "the acryl-datahub installed has no datahub command (bin/datahub): "
                                                  "the version or wheel named is not DataHub's CLI")


def _mark_ready(target: Path, requirements: list[str], day: str | None) -> None:
    """The ready marker, made by the executor after the seal, once what the build wrote is on
    disk: a marker that outlived a power loss the venv's files did not would hand tasks a venv
    with empty or missing files, and each use would keep it from eviction. O_EXCL: a marker
    already there (nobody else writes the cache directory) is not ours to trust."""
    _sync_filesystem_of(target)
    marker = marker_of(target)
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise TaskRejected("VENV_INSTALL_FAILED", f"a ready marker {marker.name} is already in the venv cache though "
                                                  "the venv was being built; the virtualenv is refused") from None
    with os.fdopen(fd, "w") as written:
        written.write(json.dumps({"requirements": requirements, "day": day}))
        written.flush()
        os.fsync(written.fileno())
    directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)  # the marker's name too
    finally:
        os.close(directory)


def _sync_filesystem_of(path: Path) -> None:
    """Every file the build wrote (thousands, by another user's processes) reaches the disk:
    syncfs(2) on the venv's filesystem, or sync(2) where the C library has no syncfs."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs = getattr(_libc(), "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _seal(target: Path) -> None:
    """The finished venv belongs to the executor's user and nobody else may write it. Top down:
    each directory is taken over before what is in it, so the build's user can no longer swap an
    entry for a link while we work; links themselves are re-owned, never followed."""
    uid, gid = os.geteuid(), os.getegid()
    for root, dirs, files in os.walk(target, topdown=True):
        os.lchown(root, uid, gid)
        os.chmod(root, os.lstat(root).st_mode & ~0o022)
        for name in files:
            path = os.path.join(root, name)
            os.lchown(path, uid, gid)
            if not os.path.islink(path):
                os.chmod(path, os.lstat(path).st_mode & ~0o022)
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):
                os.lchown(os.path.join(root, name), uid, gid)  # os.walk does not descend into it
