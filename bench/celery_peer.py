"""The Celery set-up the benchmarks compare against: prefork pool, SQS transport on the same
local SQS server, `worker_max_tasks_per_child=1` so that it too gives every task a fresh process,
long polling as ours does. Configured from the environment by bench/peers.py, which starts
`celery -A bench.celery_peer worker` and sends tasks through the same app.

Each task appends "sent started finished pid" to BENCH_RECORDS with one O_APPEND write, so the
benchmark reads when each task began and ended without a result backend.
"""
from __future__ import annotations

import os
import subprocess
import time

from celery import Celery

app = Celery("bench", broker=os.environ.get("BENCH_BROKER_URL", "sqs://local:local@127.0.0.1:9324"))
app.conf.update(
    broker_transport_options={"region": "us-east-1", "is_secure": False, "wait_time_seconds": 20,
                              "polling_interval": 0, "visibility_timeout": 300,
                              "queue_name_prefix": os.environ.get("BENCH_QUEUE_PREFIX", "bench-")},
    broker_connection_retry_on_startup=True,
    task_default_queue="peer",
    worker_max_tasks_per_child=int(os.environ.get("BENCH_MAX_TASKS_PER_CHILD", "1")),
    worker_max_memory_per_child=int(os.environ["BENCH_MAX_MEMORY_KB"]) if os.environ.get("BENCH_MAX_MEMORY_KB") else None,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    worker_hijack_root_logger=False,
)


def _record(*fields: object) -> None:
    line = (" ".join(str(f) for f in fields) + "\n").encode()
    fd = os.open(os.environ["BENCH_RECORDS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@app.task(name="bench.run_payload")
def run_payload(sent_at: float, payload_env: dict) -> None:
    """The same stand-in command our executor runs, in a subprocess."""
    started = time.time()
    subprocess.run([os.environ["BENCH_STANDIN"]], env={"PATH": "/usr/bin:/bin", **payload_env}, check=False,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _record(sent_at, started, time.time(), os.getpid())


@app.task(name="bench.leak_in_process")
def leak_in_process(sent_at: float, step_mb: int, total_mb: int) -> None:
    """A leak in the worker's own process, the only place worker_max_memory_per_child looks."""
    started = time.time()
    held = []
    for _ in range(total_mb // step_mb):
        held.append(b"\x01" * (step_mb << 20))
        _record("alloc", time.time(), len(held) * step_mb, os.getpid())
        time.sleep(0.02)
    _record(sent_at, started, time.time(), os.getpid())
