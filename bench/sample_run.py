"""The quickstart's sample run end to end, against the same recipe run by hand, in one run.

    .venv/bin/python bench/sample_run.py [--runs 5]

Ours: the quickstart's sample source (controlplane/quickstart.py SAMPLE_RECIPE: datahub-mock-data
into the control plane through DataHub's default datahub-rest sink, memory limit 1G) run on a
real `datahub-executor run` process, timed from DataHub's GraphQL createIngestionExecutionRequest
to the control plane holding SUCCESS (its finished_at): the message through SQS, the claim, the
task's start in its cgroup, `datahub ingest`, the log upload and the result.

Baseline: the same recipe run directly with the same CLI (acryl-datahub 1.7.0.17 in the
executor's venv cache, .cache/venvs, as the e2e tests use it), with DATAHUB_GMS_URL and
DATAHUB_GMS_TOKEN pointing at the same control plane, timed from spawn to exit. It gets the flags
the executor gives (`--report-to FILE --no-spinner`, executor/runtime/tasks.py), so both do the
same work; the recipe is a file here and stdin there.

Runs alternate ours and baseline (noise hits both alike) after one unmeasured warm-up of each;
the figures are medians and the ratio is ours / baseline. The executor is idle and its venv
built before the first run: this is the overhead of a run, not of a first install.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from controlplane.quickstart import SAMPLE_RECIPE  # noqa: E402
from controlplane.testing import ControlPlaneHandle, running_controlplane  # noqa: E402
from executor.runtime.venvs import VenvCache, marker_of, plugins_for  # noqa: E402
from executor.testing import DATAHUB_VERSION, EXECUTOR, VENV_CACHE, ExecutorProcess, remove_cgroup_roots  # noqa: E402
from vocabulary.safe_yaml import load_bounded  # noqa: E402

POOL = "sample"
MEMORY_LIMIT = "1G"  # as the quickstart's sample source


def datahub_cli() -> Path:
    """The CLI the executor runs the sample with: its venv cache's acryl-datahub DATAHUB_VERSION."""
    venv = VenvCache(str(VENV_CACHE), python=str(Path(EXECUTOR[0]).parent / "python")).venv_dir(
        DATAHUB_VERSION, plugins_for(load_bounded(SAMPLE_RECIPE)), [])
    if not marker_of(venv).exists():
        raise SystemExit(f"acryl-datahub {DATAHUB_VERSION} is not in the venv cache ({venv}); run the e2e tests or the "
                         "quickstart once to build it")
    return venv / "bin" / "datahub"


def start_executor(cp: ControlPlaneHandle, tmp: Path, cgroup_root: str) -> ExecutorProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUB_", "AWS_"))}
    env.update({
        "DATAHUB_GMS_URL": cp.gms_url, "DATAHUB_GMS_TOKEN": cp.create_executor_token([POOL]),
        "DATAHUB_EXECUTOR_POOL_ID": POOL, "DATAHUB_EXECUTOR_ID": "sample-executor",
        "DATAHUB_EXECUTOR_WORK_DIR": str(tmp / "work"), "DATAHUB_EXECUTOR_VENV_CACHE_DIR": str(VENV_CACHE),
        "DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION": DATAHUB_VERSION, "DATAHUB_EXECUTOR_CGROUP_ROOT": cgroup_root,
        "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0", "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(tmp),
        # As the quickstart and the e2e harness run it on one machine: tasks as the executor's user.
        "DATAHUB_EXECUTOR_TASK_USER": "none", "DATAHUB_EXECUTOR_TASK_PRIVATE_TMP": "false",
    })
    executor = ExecutorProcess(env)
    executor.wait_for_line("Starting datahub executor worker", timeout_s=60)
    return executor


def run_ours(cp: ControlPlaneHandle, source_id: str, timeout_s: float = 600) -> float:
    started = time.time()
    execution = cp.run_source(source_id)["id"]
    done = cp.wait_for_status(execution, {"SUCCESS", "FAILURE", "CANCELLED", "TIMEOUT", "ABORTED"}, timeout_s)
    if done["status"] != "SUCCESS":
        raise RuntimeError(f"sample run {execution} ended {done['status']} ({done.get('reason')}):\n"
                           f"{(done.get('log_tail') or '')[-3000:]}")
    return done["finished_at"] - started


def run_baseline(cp: ControlPlaneHandle, cli: Path, recipe: Path, timeout_s: float = 600) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUB_", "AWS_"))}
    env.update({"DATAHUB_GMS_URL": cp.gms_url, "DATAHUB_GMS_TOKEN": cp.admin_token, "DATAHUB_TELEMETRY_ENABLED": "false"})
    started = time.time()
    done = subprocess.run([str(cli), "ingest", "run", "-c", str(recipe), "--report-to", str(recipe.parent / "report.json"),
                           "--no-spinner"],
                          env=env, cwd=recipe.parent, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout_s)
    elapsed = time.time() - started
    if done.returncode != 0:
        raise RuntimeError(f"datahub ingest exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return elapsed


def measure(runs: int) -> dict[str, Any]:
    cli = datahub_cli()
    cgroup_root = f"bench-sample-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp_name, running_controlplane(Path(tmp_name) / "cp") as cp:
        tmp = Path(tmp_name)
        recipe = tmp / "sample.yml"
        recipe.write_text(SAMPLE_RECIPE)
        cp.create_pool(POOL, default=True)
        source = cp.create_source("sample-mock-data", SAMPLE_RECIPE, pool_id=POOL,
                                  extra_env={"EXECUTOR_TASK_MEMORY_LIMIT": MEMORY_LIMIT})
        executor = start_executor(cp, tmp, cgroup_root)
        ours, baseline = [], []
        try:
            run_ours(cp, source["id"])  # warm-up: page caches, the venv's bytecode, connections
            run_baseline(cp, cli, recipe)
            for _ in range(runs):
                ours.append(run_ours(cp, source["id"]))
                baseline.append(run_baseline(cp, cli, recipe))
            written = cp.cp.store.one("SELECT COUNT(DISTINCT urn) AS entities, COUNT(*) AS aspects FROM aspects "
                                      "WHERE version=0 AND entity_type NOT LIKE 'dataHub%'")
        finally:
            executor.stop()
            remove_cgroup_roots({cgroup_root})
    median = statistics.median
    return {"runs": runs, "ours_s": median(ours), "baseline_s": median(baseline), "ours_all": ours,
            "baseline_all": baseline, "ratio": median(ours) / median(baseline),
            "added_s": median(ours) - median(baseline), "entities": written["entities"], "aspects": written["aspects"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    r = measure(parser.parse_args().runs)
    print(f"sample run, Run -> SUCCESS: median {r['ours_s']:.2f} s ({', '.join(f'{x:.2f}' for x in r['ours_all'])})")
    print(f"datahub ingest by hand:     median {r['baseline_s']:.2f} s ({', '.join(f'{x:.2f}' for x in r['baseline_all'])})")
    print(f"ratio {r['ratio']:.2f}x, {r['added_s'] * 1000:+.0f} ms per run; {r['entities']} entities, {r['aspects']} "
          "aspects in the control plane")


if __name__ == "__main__":
    main()
