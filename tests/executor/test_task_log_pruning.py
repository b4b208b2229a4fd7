"""Task log files are pruned to the newest KEEP_TASK_LOGS while supervisors start tasks
concurrently: no pass trips over a file another pass removed, and a held task's log stays."""
from __future__ import annotations

import os
import threading

from executor.master import KEEP_TASK_LOGS, Master
from executor.settings import load_settings


def test_concurrent_pruning_never_fails_and_keeps_held_logs(tmp_path):
    settings = load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "t",
                              "DATAHUB_EXECUTOR_POOL_ID": "p", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path)})
    master = Master(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(KEEP_TASK_LOGS + 300):
        path = logs / f"exe_{i:05d}.log"
        path.write_text("x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    master._messages["exe_00000"] = object()  # the oldest log belongs to a task still held
    errors: list[BaseException] = []

    def start_tasks(worker: int) -> None:
        try:
            for n in range(40):
                path = master._task_log_path(f"exe_new_{worker}_{n}")
                with open(path, "w") as f:
                    f.write("y")
        except BaseException as exc:  # noqa: BLE001 (the assertion below reports it)
            errors.append(exc)

    threads = [threading.Thread(target=start_tasks, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert (logs / "exe_00000.log").exists(), "a held task's log is never pruned"
    assert len(list(logs.glob("*.log"))) <= KEEP_TASK_LOGS + 8 + 1
