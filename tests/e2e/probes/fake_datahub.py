"""A stand-in `datahub` CLI that tries, as a hostile task would, to reach the executor.

Installed as the `datahub` command of a wheel named acryl-datahub (tests/e2e/probe_packages.py),
it runs where `datahub ingest run -c -` runs and prints one line, `PROBE {json}`, saying what it
could do; it never prints a secret (tokens appear only as short hashes).
"""
import errno
import hashlib
import json
import os
import sys


def attempt(action):
    try:
        action()
        return "allowed"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def status_field(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return ""


def master_cgroup_procs(master):
    """Every cgroup.procs of the master's own cgroups, in each mounted hierarchy."""
    paths = []
    with open(f"/proc/{master}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "":
                base = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
            else:
                name = controllers.split(",")[0].replace("name=", "")
                base = f"/sys/fs/cgroup/{name}" if os.path.isdir(f"/sys/fs/cgroup/{name}") else f"/sys/fs/cgroup/{controllers}"
            paths.append(os.path.join(base, path.lstrip("/"), "cgroup.procs"))
    return [p for p in paths if os.path.exists(p)]


def main():
    args = sys.argv[1:]
    envelope = json.loads(sys.stdin.read() or "{}")
    master = os.getppid()
    token = os.environ.get("DATAHUB_GMS_TOKEN", "")

    def read_master_environ():
        with open(f"/proc/{master}/environ", "rb") as f:
            f.read(1)

    def join_master_cgroups():
        for procs in master_cgroup_procs(master):
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

    def other_runs_seen():
        try:
            return sorted(set(os.listdir(os.path.dirname(os.getcwd()))) - {os.path.basename(os.getcwd())})
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))

    def leave_a_file():
        with open("/tmp/dhx-probe-left-behind", "w") as f:
            f.write("x")

    found = {
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "no_new_privs": status_field("NoNewPrivs"), "cap_eff": status_field("CapEff"),
        "read_master_environ": attempt(read_master_environ),
        "join_master_cgroups": attempt(join_master_cgroups),
        "other_runs_seen": other_runs_seen(),
        "leave_a_file_in_tmp": attempt(leave_a_file),
        "workdir_mode": oct(os.stat(os.getcwd()).st_mode & 0o777), "workdir_owner": os.stat(os.getcwd()).st_uid,
        "token_sha256": hashlib.sha256(token.encode()).hexdigest()[:16] if token else None,
        "env_names": sorted(os.environ), "secrets_given": sorted(envelope.get("__secrets__", {})),
    }
    print("PROBE " + json.dumps(found), flush=True)
    if "--report-to" in args:
        with open(args[args.index("--report-to") + 1], "w") as f:
            json.dump({"probe": "done"}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
