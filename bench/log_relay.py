"""The log relay (child pipe -> masked file + tail) against a plain pipe-to-file loop, side by
side in one run.

    .venv/bin/python bench/log_relay.py [--mib 256] [--rounds 5] [--modes flood,lines] [--against REV]

Both read the same child: a Python process that builds realistic ingestion log lines
(timestamps, logger names, urns; ~110 bytes a line), waits for a go on stdin (the clock starts
there), then writes them to its stdout pipe as fast as it can, either in 1 MiB writes ("flood":
the relay's own ceiling) or one write per line ("lines": as an unbuffered Python logger writes,
and the executor runs tasks with PYTHONUNBUFFERED=1). The baseline enlarges the pipe and sizes
its reads as the relay does (task_log.PIPE_BYTES, CHUNK) and writes each read to a file, nothing
else. The relay is TaskLog.pump as the runner uses it, with no file cap (the baseline writes
everything too) and a masker holding 0, 3 or 20 secrets: 3 is a 1.7 KB PEM-shaped private key,
a password with characters that JSON and URLs escape, and an ingest token; 20 adds a second key
and 16 tokens and passwords. The "in output" row also writes the key and the password once per
MiB, so the masking itself runs, not only the search that clears clean text.

Rounds alternate baseline and relay so machine noise hits both alike; each figure is the median
of its rounds, in MiB/s of child output, and the ratio is relay / baseline. Beside each rate,
the CPU milliseconds this process (the reader) spent per MiB: steadier than rates on a busy
machine, and what a flood costs where the reader is the bottleneck. --against REV also
measures TaskLog and Masker as they were at a git revision, for a before/after in the same run.
Not a test: machines are shared and noisy, figures are for comparison.
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import importlib.util
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from executor.runtime.masking import Masker  # noqa: E402
from executor.runtime.task_log import CHUNK, PIPE_BYTES, TaskLog  # noqa: E402

WRITER = r"""
import os, random, sys
random.seed(7)
loggers = ["datahub.ingestion.run.pipeline", "datahub.ingestion.source.sql.mysql", "datahub.emitter.rest_emitter"]
words = ("Processing table schema column workunit emitted records took retrying fetched sample profile "
         "urn:li:dataset:(urn:li:dataPlatform:mysql,analytics.orders,PROD) 12345 0.003s OK").split()
lines = [f"[2024-05-01 12:{i // 60 % 60:02d}:{i % 60:02d},{i % 1000:03d}] INFO {{{random.choice(loggers)}:{i % 700}}} - "
         + " ".join(random.choice(words) for _ in range(random.randint(3, 9))) for i in range(20000)]
block = ("\n".join(lines) + "\n").encode()
mode, mib, leak = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode() if len(sys.argv) > 3 else b""
piece = (block * (1 + (1 << 20) // len(block)))[: 1 << 20]
each = [line + b"\n" for line in block.split(b"\n")[:-1]]
sys.stderr.write("r\n")
sys.stderr.flush()  # ready: its lines are built
sys.stdin.buffer.read(1)  # go: the clock starts now
for _ in range(mib):
    if leak:
        os.write(1, leak)
    if mode == "flood":
        os.write(1, piece)
    else:  # as an unbuffered Python logger writes: a write per line
        written = 0
        for line in each:
            written += os.write(1, line)
            if written >= 1 << 20:
                break
"""


def pem_shaped_key(seed: int) -> str:
    body = base64.b64encode(random.Random(seed).randbytes(1218)).decode()
    body = "".join(body[i:i + 64] + "\n" for i in range(0, len(body), 64))
    return f"-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n"


def secrets(count: int) -> list[str]:
    three = [pem_shaped_key(1), 'p@ss"w/rd-42 &x', "dhx_ingest-only-token-for-exe_1"]
    rng = random.Random(2)
    more = [pem_shaped_key(3)] + [f"tok-{rng.getrandbits(96):x}" if i % 2 else f"Pw!{rng.getrandbits(40):x}#"
                                  for i in range(16)]
    return (three + more)[:count]


def child(mode: str, mib: int, leak: str) -> subprocess.Popen:
    """The writer, once it says it is ready (its lines built): its start-up and the building of
    its lines are not the relay's time, and counted on both sides they pulled the ratio to 1."""
    process = subprocess.Popen([sys.executable, "-c", WRITER, mode, str(mib)] + ([leak] if leak else []),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stderr.readline() == b"r\n"
    return process


def cpu_s() -> float:
    """CPU this process has used: the reader's, as nothing else in it runs meanwhile."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def go(process: subprocess.Popen) -> float:
    """Lets the child write (its lines are built by now): the start of the measurement."""
    process.stdin.write(b"g")
    process.stdin.close()
    return time.perf_counter()


def plain(mode: str, mib: int, leak: str, path: str) -> float:
    process = child(mode, mib, leak)
    fd = process.stdout.fileno()
    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # as the relay does: the same pipe, the same reads
    cpu, started = cpu_s(), go(process)
    with open(path, "wb") as f:
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            f.write(chunk)
    elapsed, cpu = time.perf_counter() - started, cpu_s() - cpu
    process.stdout.close()
    assert process.wait() == 0
    return mib / elapsed, cpu / mib * 1e3


def relay(task_log_class, masker, mode: str, mib: int, leak: str, path: str) -> float:
    process = child(mode, mib, leak)
    log = task_log_class(path, masker, max_file_bytes=4 * mib << 20)
    pump = log.pump(process.stdout)
    cpu, started = cpu_s(), go(process)
    pump.join()
    elapsed, cpu = time.perf_counter() - started, cpu_s() - cpu
    log.close()
    assert process.wait() == 0
    assert os.path.getsize(path) >= (mib << 20) * 0.9, "the relay wrote everything"
    return mib / elapsed, cpu / mib * 1e3


def modules_at(rev: str, where: Path):
    """TaskLog and Masker as they were at REV, loaded as a package of their own."""
    package = where / "relay_at_rev"
    package.mkdir()
    (package / "__init__.py").write_text("")
    # The whole package as it was, so the relative imports of that revision (executor_lines.py,
    # since 79093b9) resolve; its absolute ones (vocabulary/) come from this tree.
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:executor/runtime/"],
                             check=True, capture_output=True, text=True).stdout.split()
    for file_name in (n for n in listing if n.endswith(".py") and n != "__init__.py"):
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:executor/runtime/{file_name}"],
                                check=True, capture_output=True, text=True).stdout
        (package / file_name).write_text(source)
    spec = importlib.util.spec_from_file_location("relay_at_rev", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["relay_at_rev"] = module
    spec.loader.exec_module(module)
    import relay_at_rev.masking
    import relay_at_rev.task_log
    return relay_at_rev.task_log.TaskLog, relay_at_rev.masking.Masker


def measure(mib: int, rounds: int, against: str | None, modes: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        old = modules_at(against, Path(tmp)) if against else None
        cases = [(mode, count, "") for mode in modes for count in (0, 3, 20)] + [("flood", 3, "in output")]
        results = []
        for mode, count, leaking in cases:
            if mode not in modes:
                continue
            values = secrets(count)
            leak = f"pw={values[1]} key follows\n{values[0]}" if leaking else ""
            size = mib if mode == "flood" else max(1, mib // 8)
            runs: dict[str, list[tuple[float, float]]] = {"plain": [], "relay": []}
            if old:
                runs["before"] = []
            for _ in range(rounds):
                runs["plain"].append(plain(mode, size, leak, f"{tmp}/plain.log"))
                runs["relay"].append(relay(TaskLog, Masker(values), mode, size, leak, f"{tmp}/relay.log"))
                if old:
                    runs["before"].append(relay(old[0], old[1](values), mode, size, leak, f"{tmp}/before.log"))
            if leak:
                text = Path(f"{tmp}/relay.log").read_bytes()
                assert all(line.encode() not in text for line in values[0].splitlines()[1:-1]), "a key line leaked"
            row = {"mode": mode, "mib": size, "secrets": count, "note": leaking,
                   **{k: statistics.median(rate for rate, _ in v) for k, v in runs.items()},
                   **{f"{k}_cpu": statistics.median(cpu for _, cpu in v) for k, v in runs.items()}}
            row["ratio"] = row["relay"] / row["plain"]
            if old:
                row["ratio_before"] = row["before"] / row["plain"]
            results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB the child floods per run (an eighth of it a line at a time)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="flood,lines", help="flood (1 MiB writes), lines (a write per line)")
    parser.add_argument("--against", metavar="REV", help="also measure task_log.py and masking.py at this git revision")
    args = parser.parse_args()
    rows = measure(args.mib, args.rounds, args.against, args.modes.split(","))
    print(f"median of {args.rounds} interleaved rounds, {os.cpu_count()} CPUs; MiB/s of child output "
          "(the reader's CPU ms per MiB)")
    header = f"{'writes':7} {'MiB':>4} {'secrets':>7} {'':10} {'plain':>12} {'relay':>12} {'ratio':>6}"
    if args.against:
        header += f" {args.against[:12]:>12} {'ratio':>6}"
    print(header)
    for r in rows:
        line = (f"{r['mode']:7} {r['mib']:>4} {r['secrets']:>7} {r['note']:10} "
                f"{r['plain']:5.0f} ({r['plain_cpu']:4.1f}) {r['relay']:5.0f} ({r['relay_cpu']:4.1f}) {r['ratio']:6.2f}")
        if args.against:
            line += f" {r['before']:5.0f} ({r['before_cpu']:4.1f}) {r['ratio_before']:6.2f}"
        print(line)


if __name__ == "__main__":
    main()
