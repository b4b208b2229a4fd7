"""The bare loop the executor is compared against: receive, run the payload in a subprocess,
delete, on THREADS threads until COUNT messages are done. bench/peers.py starts it as its own
process, as our executor and Celery's worker are, so that it shares no interpreter (and no GIL)
with the control plane and the embedded SQS server of the benchmark process.

    python bench/bare_loop.py QUEUE_URL ENDPOINT STANDIN COUNT THREADS

Prints one JSON line: the seconds from the first receive to the last delete, and the CPU this
process spent in that time (user + system, and the kernel's part apart; its children excluded:
the payload's CPU is not the loop's), for CPU per task against our master's; and, apart, the
CPU of the payloads it ran (its reaped children), for the whole machine's CPU per task.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time

import boto3


def cpu_seconds() -> tuple[float, float, float]:
    """(user + system, system) seconds of this process, its children excluded; and user + system
    of its children reaped so far (the payloads)."""
    usage, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime, children.ru_utime + children.ru_stime


def run(queue_url: str, endpoint: str, standin: str, count: int, threads: int) -> dict[str, float]:
    done = 0
    lock = threading.Lock()
    # Clients are made here, one per thread, before the clock starts: botocore's client creation
    # is not thread-safe and costs ~100 ms, which is start-up, not per-task work.
    clients = [boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint,
                            aws_access_key_id="local", aws_secret_access_key="local") for _ in range(threads)]

    # When the last delete was answered, and the CPU then: the other threads are still in a long
    # poll of an empty queue (up to WaitTimeSeconds), which is not the loop's work. Timed to their
    # end, the loop's rate came out up to a second's worth low (72/s where it ran at 113/s).
    finished: list[tuple[float, tuple[float, float, float]]] = []

    def work(sqs) -> None:
        nonlocal done
        while True:
            with lock:
                if done >= count:
                    return
            answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
            for message in answer.get("Messages", []):
                subprocess.run([standin], env={"PATH": "/usr/bin:/bin", "BENCH_PAYLOAD": "true"}, check=False,
                               stdin=subprocess.DEVNULL)
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                with lock:
                    done += 1
                    if done == count:
                        finished.append((time.monotonic(), cpu_seconds()))

    cpu_before, started = cpu_seconds(), time.monotonic()
    workers = [threading.Thread(target=work, args=(client,)) for client in clients]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    (ended, cpu_after), = finished
    return {"seconds": ended - started, "cpu_seconds": cpu_after[0] - cpu_before[0],
            "system_seconds": cpu_after[1] - cpu_before[1], "children_seconds": cpu_after[2] - cpu_before[2],
            "count": count}


if __name__ == "__main__":
    queue, endpoint_url, standin_path, total, thread_count = sys.argv[1:6]
    print(json.dumps(run(queue, endpoint_url, standin_path, int(total), int(thread_count))))
