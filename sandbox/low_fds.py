"""Two descriptor numbers below 10, kept by a spawner for the pipes of the wrapper it forks.

The held wrapper (spawn.py) reads its release from one pipe and says it is ready on another.
dash starts in about half the CPU bash takes (~0.6 ms less per task, measured with
bench/peers.py), but a POSIX shell's redirections address descriptors 0 to 9 only, and in a
multi-threaded process pipes land wherever the lowest free number is, far above 9. So the
spawner takes two numbers below 10 once, when it is made, and keeps them open (on /dev/null,
close-on-exec) for its whole life: no other thread's open() can be handed them. Before each
fork it moves the two pipe ends onto them (dup3, close-on-exec; Popen's pass_fds opens them to
the child only), and right after it parks them on /dev/null again, which also drops the
parent's copies of the child's ends (holding the ready pipe's write end, the parent would never
see a wrapper that died before it was ready).

Only the spawner thread moves and parks them, one fork at a time. Where two numbers below 10
are not free when the spawner is made, there is nothing to keep, and the wrapper runs on bash
with the pipes where they are.
"""
from __future__ import annotations

import fcntl
import os

SHELL_FD_LIMIT = 10  # a POSIX shell's redirection takes one digit


class LowDescriptors:
    def __init__(self, release: int, ready: int, parked: int) -> None:
        self.release = release
        self.ready = ready
        self._parked = parked  # /dev/null, what both numbers hold between forks

    @classmethod
    def reserve(cls) -> LowDescriptors | None:
        """Two free numbers below 10, now held; None where fewer than two are free."""
        parked = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        taken: list[int] = []
        try:
            for _ in range(2):
                number = fcntl.fcntl(parked, fcntl.F_DUPFD_CLOEXEC, 3)
                taken.append(number)
                if number >= SHELL_FD_LIMIT:
                    raise LookupError
        except (LookupError, OSError):
            for number in [*taken, parked]:
                os.close(number)
            return None
        return cls(taken[0], taken[1], parked)

    def hold(self, release_read: int, ready_write: int) -> None:
        """Put the wrapper's ends on the kept numbers, close-on-exec (pass_fds opens them to the child)."""
        os.dup2(release_read, self.release, inheritable=False)
        os.dup2(ready_write, self.ready, inheritable=False)

    def park(self) -> None:
        """Back on /dev/null: the parent keeps no copy of the child's ends."""
        os.dup2(self._parked, self.release, inheritable=False)
        os.dup2(self._parked, self.ready, inheritable=False)

    def close(self) -> None:
        for number in (self.release, self.ready, self._parked):
            os.close(number)
