"""`restrict_namespaces.py VALUE COMMAND...`: run COMMAND under the seccomp filter that systemd
installs for RestrictNamespaces=VALUE (src/shared/seccomp-util.c, seccomp_restrict_namespaces),
built with the same libseccomp: unshare(2) and clone(2) with a namespace flag not retained fail
with EPERM, so does setns(2) into one (or every setns when none is retained), clone3(2) with
ENOSYS. libseccomp sets no_new_privs first, as the unit's NoNewPrivileges=yes does. No systemd
runs here as PID 1; this is the part of the unit a process can feel."""
from __future__ import annotations

import ctypes
import errno
import os
import sys

NAMESPACES = {"cgroup": 0x02000000, "ipc": 0x08000000, "net": 0x40000000, "mnt": 0x00020000,
              "pid": 0x20000000, "user": 0x10000000, "uts": 0x04000000}
ALL = sum(NAMESPACES.values())
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def retained(value: str) -> int:
    """The namespace flags RestrictNamespaces=VALUE lets through (systemd.exec(5))."""
    value = value.strip()
    if value in ("yes", "true", "on", "1"):
        return 0
    if value in ("no", "false", "off", "0", ""):
        return ALL
    named = sum(NAMESPACES[name] for name in value.lstrip("~").split())
    return ALL & ~named if value.startswith("~") else named


def restrict(value: str) -> None:
    keep = retained(value)
    if keep == ALL:
        return
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(SCMP_ACT_ALLOW)

    def deny(action: int, syscall: str, *conditions: ArgCmp) -> None:
        number = lib.seccomp_syscall_resolve_name(syscall.encode())
        array = (ArgCmp * max(1, len(conditions)))(*conditions)
        if lib.seccomp_rule_add_array(context, action, number, len(conditions), array) != 0:
            raise OSError(f"seccomp rule for {syscall} refused")

    deny(scmp_act_errno(errno.ENOSYS), "clone3")
    if keep == 0:
        deny(scmp_act_errno(errno.EPERM), "setns")
    else:
        deny(scmp_act_errno(errno.EPERM), "setns", ArgCmp(1, SCMP_CMP_EQ, 0, 0))
    for flag in NAMESPACES.values():
        if keep & flag:
            continue
        deny(scmp_act_errno(errno.EPERM), "unshare", ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag))
        deny(scmp_act_errno(errno.EPERM), "clone", ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag))
        if keep:
            deny(scmp_act_errno(errno.EPERM), "setns", ArgCmp(1, SCMP_CMP_MASKED_EQ, flag, flag))
    if lib.seccomp_load(context) != 0:
        raise OSError("seccomp_load failed")


if __name__ == "__main__":
    restrict(sys.argv[1])
    os.execvp(sys.argv[2], sys.argv[2:])
