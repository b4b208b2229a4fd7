"""Which privileged operations this process may perform, from its effective capability set.

Being uid 0 is not enough: a container's root often lacks CAP_SYS_ADMIN (no mount namespace)
or CAP_SYS_RESOURCE (as on the dev machines), so every feature asks for the capabilities it
needs by name, and its error names the missing ones.
"""
from __future__ import annotations

# capability(7) numbers; only those the sandbox needs.
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SETPCAP = 8
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24

NAMES = {CAP_SETGID: "CAP_SETGID", CAP_SETUID: "CAP_SETUID", CAP_SETPCAP: "CAP_SETPCAP", CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
         CAP_SYS_RESOURCE: "CAP_SYS_RESOURCE"}

# What switching a task to another user takes: setresuid/setresgid/setgroups, and dropping the
# bounding set (PR_CAPBSET_DROP needs CAP_SETPCAP).
SWITCH_USER = (CAP_SETUID, CAP_SETGID, CAP_SETPCAP)
# unshare(CLONE_NEWNS) and mount(2).
MOUNT_NAMESPACE = (CAP_SYS_ADMIN,)
# Raising a hard resource limit (the wrapper's `ulimit -v` sets the hard RLIMIT_AS too).
RAISE_HARD_LIMIT = (CAP_SYS_RESOURCE,)


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    """The CapEff mask of this process (0 when it cannot be read)."""
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def missing(needed: tuple[int, ...], mask: int | None = None) -> list[str]:
    """The names of the capabilities in NEEDED that this process lacks."""
    mask = effective_capabilities() if mask is None else mask
    return [NAMES[cap] for cap in needed if not mask & (1 << cap)]
