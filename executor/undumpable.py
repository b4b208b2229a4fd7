"""PR_SET_DUMPABLE 0 for the executor's processes that hold its environment (the token, secrets).

Kept free of heavy imports: the container's PID 1 and the commands a container runtime starts
beside the master (`healthcheck`, `check`) call it before anything else, since a process of the
tasks' uid can read a dumpable process's /proc/<pid>/environ, mem and fds.
"""
from __future__ import annotations

import ctypes

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def make_undumpable() -> bool:
    """Nothing but root (CAP_SYS_PTRACE) reads this process's memory, environment or fds from now on."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except OSError:
        return False


def is_dumpable() -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1
    except OSError:
        return True
