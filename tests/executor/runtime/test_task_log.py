"""Task output: masked, bounded in memory and on disk, read without stalling anything."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

from executor.runtime.masking import MASK, Masker
from executor.runtime.task_log import TRUNCATED_MARKER, TaskLog


def test_a_task_writing_200_mb_as_fast_as_it_can_is_read_with_bounded_memory(tmp_path):
    flood = [sys.executable, "-c",
             "import sys\nline = b'x' * 199 + b'\\n'\nblock = line * 5000\n"
             "for _ in range(200): sys.stdout.buffer.write(block)\n"]  # 200 MB
    log = TaskLog(str(tmp_path / "task.log"), Masker(["s3cr3t-value"]), max_file_bytes=16 << 20)
    rss_before = psutil.Process().memory_info().rss
    child = subprocess.Popen(flood, stdout=subprocess.PIPE)
    started = time.monotonic()
    reader = log.pump(child.stdout)
    peak = rss_before
    while reader.is_alive():
        peak = max(peak, psutil.Process().memory_info().rss)
        reader.join(timeout=0.05)
    elapsed = time.monotonic() - started
    assert child.wait() == 0
    log.close()
    assert peak - rss_before < 16 << 20, f"memory grew by {(peak - rss_before) >> 20} MiB"
    assert (tmp_path / "task.log").stat().st_size < 17 << 20, "the file keeps its cap"
    assert "bytes of log omitted" in (tmp_path / "task.log").read_text()[-(2000 * 201):]
    assert log.tail().startswith(TRUNCATED_MARKER)
    assert len(log.tail().splitlines()) == 2001
    print(f"200 MB read in {elapsed:.1f} s ({200 / elapsed:.0f} MB/s)")


def test_secrets_are_masked_in_the_file_and_the_tail_and_bad_utf8_is_tolerated(tmp_path):
    log = TaskLog(str(tmp_path / "task.log"), Masker(["hunter22"]))
    child = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdout.buffer.write(b'pw=hunter22\\n\\xff\\xfe ok\\nno newline')"],
                             stdout=subprocess.PIPE)
    log.pump(child.stdout).join(timeout=10)
    child.wait()
    log.close()
    text = (tmp_path / "task.log").read_text()
    assert "hunter22" not in text and "hunter22" not in log.tail()
    assert f"pw={MASK}" in text
    assert "\ufffd\ufffd ok" in text and "no newline" in log.tail()


def test_the_tail_reports_changes_only_when_there_are_some(tmp_path):
    log = TaskLog(str(tmp_path / "task.log"), Masker([]))
    before = log.version
    log.write_line("one")
    assert log.version != before
    same = log.version
    assert log.version == same
    log.close()


def test_the_full_log_for_upload_keeps_head_and_tail_under_the_cap(tmp_path):
    log = TaskLog(str(tmp_path / "task.log"), Masker([]))
    for i in range(10000):
        log.write_line(f"line {i:05d} " + "y" * 90)
    log.close()
    data = log.full_log(100_000)
    assert len(data) < 100_200
    assert data.startswith(b"line 00000") and data.rstrip().endswith(b"y" * 90)
    assert b"[... log truncated for upload ...]" in data
