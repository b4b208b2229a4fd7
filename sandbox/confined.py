"""A running task and the reaper thread that ends it and says how it ended.

The reaper owns the task's end, in this order: wait for the main process (enforcing the
timeout and, in mode none, the memory watchdog), kill what is left of the tree, read the
counters, remove the cgroup, publish the outcome.

Races and failures handled here:
- kill() and terminate() from other threads only record who asked and wake the reaper; only
  the reaper signals the task, so two kill paths never interleave (one thread's freeze with
  another's thaw) and kill() returns at once. The phases the reaper moves a task through, and
  what a second request does, are in end_requests.py.
- The outcome is published in a `finally`: whatever fails while waiting, killing, reading
  counters or removing the cgroup, wait() returns an Outcome with what is known, and each
  failure is logged once.
- A kill that cannot empty the cgroup (a process stuck in D state, frozen by someone else, a
  cgroup.kill that keeps failing) is retried with growing pauses within KILL_BUDGET_S, never
  in a tight loop; then it is logged once and the outcome is published with the pids that
  would not die. Their cgroup is kept for the next sweep, and the reaper goes on waiting,
  blocked, so that the main process is reaped when it finally dies.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from . import driver as _driver
from . import reused_threads
from .backoff import Backoff
from .driver import TaskGroup
from .errors import SandboxError
from .end_requests import EndRequests, Phase, next_phase
from .exit_watch import ExitWatch
from .limits import Limits
from .no_cgroup import WATCHDOG_INTERVAL_S
from .outcome import Outcome, classify

log = logging.getLogger("sandbox")
T = TypeVar("T")
# How often, at most, the reaper looks whether the rest of a tree whose main process exited
# during a terminate()'s grace has ended (a cgroup read; in mode none, a scan of the processes).
GRACE_POLL_MAX_S = 0.1


class ConfinedProcess:
    """A started task: poll()/wait() for its Outcome, kill()/terminate() to end it early."""

    def __init__(
        self,
        popen: subprocess.Popen,
        group: TaskGroup,
        limits: Limits,
        mode: str,
        enforced: dict[str, str],
        isolation: dict[str, str],
        on_finished: Callable[[], None],
    ) -> None:
        """Everything that can fail (the wake-up pipe, the pidfd) is made here, while the child is
        still held: Sandbox.start then disposes of it and the command never runs. The reaper is
        started by start_reaper(), once the child is released."""
        self._popen = popen
        self._group = group
        self._limits = limits
        self._mode = mode
        self._enforced = enforced
        self._started = time.monotonic()
        self._on_finished = on_finished
        self._end = EndRequests()
        self._kill_backoff: Backoff | None = None
        # When a terminate()'s grace runs out, while the reaper is in its TERMINATING phase.
        self._grace_ends_at: float | None = None
        self._done = threading.Event()
        self._outcome: Outcome | None = None
        self._watch = ExitWatch(popen, before_reap=_main_exited_of(group))
        self.pid = popen.pid
        self.name = group.name
        self.isolation = isolation
        self.stdin, self.stdout, self.stderr = popen.stdin, popen.stdout, popen.stderr
        self._reaper: reused_threads.Job | None = None

    def start_reaper(self) -> None:
        """The child has just been released: the timeout counts from now."""
        self._started = time.monotonic()
        self._reaper = reused_threads.start(self._reap, name=f"sandbox-reaper-{self.name}")

    def abandon(self) -> None:
        """The child was released but its reaper could not start: end the task here, in the
        caller's thread, so that nothing runs unwatched: kill the tree, reap the main process,
        tell the sandbox, remove the cgroup. A main process that would not die stays with the
        spawner thread (its parent-death signal) and its cgroup with the next sweep."""
        left = self._attempt("killing an abandoned task", lambda: self._group.kill_until_empty(self._backoff()), [])
        try:
            self._popen.wait(timeout=_driver.KILL_BUDGET_S)
        except subprocess.TimeoutExpired:
            log.error("task %s: its main process %d would not die after a failed start; the next sweep "
                      "will retry", self.name, self.pid)
            self._watch.close()
            return
        self._finish()
        if not left:
            self._attempt("removing an abandoned task's cgroup", self._group.remove, None)

    # ---- what other threads call -------------------------------------------------------

    def poll(self) -> Outcome | None:
        return self._outcome if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> Outcome:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self._popen.args, timeout or 0)
        assert self._outcome is not None
        return self._outcome

    def kill(self) -> None:
        """SIGKILL the whole tree, also during a terminate()'s grace; returns at once (the
        outcome says KILLED, and names the first request)."""
        if not self._done.is_set() and self._end.ask_kill("kill()", reported=self._could_still_be_the_cause()):
            self._watch.wake()

    def terminate(self, grace_s: float = 10.0) -> None:
        """SIGTERM every process of the task, SIGKILL what is left after GRACE_S; returns at once."""
        if not (isinstance(grace_s, (int, float)) and math.isfinite(grace_s) and grace_s >= 0):
            raise SandboxError(f"grace_s must be a finite number of seconds, 0 or more, not {grace_s!r}")
        if not self._done.is_set() and self._end.ask_terminate(grace_s, reported=self._could_still_be_the_cause()):
            self._watch.wake()

    def _could_still_be_the_cause(self) -> bool:
        """Whether a request to end the task, made now, can be what ended it: not once the main
        process has exited, nor while it is already dying (the OOM killer's SIGKILL pending, or
        its exit under way, which for a large process takes a while): the kill that came first
        names the end, and a cancel in between must not rename it. An OOM kill of another
        process of the task is no such thing: the main process may outlive it for hours, and a
        timeout or cancel after that is what ends the task (it counted as MEMORY_LIMIT_EXCEEDED)."""
        return not self._watch.exited() and not main_process_dying(self.pid)

    def memory_current(self) -> int | None:
        return None if self._done.is_set() else self._group.memory_current()

    def process_count(self) -> int:
        """Live processes of the task (its whole tree), 0 once it has ended."""
        return 0 if self._done.is_set() else len(self._group.pids())

    def memory_peak(self) -> int | None:
        if self._outcome is not None:
            return self._outcome.peak_memory_bytes
        return self._group.memory_peak()

    # ---- the reaper ---------------------------------------------------------------------

    def _reap(self) -> None:
        returncode: int | None = None
        left: list[int] = []
        tree_left = True  # until the tree is seen ended and its cgroup removed
        oom_kills, peak, pids_limit_hits = 0, None, 0
        limit_reached: bool | None = None
        try:
            returncode = self._attempt("waiting for the task", self._wait_for_main_process, None)
            if returncode is not None and self._grace_ends_at is not None:
                self._attempt("giving the rest of the task its grace", self._await_the_rest_in_grace, None)
            # Nothing of a task outlives it: kill what is left of the tree before reporting.
            ended = self._attempt("killing what was left of the task", self._end_the_tree, None)
            left = ended if ended is not None else []
            tree_left = ended is None or bool(ended)
            if returncode is None:
                returncode = self._popen.poll()  # it may have died in the last round
            if returncode is None and self.pid not in left:
                # The main process would not die and is not in its cgroups (it moved itself out):
                # it is as much left of the task as a member that would not die.
                left, tree_left = [self.pid, *left], True
            oom_kills = self._attempt("reading the OOM kill counter", self._group.oom_kills, 0)
            if oom_kills:
                limit_reached = self._attempt("reading whether the memory limit was reached",
                                              self._group.memory_limit_reached, None)
            peak = self._attempt("reading the peak memory", self._group.memory_peak, None)
            pids_limit_hits = self._attempt("reading the pids limit counter", self._group.pids_limit_hits, 0)
            if left:
                failure = f"; last kill error: {self._group.last_kill_error}" if self._group.last_kill_error else ""
                log.error("task %s: %d process(es) would not die within %.1f s of SIGKILL (pids %s: stuck in the "
                          "kernel, in D state or frozen, or the kill keeps failing%s); outcome published, cgroup kept "
                          "for the next start-up's sweep", self.name, len(left), _driver.KILL_BUDGET_S,
                          " ".join(map(str, left)), failure)
            elif ended is None:
                log.error("task %s: whether anything of it is left could not be read; its cgroup is kept for the "
                          "next start-up's sweep", self.name)
            else:
                tree_left = not self._attempt("removing the task's cgroup", self._removed, False)
        finally:
            finished_now = self._popen.returncode is not None
            if finished_now:
                self._finish()
            self._publish(returncode, oom_kills, limit_reached, peak, pids_limit_hits, left, tree_left)
        if not finished_now:
            self._linger()

    def _attempt(self, what: str, step: Callable[[], T], default: T) -> T:
        """Run one step of the reaper; a failure is logged once and replaced by DEFAULT, so the
        steps after it still run and the outcome is still published."""
        try:
            return step()
        except Exception:
            log.exception("task %s: %s failed; the outcome says what is known", self.name, what)
            return default

    def _wait_for_main_process(self) -> int | None:
        """The main process's return code, or None if it would not die within the kill budget.

        Each wake-up (the exit, a request, a deadline) moves the task through the phases of
        end_requests.py: RUNNING, then TERMINATING (SIGTERM sent) if asked, then KILLING."""
        timeout_s = self._limits.timeout_s
        deadline = self._started + timeout_s if timeout_s else None
        limit = self._limits.memory_max_bytes
        # In mode none the scan is how the tree is known (a setsid() child is found only by it),
        # so it runs with or without a memory limit; the limit is checked only where there is one.
        next_watch = time.monotonic() + WATCHDOG_INTERVAL_S if self._group.needs_watchdog() else None
        phase = Phase.RUNNING
        escalate_at: float | None = None
        next_kill: float | None = None
        while True:
            wakes = [t for t in (deadline, next_watch, escalate_at, next_kill) if t is not None]
            timeout = max(min(wakes) - time.monotonic(), 0.0) if wakes else None
            returncode = self._watch.wait(timeout)
            if returncode is not None:
                return returncode
            if self._watch.held_by_tracer:
                # It exited, and a process of the task traces it: the tree is ended now, as after
                # any exit, so that the tracer lets it go to be reaped. Not the cause of anything.
                self._end.ask_kill("the main process exited, held by a tracer", reported=False)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                deadline = None
                self._end.ask_kill("timeout", reported=self._could_still_be_the_cause())
            if next_watch is not None and now >= next_watch:
                next_watch = now + WATCHDOG_INTERVAL_S
                # The scan, which also sums the tree's RSS: the peak the outcome reports,
                # with a memory limit or without one.
                if (self._group.memory_current() or 0) > (limit if limit is not None else math.inf):
                    self._end.ask_kill("memory-watchdog", reported=self._could_still_be_the_cause())
            asked = self._end.snapshot()
            grace_over = escalate_at is not None and now >= escalate_at
            entered, phase = phase, next_phase(phase, asked, grace_over)
            if phase is Phase.TERMINATING and entered is Phase.RUNNING:
                self._group.signal_all(signal.SIGTERM)
                escalate_at = self._grace_ends_at = now + (asked.grace_s or 0.0)
            if phase is not Phase.KILLING:
                continue
            escalate_at = self._grace_ends_at = None
            if next_kill is None or now >= next_kill:
                self._group.try_kill_all()
                self._kill_main_if_outside()
                pause = self._backoff().next_pause()
                if pause is None:
                    return None
                next_kill = now + pause

    def _kill_main_if_outside(self) -> None:
        """SIGKILL the main process through its pidfd where it is not among the group's processes:
        a task running as root can write its own pid into a cgroup outside its task's, and the
        group's kill then missed it, the kill budget ran out on an empty cgroup and the outcome
        named no signal and no unkillable pid while it ran on. Where it is in the group, the
        group's kill is the one that reaches it (and the rest of its tree with it). In mode none
        there is no cgroup to leave (the main process is always the group's), and a scan there
        remembers processes: one more, at a kill, could adopt a pid just reused by another."""
        if self._group.needs_watchdog():
            return
        try:
            inside = self.pid in self._group.pids()
        except (SandboxError, OSError):
            inside = False  # cannot be told: our own child, killed either way
        if not inside:
            self._watch.kill()

    def _await_the_rest_in_grace(self) -> None:
        """The main process exited during a terminate()'s grace: the grace is every process's
        (SIGKILL only to what is left when it runs out), so the rest of the tree, which got the
        same SIGTERM and may still be cleaning up, is given what is left of it; a kill() or
        the task's timeout cuts it short. The tree's end is looked for in short, growing pauses."""
        ends_at = self._grace_ends_at
        if self._limits.timeout_s:
            ends_at = min(ends_at, self._started + self._limits.timeout_s)
        pauses = Backoff(ends_at - time.monotonic(), first_s=0.005, cap_s=GRACE_POLL_MAX_S)
        while not (self._end.snapshot().kill or self._group.is_empty()):
            pause = pauses.next_pause()
            if pause is None:
                return
            self._watch.sleep(pause)

    def _backoff(self) -> Backoff:
        """One kill budget per task, shared by the wait above and _end_the_tree."""
        if self._kill_backoff is None:
            self._kill_backoff = Backoff(_driver.KILL_BUDGET_S, first_s=0.01)
        return self._kill_backoff

    def _removed(self) -> bool:
        self._group.remove()
        return True

    def _end_the_tree(self) -> list[int]:
        if self._group.is_empty():
            return []
        return self._group.kill_until_empty(self._backoff())

    def _finish(self) -> None:
        """The main process has been reaped: tell the sandbox (on_finished), once."""
        self._attempt("releasing the task", self._on_finished, None)
        self._watch.close()

    def _publish(self, returncode: int | None, oom_kills: int, limit_reached: bool | None, peak: int | None,
                 pids_limit_hits: int, left: list[int], tree_left: bool) -> None:
        killed_by = self._end.snapshot().reported_by
        self._outcome = Outcome(
            status=classify(returncode=returncode, oom_kills=oom_kills, killed_by=killed_by,
                            limit_reached=limit_reached),
            exit_code=returncode if returncode is not None and returncode >= 0 else None,
            signal=-returncode if returncode is not None and returncode < 0 else None,
            oom_kills=oom_kills,
            peak_memory_bytes=peak,
            duration_s=time.monotonic() - self._started,
            mode=self._mode,
            limits_enforced=self._enforced,
            killed_by=killed_by,
            pids_limit_hits=pids_limit_hits,
            isolation=self.isolation,
            unkillable_pids=left,
            tree_left=tree_left,
            memory_limit_reached=limit_reached if oom_kills else None,
        )
        self._done.set()

    def _linger(self) -> None:
        """The outcome is out but the main process is not reaped (it would not die): wait for
        it, blocked rather than polling, then clear what is left."""
        try:
            self._popen.wait()
            if not self._group.kill_until_empty(Backoff(_driver.KILL_BUDGET_S, first_s=0.01)):
                self._group.remove()
                log.info("task %s: its stuck processes finally died; cgroup removed", self.name)
        except Exception:
            log.exception("task %s: clearing up after its stuck processes failed; the next sweep will", self.name)
        finally:
            self._finish()


def _main_exited_of(group: TaskGroup) -> Callable[[], None]:
    """What the exit watch calls once the main process has exited, before it reaps it: the
    group's last look (mode none finds the children forked since its last scan; see
    TaskGroup.main_exited), a failure logged. Holds the group alone: a bound method of the
    ConfinedProcess made a reference cycle through its ExitWatch, which only the garbage
    collector's rare full passes freed (the master's RSS grew ~0.4 KB a task)."""
    def main_exited() -> None:
        try:
            group.main_exited()
        except Exception:
            log.exception("task %s: looking at the task as its main process exited failed; the outcome says what "
                          "is known", group.name)
    return main_exited


PF_EXITING = 0x4  # task flag (include/linux/sched.h): do_exit() has begun
SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def main_process_dying(pid: int) -> bool:
    """Whether PID (a child not yet reaped, so the number is surely it) has a SIGKILL pending or
    has begun to exit, every thread of it. The OOM killer's SIGKILL goes to the whole thread
    group: pending in the group's set (ShdPnd) or each thread's own (SigPnd) until taken, and
    PF_EXITING from then on. One thread exiting is not the process dying: a main thread that
    left by exit(2) while another ran on made a timeout, then a kill, count as no cause, and the
    task that outlived both was reported FAILED."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
        if not threads:
            return True
        for tid in threads:
            if not _thread_dying(f"/proc/{pid}/task/{tid}"):
                return False
    except OSError:
        return True  # gone already
    return True


def _thread_dying(path: str) -> bool:
    """Whether the thread at PATH (/proc/PID/task/TID) has begun to exit or has a SIGKILL pending
    (its own, or its group's); True if it is gone."""
    try:
        with open(f"{path}/stat", "rb") as f:
            flags = int(f.read().rsplit(b") ", 1)[1].split()[6])
        if flags & PF_EXITING:
            return True
        with open(f"{path}/status", "rb") as f:
            status = f.read()
    except (OSError, IndexError, ValueError):
        return True
    for key in (b"\nSigPnd:", b"\nShdPnd:"):
        start = status.find(key)
        if start >= 0 and int(status[start + len(key):status.index(b"\n", start + 1)], 16) & SIGKILL_BIT:
            return True
    return False
