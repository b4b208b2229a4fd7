"""The unprivileged user a task runs as.

Numeric ids only, no passwd lookup: the sandbox must not depend on /etc/passwd (a container
may have no entry for the id), and a number says exactly what the kernel will check.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import SandboxError

# The kernel's (uid_t)-1 means "unchanged" to setresuid, so the largest usable id is one below.
MAX_ID = (1 << 32) - 2


@dataclass(frozen=True)
class TaskUser:
    """Run the task as UID:GID with no supplementary groups, no_new_privs and no capabilities.

    Root (0) is refused for either id: a task with uid 0 owns the cgroup files and could move
    itself out of its cgroups, and gid 0 opens whatever is group-writable by root.
    """

    uid: int
    gid: int

    @classmethod
    def parse(cls, text: str) -> TaskUser:
        """ "UID" or "UID:GID" (GID defaults to UID), e.g. "61234" or "65534:65534"."""
        uid_text, _, gid_text = text.partition(":")
        try:
            uid = int(uid_text)
            gid = int(gid_text) if gid_text else uid
        except ValueError:
            raise SandboxError(f"invalid task user {text!r}: use UID or UID:GID, numbers only (e.g. 61234:61234)") from None
        user = cls(uid, gid)
        user.validate()
        return user

    def validate(self) -> None:
        for label, value in (("uid", self.uid), ("gid", self.gid)):
            if value == 0:
                raise SandboxError(f"a task user must be unprivileged, got {label} 0: pick a uid and gid other than root's")
            if not 0 < value <= MAX_ID:
                raise SandboxError(f"task user {label} {value} is out of range (1..{MAX_ID})")

    def setpriv_options(self) -> list[str]:
        """setpriv(1) options that switch to this user and leave no privilege behind.

        --inh-caps and --bounding-set empty the inheritable and bounding sets (so no file
        capability can be gained on exec), --ambient-caps the ambient set, and leaving uid 0
        clears the permitted and effective sets; --no-new-privs makes setuid binaries inert.
        """
        return [
            f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--no-new-privs",
            "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
        ]

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"
