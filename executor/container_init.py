"""`datahub-executor-init -- COMMAND...`: the container's PID 1, doing tini's job undumpable.

In an unprivileged container (the image's default, Kubernetes, Fargate) tasks run as the
executor's own uid, and a process of that uid can read the /proc/<pid>/environ of every process of
the uid that is dumpable. PID 1 holds the container's whole environment: DATAHUB_GMS_TOKEN, AWS
keys, the values an environment secret store serves. tini, which was PID 1, is dumpable, so any
task could read them from /proc/1/environ; the master's own PR_SET_DUMPABLE 0 did not help while
its parent held the same environment. This init makes itself undumpable before it starts
anything, then does what tini did here:

- runs COMMAND as its only child, in a process group of its own (the terminal's foreground
  group under `docker run -it`), and exits with its status (128+N when a signal N ended it);
- forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to that child alone, never to its
  process group: running tasks would get `docker stop`'s SIGTERM directly and the master's drain
  would be cut short;
- reaps every process reparented to it (a task's daemonised grandchildren), also when it is not
  PID 1 (`docker run --init`, the tests), as a child subreaper.

Signals are blocked before the fork and taken with sigwait, so none is lost between the fork and
the wait, and none runs Python code at an awkward moment: this process has nothing else to do.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys

from .undumpable import make_undumpable

PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
USAGE = "usage: datahub-executor-init -- COMMAND [ARG...]"


def main(argv: list[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print(USAGE, file=sys.stderr)
        return 2
    if not make_undumpable():
        print("datahub-executor-init: cannot make itself undumpable (prctl PR_SET_DUMPABLE failed): processes of "
              "its uid can read the container's environment from /proc/1/environ", file=sys.stderr)
    _become_subreaper()
    watched = {*FORWARDED, signal.SIGCHLD}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    child = os.fork()
    if child == 0:
        _exec(command, before)
    return _supervise(child, watched)


def _become_subreaper() -> None:
    """Orphans come to this process even when it is not PID 1 (PID 1 gets them anyway)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except OSError:
        pass


def _exec(command: list[str], mask: set[signal.Signals]) -> None:
    """In the child: the signal mask it had, and the default action for the signals Python starts
    with ignored (exec keeps an ignored signal ignored: a shell pipeline in the command died of
    EPIPE, exit 1, instead of SIGPIPE, 141), then COMMAND; 127 if there is none, 126 if it cannot run."""
    try:
        _take_the_terminal()
        for ignored_by_python in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(ignored_by_python, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.execvp(command[0], command)
    except OSError as exc:
        os.write(2, f"datahub-executor-init: cannot run {command[0]}: {exc.strerror}\n".encode())
        os._exit(127 if exc.errno == errno.ENOENT else 126)
    finally:
        os._exit(126)  # whatever else went wrong: the child never returns into the parent's loop


def _take_the_terminal() -> None:
    """In the child: a process group of its own, the terminal's foreground group where there is
    one (`docker run -it`), as tini does. In this process's group, a Ctrl-C reached the command
    twice, from the terminal and forwarded by this process, and the executor took the second
    for "kill the running tasks now", skipping the drain."""
    os.setpgid(0, 0)
    if not os.isatty(0):
        return
    # A background group changing the foreground group gets SIGTTOU unless it ignores it.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(0, os.getpgrp())
    except OSError:
        pass  # not our controlling terminal: Ctrl-C never reaches us through it
    finally:
        signal.signal(signal.SIGTTOU, previous)


def _supervise(child: int, watched: set[int]) -> int:
    while True:
        received = signal.sigwait(watched)
        if received != signal.SIGCHLD:
            try:
                os.kill(child, received)
            except ProcessLookupError:
                pass  # it has exited; its SIGCHLD is pending
            continue
        status = _reap_all(child)
        if status is not None:
            return status if status >= 0 else 128 - status


def _reap_all(child: int) -> int | None:
    """Reap every process that has ended; the child's exit code (negative: the signal) if it was one."""
    status = None
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == child:
            status = os.waitstatus_to_exitcode(wait_status)


if __name__ == "__main__":
    sys.exit(main())
