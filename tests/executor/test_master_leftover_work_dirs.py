"""What a crashed run of this executor left in its work directory: the tasks the start-up sweep
found (each named by its task cgroup) lose their work directories too; nothing else does, since
another executor may share the directory."""
from __future__ import annotations

from executor.master import Master
from executor.settings import load_settings


def test_the_work_directories_of_swept_tasks_go_and_no_other(tmp_path):
    settings = load_settings({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "unused",
                              "DATAHUB_EXECUTOR_POOL_ID": "pool", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path / "work")})
    master = Master(settings)
    executions = tmp_path / "work" / "executions"
    for execution_id in ("exe_crashed", "exe_another_executors"):
        (executions / execution_id / "tmp").mkdir(parents=True)
        (executions / execution_id / "output.json").write_text("{}")
    outside = tmp_path / "work" / "keep"
    outside.mkdir()
    master._remove_work_dirs_of(["task-exe_crashed", "task-..", "task-../keep", "task-"])
    assert sorted(p.name for p in executions.iterdir()) == ["exe_another_executors"]
    assert outside.is_dir(), "a name that is not an execution's directory removes nothing"
