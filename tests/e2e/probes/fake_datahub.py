"""A stand-in `datahub` CLI that tries, as a hostile task would, to reach the executor.

Installed as the `datahub` command of a wheel named acryl-datahub (tests/e2e/probe_packages.py),
it runs where `datahub ingest run -c -` runs and prints one line, `PROBE {json}`, saying what it
could do; it never prints a secret (tokens appear only as short hashes).

DHX_PROBE_ROLE (a source's extra environment) makes two probes meet: `linger` stays until a
`neighbour` probe has come and gone (at most a minute); `neighbour` waits for a lingering probe
of another run and tries to read its environment (its token), signal it and list its files.
"""
import errno
import hashlib
import json
import os
import sys
import time


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


def other_probes():
    """Pids of the probes of other runs of the same executor: their command line (readable by
    anyone) names their own report file, under their own run's directory, beside this run's (the
    tasks of other executors on the machine, another test's, are not neighbours)."""
    mine = os.path.realpath(os.getcwd())
    runs = os.path.dirname(mine)
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "--report-to" in argv and "ingest" in argv:
            report = os.path.realpath(argv[argv.index("--report-to") + 1])
            if report.startswith(runs + os.sep) and not report.startswith(mine + os.sep):
                found[int(name)] = os.path.dirname(report)
    return found


def meet_a_neighbour():
    """What this run could do to a lingering probe of another run."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probes = other_probes()
        if probes:
            pid, workdir = next(iter(probes.items()))
            status = {}
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    status[key] = value.split()

            def read_environ():
                with open(f"/proc/{pid}/environ", "rb") as f:
                    f.read(1)

            return {"uid": int(status["Uid"][0]), "read_environ": attempt(read_environ),
                    "signal": attempt(lambda: os.kill(pid, 0)), "list_workdir": attempt(lambda: os.listdir(workdir))}
        time.sleep(0.1)
    return None


def linger():
    """Stay until a neighbour probe came and went (or a minute passed)."""
    deadline = time.monotonic() + 60
    seen = False
    while time.monotonic() < deadline:
        present = bool(other_probes())
        if seen and not present:
            return
        seen = seen or present
        time.sleep(0.1)


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
    role = os.environ.get("DHX_PROBE_ROLE")
    if role == "neighbour":
        found["neighbour"] = meet_a_neighbour()
    print("PROBE " + json.dumps(found), flush=True)
    if role == "neighbour":
        time.sleep(1)  # long enough for the lingering probe's 0.1 s scans to see it, then go
    if role == "linger":
        linger()
    if "--report-to" in args:
        with open(args[args.index("--report-to") + 1], "w") as f:
            json.dump({"probe": "done"}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
