"""Upstream mode's start latency: a run started in DataHub, to its task's process starting on
our executor, against the same run started on our control plane directly, in one run.

    .venv/bin/python bench/upstream_latency.py [--runs 10] [--intervals 0.25,1,2]

Upstream (docs/datahub-oss.md): a second control plane, embedded, plays the self-hosted DataHub
(as tests/e2e/test_upstream_datahub_end_to_end.py does); a source whose executorId names our
pool is run there with DataHub's GraphQL createIngestionExecutionRequest, sent through
acryl-datahub's DataHubGraph.execute_graphql. The upstream-mode control plane finds the request
at its next discovery scan (controlplane/upstream/sync.py), adopts it, queues it on the pool, and
a real `datahub-executor run` claims it (the claim answer carries DataHub's sink) and starts it.

Baseline: the same recipe as a source of the upstream-mode control plane itself, run with its
own GraphQL createIngestionExecutionRequest through the same client: the queue, the claim and
the start, without the discovery.

The clock stops at the executor's own log line "task process <pid> started" (executor/runner.py,
JSON logs: the record's timestamp), written as soon as the sandbox has started the child; the
clock starts just before the GraphQL call. Between them, the upstream-mode control plane's record
of the execution gives where the time went: request -> taken (its created_at: for upstream the
discovery wait and scan, for the baseline the GraphQL call's own write), -> queued (its
enqueued_at: the message sent) and -> child (the executor's receive, claim and start).

The discovery poll: the loop scans DataHub every poll_interval_s (it wakes for the scan on
time, and at least every TICK_S for results and cancels), so a request waits half an interval on
average, plus the scan's own work. Each setting of
--intervals is measured; the interval is changed on the running loop between runs
(UpstreamSync.config, read at every tick), so that every setting and the baseline are measured
interleaved on the same servers and executor, in a rotated order per round, each request after
a random pause (a run's end is not in step with the loop's ticks, and neither is the next request).

The recipe is datahub-mock-data into a file sink, with acryl-datahub 1.7.0.17 from the executor's
venv cache (.cache/venvs, as the e2e tests build it): nothing is installed. Each run is waited
for to its end (SUCCESS) before the next starts, so the executor is idle at every request; one
unmeasured warm-up of each case comes first. Every server listens on 127.0.0.1.

Measured 2026-11-26 on "vm" (2 CPUs), --runs 5, 2 min 40 s, quiet machine (load average 0.67
before, 0.66 after):

    case                              p50 ms  p90 ms  mean ms  ->taken  ->queued  ->child  ratio p50  ratio p90
    baseline: direct on our CP            57      74       59       13         2       44      1.00x      1.00x
    upstream, poll_interval_s 0.25       146     255      169      109         3       57      2.57x      3.42x
    upstream, poll_interval_s 1          554     889      569      509         2       58      9.76x     11.93x
    upstream, poll_interval_s 2 (def.)  1017    1384      886      832         2       51     17.92x     18.59x

    added on average: 0.25 s +110 ms, of which the discovery wait 97 ms (expected 125: half the interval)
                      1 s    +510 ms, of which the discovery wait 496 ms (expected 500)
                      2 s    +827 ms, of which the discovery wait 819 ms (expected 1000)

The discovery poll is 88-99% of the added latency: the rest (the stand-in's GraphQL write, the
scan, the adoption, the claim with DataHub's sink) adds 7-14 ms to the direct path. The loop
now wakes for each scan on time, so a shorter interval buys what it should (0.25 s: +110 ms;
before that fix it measured the same as 1 s). Each scan is one listExecutionRequests query on
DataHub: the interval trades DataHub's load for start latency.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datahub.ingestion.graph.client import DataHubGraph, DatahubClientConfig  # noqa: E402

from controlplane import entities as E  # noqa: E402
from controlplane.testing import ControlPlaneHandle, running_controlplane  # noqa: E402
from controlplane.upstream.sync import TICK_S, UpstreamConfig  # noqa: E402
from executor.testing import DATAHUB_VERSION, VENV_CACHE, ExecutorProcess, mock_recipe, remove_cgroup_roots  # noqa: E402
from vocabulary import statuses as S  # noqa: E402

POOL = "upstream-bench"
BASELINE = "direct"
DEFAULT_INTERVALS = (0.25, 1.0, 2.0)
PAUSE_S = 2.0  # the longest random pause before a request: a whole discovery period at 2 s
RUN_TIMEOUT_S = 180
CREATE_SOURCE = "mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }"
RUN_SOURCE = "mutation($u: String!) { createIngestionExecutionRequest(input: {ingestionSourceUrn: $u}) }"
STARTED = "task process "  # executor/runner.py: "task process {pid} started: {task} ..."


@dataclass(frozen=True)
class Sample:
    case: str  # BASELINE, or the poll interval of an upstream run ("0.25")
    total_s: float  # request -> the task's process started
    taken_s: float  # request -> the execution exists on the upstream-mode control plane
    queued_s: float  # that -> its message sent to the pool's queue
    to_child_s: float  # that -> the task's process started (the executor's receive, claim and start)


def write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def label(interval: float) -> str:
    return f"{interval:g}"


class Bench:
    """The stand-in DataHub, the upstream-mode control plane and one executor on its pool."""

    def __init__(self, datahub: ControlPlaneHandle, cp: ControlPlaneHandle, tmp: Path) -> None:
        self.datahub, self.cp, self.tmp = datahub, cp, tmp
        self.sync = cp.server.upstream
        self.datahub_graph = DataHubGraph(DatahubClientConfig(server=datahub.gms_url, token=datahub.admin_token))
        self.direct_graph = DataHubGraph(DatahubClientConfig(server=cp.gms_url, token=cp.admin_token))
        # DataHub's UI saves a recipe as JSON text; both sources get the same one.
        recipe = json.dumps({"source": {"type": "datahub-mock-data", "config": {}},
                             "sink": {"type": "file", "config": {"filename": str(tmp / "mock.json")}}})
        self.upstream_source = self._create_source(self.datahub_graph, recipe)
        self.direct_source = self._create_source(self.direct_graph, recipe)
        self.cgroup_root = f"bench-upstream-{uuid.uuid4().hex[:8]}"
        self.executor: ExecutorProcess | None = None
        self._seen_lines = 0
        self._started: dict[str, float] = {}
        self.upstream_urns: list[str] = []

    @staticmethod
    def _create_source(graph: DataHubGraph, recipe: str) -> str:
        config = {"recipe": recipe, "executorId": POOL}
        return graph.execute_graphql(CREATE_SOURCE, variables={"i": {"name": "latency", "type": "datahub-mock-data",
                                                                     "config": config}})["createIngestionSource"]

    def start_executor(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUB_", "AWS_"))}
        env.update({
            "DATAHUB_GMS_URL": self.cp.gms_url, "DATAHUB_GMS_TOKEN": self.cp.create_executor_token([POOL]),
            "DATAHUB_EXECUTOR_POOL_ID": POOL, "DATAHUB_EXECUTOR_ID": "upstream-bench-executor",
            "DATAHUB_EXECUTOR_WORK_DIR": str(self.tmp / "work"), "DATAHUB_EXECUTOR_VENV_CACHE_DIR": str(VENV_CACHE),
            "DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION": DATAHUB_VERSION, "DATAHUB_EXECUTOR_CGROUP_ROOT": self.cgroup_root,
            "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0", "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(self.tmp),
            "DATAHUB_EXECUTOR_LOG_JSON": "true",
            # As the e2e harness runs it on one machine: tasks as the executor's user, no private /tmp.
            "DATAHUB_EXECUTOR_TASK_USER": "none", "DATAHUB_EXECUTOR_TASK_PRIVATE_TMP": "false",
        })
        self.executor = ExecutorProcess(env)
        self.executor.wait_for_line("Starting datahub executor worker", timeout_s=60)

    def close(self) -> list[str]:
        """Stop the executor; returns the task cgroups it left (swept and removed now)."""
        if self.executor is not None:
            self.executor.stop()
        return remove_cgroup_roots({self.cgroup_root})

    # one run ----------------------------------------------------------------------------------
    def set_interval(self, interval: float) -> None:
        """The loop's poll interval from now on; returns once a scan scheduled under the old one
        has passed, so the next request meets the new schedule."""
        old = self.sync.config.poll_interval_s
        if old == interval:
            return
        self.sync.config = dataclasses.replace(self.sync.config, poll_interval_s=interval)
        time.sleep(old + TICK_S + 0.2)

    def run(self, case: str) -> Sample:
        if case != BASELINE:
            self.set_interval(float(case))
        time.sleep(random.uniform(0, PAUSE_S))
        requested = time.time()
        if case == BASELINE:
            urn = self.direct_graph.execute_graphql(RUN_SOURCE, variables={"u": self.direct_source})
        else:
            urn = self.datahub_graph.execute_graphql(RUN_SOURCE, variables={"u": self.upstream_source})
        urn = urn["createIngestionExecutionRequest"]
        if case != BASELINE:
            self.upstream_urns.append(urn)
        execution_id = E.key_of(urn, E.EXECUTION)
        started = self._wait_started(execution_id, requested + RUN_TIMEOUT_S)
        row = self._wait_final(execution_id, requested + RUN_TIMEOUT_S)
        taken, queued = row["created_at"], row["enqueued_at"]
        return Sample(case, started - requested, taken - requested, queued - taken, started - queued)

    def _wait_started(self, execution_id: str, deadline: float) -> float:
        while execution_id not in self._started:
            self._read_executor_log()
            if time.time() > deadline:
                raise TimeoutError(f"execution {execution_id}: no task process started in {RUN_TIMEOUT_S} s; the "
                                   "executor's log:\n" + "\n".join(self.executor.lines[-20:]))
            time.sleep(0.02)
        return self._started[execution_id]

    def _read_executor_log(self) -> None:
        lines = self.executor.lines
        while self._seen_lines < len(lines):
            line = lines[self._seen_lines]
            self._seen_lines += 1
            if STARTED not in line:
                continue
            record = json.loads(line)["record"]
            if record["message"].startswith(STARTED) and " started" in record["message"]:
                self._started[record["extra"]["execution_id"]] = record["time"]["timestamp"]

    def _wait_final(self, execution_id: str, deadline: float) -> dict[str, Any]:
        while True:
            row = self.cp.cp.store.one("SELECT status, reason, created_at, enqueued_at FROM executions WHERE id=?",
                                       (execution_id,))
            if row is not None and row["status"] in S.FINAL:
                break
            if time.time() > deadline:
                raise TimeoutError(f"execution {execution_id} is {row and row['status']} after {RUN_TIMEOUT_S} s")
            time.sleep(0.1)
        if row["status"] != S.SUCCESS:
            tail = (self.cp.execution(execution_id).get("log_tail") or "")[-3000:]
            raise RuntimeError(f"execution {execution_id} ended {row['status']} ({row['reason']}):\n{tail}")
        return row

    def datahub_shows_success(self, timeout_s: float = 30) -> None:
        """Every upstream run is SUCCESS in DataHub too: the runs measured are the runs DataHub sees."""
        from datahub.metadata.schema_classes import ExecutionRequestResultClass

        deadline = time.monotonic() + timeout_s
        for urn in self.upstream_urns:
            while (result := self.datahub_graph.get_aspect(urn, ExecutionRequestResultClass)) is None or \
                    result.status != S.SUCCESS:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"DataHub shows {urn} as {result and result.status}, not SUCCESS")
                time.sleep(0.2)


@contextmanager
def running_bench(tmp: Path, first_interval: float) -> Iterator[Bench]:
    """The fixture of tests/e2e/test_upstream_datahub_end_to_end.py, with the executor's JSON log."""
    with running_controlplane(tmp / "datahub") as datahub:
        ingest_token = datahub._admin("POST", "/tokens", json={"kind": "ingest", "description": "upstream tasks"})
        config = UpstreamConfig(url=datahub.gms_url, token_file=datahub.server.admin_token_path,
                                ingest_token_file=write_private(tmp / "ingest-token", ingest_token["token"]),
                                poll_interval_s=first_interval)
        with running_controlplane(tmp / "controlplane", upstream=config) as cp:
            cp.create_pool(POOL, visibility_timeout_s=60)
            bench = Bench(datahub, cp, tmp)
            try:
                bench.start_executor()
                yield bench
            finally:
                left = bench.close()
                if left:
                    print(f"the executor left task cgroups behind (removed): {left}", file=sys.stderr)


# --- figures -----------------------------------------------------------------------------------
def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def figures(samples: list[Sample]) -> dict[str, float]:
    totals = [s.total_s for s in samples]
    mean = statistics.mean
    return {"n": len(samples), "p50_s": statistics.median(totals), "p90_s": percentile(totals, 0.9),
            "mean_s": mean(totals), "taken_mean_s": mean(s.taken_s for s in samples),
            "queued_mean_s": mean(s.queued_s for s in samples), "to_child_mean_s": mean(s.to_child_s for s in samples),
            "all_s": totals}


def measure(runs: int = 10, intervals: tuple[float, ...] = DEFAULT_INTERVALS) -> dict[str, Any]:
    """RUNS of the baseline and of upstream at each of INTERVALS, interleaved. Returns
    {"baseline": figures, "upstream": {label: figures + ratio/added/discovery split}, ...}."""
    cases = [BASELINE] + [label(i) for i in intervals]
    load_before = os.getloadavg()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as tmp_name, running_bench(Path(tmp_name), intervals[0]) as bench:
        for case in cases:  # warm-up: page caches, the venv's bytecode, connections; not counted
            bench.run(case)
        for round_no in range(runs):
            rotation = round_no % len(cases)
            for case in cases[rotation:] + cases[:rotation]:
                samples.append(bench.run(case))
        bench.datahub_shows_success()
    load_after = os.getloadavg()
    base = figures([s for s in samples if s.case == BASELINE])
    upstream = {}
    for interval in intervals:
        f = figures([s for s in samples if s.case == label(interval)])
        added = f["mean_s"] - base["mean_s"]
        discovery = f["taken_mean_s"] - base["taken_mean_s"]
        upstream[label(interval)] = {
            **f, "interval_s": interval, "ratio_p50": f["p50_s"] / base["p50_s"], "ratio_p90": f["p90_s"] / base["p90_s"],
            "added_p50_s": f["p50_s"] - base["p50_s"], "added_mean_s": added, "discovery_mean_s": discovery,
            "rest_mean_s": added - discovery, "expected_discovery_s": interval / 2,  # the loop scans every interval, on time
            "discovery_share": discovery / added if added > 0 else float("nan")}
    return {"runs": runs, "baseline": base, "upstream": upstream, "tick_s": TICK_S,
            "load_before": load_before, "load_after": load_after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="measured runs of each case")
    parser.add_argument("--intervals", default=",".join(label(i) for i in DEFAULT_INTERVALS),
                        help="the upstream loop's poll_interval_s settings to measure, comma-separated")
    args = parser.parse_args()
    intervals = tuple(float(x) for x in args.intervals.split(","))
    r = measure(args.runs, intervals)
    ms = lambda s: s * 1000  # noqa: E731
    base = r["baseline"]
    print(f"\nupstream start latency: request -> task process started; {r['runs']} runs each, interleaved; "
          f"load average {r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after")
    print(f"{'case':30} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8} {'->taken':>8} {'->queued':>8} {'->child':>8} "
          f"{'ratio p50':>9} {'ratio p90':>9}")
    for name, u in [("baseline: direct on our CP", base)] + [(f"upstream, poll_interval_s {k}", v)
                                                             for k, v in r["upstream"].items()]:
        print(f"{name:30} {ms(u['p50_s']):8.0f} {ms(u['p90_s']):8.0f} {ms(u['mean_s']):8.0f} {ms(u['taken_mean_s']):8.0f} "
              f"{ms(u['queued_mean_s']):8.0f} {ms(u['to_child_mean_s']):8.0f} {u.get('ratio_p50', 1.0):8.2f}x "
              f"{u.get('ratio_p90', 1.0):8.2f}x")
    print("(->taken, ->queued, ->child: means of request -> the execution on our control plane -> its message sent "
          "-> the task's process started)")
    for name, u in r["upstream"].items():
        print(f"poll_interval_s {name}: +{ms(u['added_mean_s']):.0f} ms on average ({u['added_p50_s'] * 1000:+.0f} ms at "
              f"p50), of which the discovery wait {ms(u['discovery_mean_s']):.0f} ms ({u['discovery_share']:.0%}; half "
              f"the scan period of {u['interval_s']:g} s is {ms(u['expected_discovery_s']):.0f} ms) "
              f"and the rest {ms(u['rest_mean_s']):+.0f} ms")
    for name, u in [("baseline", base)] + list(r["upstream"].items()):
        print(f"  {name}: " + ", ".join(f"{ms(x):.0f}" for x in u["all_s"]))


if __name__ == "__main__":
    main()
