"""Task output: masked, bounded in memory and on disk, read without stalling anything."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from executor.runtime.masking import MASK, Masker
from executor.runtime.task_log import TRUNCATED_MARKER, TaskLog

from .test_masking import leaks, pem_shaped_key


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


# A task that prints a private key -------------------------------------------------------------
CHATTY_TASK = r"""
import json, os, sys, time
key = sys.stdin.read()
out = lambda data: os.write(1, data.encode())
out("[2024-05-01 12:00:00,001] INFO starting\nloaded key: ")
data, at, size = key.encode(), 0, 1
while at < len(data):  # the key in pieces of 1 to 97 bytes, a pause now and then: many pipe reads
    os.write(1, data[at:at + size])
    at, size = at + size, size % 97 + 1
    if size % 7 == 0:
        time.sleep(0.002)
out("between\n")
line = "recipe: " + json.dumps({"source": {"config": {"private_key": key}}}) + "\n"
out(line[:len(line) // 2]); time.sleep(0.01); out(line[len(line) // 2:])
out("ERROR bad key line: " + key.splitlines()[5] + " (line 6)\n")
sys.stderr.write("done\n")
"""


def test_a_private_key_a_task_prints_across_many_lines_reaches_no_log_tail_or_upload(tmp_path):
    key = pem_shaped_key()
    log = TaskLog(str(tmp_path / "task.log"), Masker([key]))
    child = subprocess.Popen([sys.executable, "-c", CHATTY_TASK], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    reader = log.pump(child.stdout)
    child.stdin.write(key.encode())
    child.stdin.close()
    reader.join(timeout=30)
    assert child.wait(timeout=10) == 0
    log.close()
    for name, text in (("file", (tmp_path / "task.log").read_text()), ("tail", log.tail()),
                       ("full log", log.full_log(8 << 20).decode())):
        leaked = leaks(key, text)
        assert not leaked, f"readable in the {name}: {leaked}"
        masks = text.count(MASK)
        assert masks == 3, f"the {name} shows the key, the recipe's key and the quoted line masked ({masks} masks)"
        for ordinary in ("INFO starting", "loaded key: ", "between", "recipe: ", "ERROR bad key line: ", "done"):
            assert ordinary in text, f"the {name} keeps the task's own words"


# Memory, whatever the child writes ------------------------------------------------------------
@pytest.mark.parametrize("script", [
    pytest.param("for _ in range(1024): os.write(1, b'y' * (1 << 20))\nos.write(1, b'\\n')", id="1 GiB without a newline"),
    pytest.param("os.write(1, b'before\\n')\nfor _ in range(100): os.write(1, b'z' * 1000000)\n"
                 "os.write(1, b'\\nafter\\n')", id="a 100 MB line"),
])
def test_memory_stays_bounded_while_the_masker_waits_for_a_key_across_reads(tmp_path, script):
    """The masker holds back what could still become a key (1.7 KB here), never more: a line
    without an end does not grow in memory. The key written after it is still masked."""
    key = pem_shaped_key()
    log = TaskLog(str(tmp_path / "task.log"), Masker([key, "hunter22"]), max_file_bytes=16 << 20)
    code = f"import os, sys\nkey = sys.stdin.read()\n{script}\nos.write(1, ('key: ' + key + 'the end').encode())\n"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    rss_before = psutil.Process().memory_info().rss
    reader = log.pump(child.stdout)
    child.stdin.write(key.encode())
    child.stdin.close()
    peak = rss_before
    while reader.is_alive():
        peak = max(peak, psutil.Process().memory_info().rss)
        reader.join(timeout=0.05)
    assert child.wait() == 0
    log.close()
    assert peak - rss_before < 32 << 20, f"memory grew by {(peak - rss_before) >> 20} MiB"
    assert (tmp_path / "task.log").stat().st_size < 17 << 20, "the file keeps its cap"
    tail = log.tail()
    leaked = leaks(key, tail) + leaks(key, (tmp_path / "task.log").read_text()[-(1 << 20):])  # its end: marker, tail
    assert not leaked, f"readable: {leaked}"
    assert tail.endswith(f"key: {MASK}the end") and tail.startswith(TRUNCATED_MARKER)
    assert max(len(line) for line in tail.splitlines()) <= 4096


def test_a_long_line_is_cut_in_the_tail_and_kept_whole_in_the_file_and_executor_lines_stand_alone(tmp_path):
    log = TaskLog(str(tmp_path / "task.log"), Masker(["hunter22"]))
    read_end, write_end = os.pipe()
    reader = log.pump(os.fdopen(read_end, "rb"))
    os.write(write_end, b"first\n" + b"w" * 10_000 + b" hunter22\npartial without end")
    os.close(write_end)
    reader.join(timeout=10)
    log.write_line("[executor] outcome: SUCCEEDED")
    log.close()
    assert log.tail().splitlines() == ["first", "w" * 4096, "partial without end", "[executor] outcome: SUCCEEDED"]
    assert (tmp_path / "task.log").read_text().splitlines()[1] == "w" * 10_000 + f" {MASK}"
