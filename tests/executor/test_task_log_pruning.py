"""Task log files are pruned to the newest KEEP while runners start tasks concurrently: no
pass trips over a file another pass removed, and a held task's log stays. Files are private."""
from __future__ import annotations

import os
import stat
import threading

from executor.runtime.task_log import TaskLogDirectory

KEEP = 200


def test_concurrent_pruning_never_fails_and_keeps_held_logs(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(KEEP + 300):
        path = logs / f"exe_{i:05d}.log"
        path.write_text("x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    directory = TaskLogDirectory(str(logs), held=lambda: {"exe_00000"}, keep=KEEP)
    errors: list[BaseException] = []

    def start_tasks(worker: int) -> None:
        try:
            for n in range(40):
                path = directory.path_for(f"exe_new_{worker}_{n}")
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
    assert len(list(logs.glob("*.log"))) <= KEEP + 8 + 1


def test_task_logs_are_readable_by_the_executor_only(tmp_path):
    directory = TaskLogDirectory(str(tmp_path / "logs"), held=set, keep=KEEP)
    path = directory.path_for("exe_1")
    assert stat.S_IMODE(os.stat(tmp_path / "logs").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_oldest_logs_go_first_across_restarts(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(10):
        path = logs / f"old_{i}.log"
        path.write_text("x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    first = TaskLogDirectory(str(logs), held=lambda: {"old_0"}, keep=10)
    first.path_for("new_a")
    first.path_for("new_b")
    assert sorted(p.stem for p in logs.glob("*.log")) == ["new_a", "new_b", "old_0"] + [f"old_{i}" for i in range(3, 10)]
    restarted = TaskLogDirectory(str(logs), held=set, keep=10)  # a new master reads what is there
    restarted.path_for("new_c")
    assert sorted(p.stem for p in logs.glob("*.log")) == ["new_a", "new_b", "new_c"] + [f"old_{i}" for i in range(3, 10)]
