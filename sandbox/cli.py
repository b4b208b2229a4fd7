"""`python -m sandbox run [limits] -- COMMAND [ARGS...]`: how operators test limits on a host,
and how the test suite exercises the sandbox from outside.

Exit code: the child's (128+signal when a signal ended it); 2 for bad input or an unusable
environment, with a one-line error and never a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Sequence

from .errors import SandboxError
from .limits import Limits
from .sandbox import Sandbox
from .sizes import parse_size
from .task_user import TaskUser

USAGE_ERROR = 2
# Each run gets a root of its own (with its pid): sweep() and close() act on the whole root, so
# two runs sharing one would remove it under each other (a task then fails to create its cgroup).
CLI_ROOT_PREFIX = "datahub-sandbox-cli-"
# The signals that stop the CLI, and with it the task.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than zero (got {value})")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text!r}); leave the option out for no limit")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than zero (got {value})")
    return value


def _task_user(text: str) -> TaskUser:
    try:
        return TaskUser.parse(text)
    except SandboxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sandbox", description="Run a command confined and report how it ended.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run COMMAND confined", description="Run COMMAND confined; sizes accept 512M, 2G or bytes.")
    run.add_argument("--memory-limit", type=_size, metavar="SIZE", help="hard memory limit (the kernel kills the task past it)")
    run.add_argument("--memory-high", type=_size, metavar="SIZE", help="throttle point (cgroup v2); default a little below the limit")
    run.add_argument("--pids-limit", type=_positive_int, metavar="N", help="most processes and threads at once")
    run.add_argument("--cpu-limit", type=_positive_float, metavar="CPUS", help="CPU time, in CPUs (0.5 = half a core)")
    run.add_argument("--address-space-limit", type=_size, metavar="SIZE",
                     help="RLIMIT_AS, opt-in: address space is not memory (a JVM reserves far more than it uses)")
    run.add_argument("--timeout", type=_positive_float, metavar="SECONDS", help="kill the whole tree after this long")
    run.add_argument("--user", type=_task_user, metavar="UID[:GID]",
                     help="run the task as this unprivileged uid (and gid, default the uid): no supplementary groups, "
                          "no_new_privs, no capabilities; needs root")
    run.add_argument("--private-tmp", action="store_true",
                     help="fresh tmpfs on /tmp, /var/tmp and /dev/shm and a read-only cgroup fs, in a mount namespace "
                          "of the task's own (needs CAP_SYS_ADMIN; where it cannot be made, the outcome says so)")
    run.add_argument("--mode", default="auto", choices=["auto", "cgroup-v2", "cgroup-v1", "none"], help="confinement mode")
    run.add_argument("--root-name", help="cgroup root below our own cgroup (default: one of this run's own, "
                                          f"{CLI_ROOT_PREFIX}PID, removed when it ends)")
    run.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    sweep = sub.add_parser("sweep", help="kill and remove leftover task cgroups under a root")
    sweep.add_argument("--root-name", required=True,
                       help=f"the root to sweep: a master's, or a crashed run's {CLI_ROOT_PREFIX}PID")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sweep":
            sandbox = Sandbox.open(args.root_name)
            for name in sandbox.sweep():
                print(f"swept {name}")
            sandbox.close()
            return 0
        return _run(args)
    except SandboxError as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _run(args: argparse.Namespace) -> int:
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise SandboxError("no command given: python -m sandbox run [limits] -- COMMAND [ARGS...]")
    limits = Limits(
        memory_max_bytes=args.memory_limit,
        memory_high_bytes=args.memory_high,
        pids_max=args.pids_limit,
        cpu_max=args.cpu_limit,
        address_space_bytes=args.address_space_limit,
        timeout_s=args.timeout,
    )
    sandbox = Sandbox.open(args.root_name or f"{CLI_ROOT_PREFIX}{os.getpid()}", mode=args.mode)
    if sandbox.mode == "none" and args.mode == "auto":
        print("sandbox: warning: no writable cgroup hierarchy here; limits are best effort (mode none)", file=sys.stderr)
    # A stop signal to the CLI (Ctrl-C, a kill, its terminal closed, Ctrl-\\) ends the task too,
    # by cgroup, and still reports. Handled from before the start: one that came during it kills
    # the task as soon as it exists. SIGHUP by its default action left the task's tree running,
    # past its timeout, with no outcome.
    stopped: list[int] = []
    started: list = []

    def stop(signum: int, _frame) -> None:
        stopped.append(signum)
        if started:
            started[0].kill()

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    try:
        process = sandbox.start(command, limits, user=args.user, private_tmp=args.private_tmp)
        started.append(process)
        if stopped:
            process.kill()
        outcome = process.wait()
    finally:
        sandbox.close()
    try:
        if args.json:
            print(json.dumps(outcome.to_dict(), sort_keys=True))
        else:
            print(f"sandbox: {outcome.status.value} exit_code={outcome.exit_code} signal={outcome.signal} "
                  f"oom_kills={outcome.oom_kills} peak_memory_bytes={outcome.peak_memory_bytes} "
                  f"duration_s={outcome.duration_s:.3f} mode={outcome.mode}", file=sys.stderr)
    except OSError:
        pass  # the terminal is gone (SIGHUP): the task is ended all the same
    return outcome.shell_exit_code


if __name__ == "__main__":
    sys.exit(main())
