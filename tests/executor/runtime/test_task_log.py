"""Task output: masked, bounded in memory and on disk, read without stalling anything."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import psutil
import pytest

from executor.runtime.masking import MASK, Masker
from executor.runtime.task_log import COALESCE_S, PIPE_BYTES, TRUNCATED_MARKER, TaskLog, coalescing_wait

from .test_masking import leaks, pem_shaped_key

MIN_PIECE = 8  # a piece of a token this long in a log would be a leak


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
    assert len(data) == 100_000, "head, marker and tail: the cap exactly (the control plane takes no more)"
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
    assert log.full_log().decode().splitlines()[1] == "w" * 10_000 + f" {MASK}"


# Past the file's cap: only the window is kept, and masked when the tail is cut from it ------------
FLOOD_THEN = """
import os, sys
os.write(1, b'x' * 199 + b'\\n')
for _ in range(40): os.write(1, (b'y' * 199 + b'\\n') * 1000)   # 8 MB: well past the file's 1 MiB cap
parts = sys.argv[1:]
os.write(1, parts[0].encode())
if len(parts) > 1:
    sys.stdin.read(1)   # the test reads the tail here, with part of a secret written last
    os.write(1, parts[1].encode())
"""


def flooded_log(tmp_path, secret: str, *parts: str, window: int = 64 << 10):
    log = TaskLog(str(tmp_path / "task.log"), Masker([secret]), max_file_bytes=1 << 20, window_bytes=window)
    child = subprocess.Popen([sys.executable, "-c", FLOOD_THEN, *parts], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return log, child, log.pump(child.stdout)


def finish(log: TaskLog, child, reader) -> str:
    child.stdin.close()
    reader.join(timeout=30)
    assert child.wait(timeout=10) == 0
    log.close()
    return log.tail()


@pytest.mark.parametrize("written", ["key: {secret} and more\n", "{secret}\n", "key: {secret}"])
def test_a_secret_written_after_the_cap_is_masked_in_the_tail_and_the_files_end(tmp_path, written):
    secret = "tok-9f8e7d6c5b4a39281706f5e4"
    log, child, reader = flooded_log(tmp_path, secret, written.format(secret=secret))
    tail = finish(log, child, reader)
    assert secret[:MIN_PIECE] not in tail and secret[-MIN_PIECE:] not in tail
    assert MASK in tail.splitlines()[-1] and tail.startswith(TRUNCATED_MARKER)
    end = (tmp_path / "task.log").read_text()[-(1 << 20):]
    assert "bytes of log omitted" in end and secret[:MIN_PIECE] not in end and MASK in end


def test_a_secret_cut_by_the_windows_start_leaves_no_piece_in_the_tail(tmp_path):
    """The window begins inside the secret: its end is in the window, its start was let go."""
    secret = "tok-9f8e7d6c5b4a39281706f5e4"
    window = 64 << 10
    for after in ("z" * (window - len(secret) // 2),  # one long line: no newline to cut at
                  "\n" + "z" * 99 + ("\n" + "z" * 99) * ((window - len(secret) // 2) // 100 - 1)):
        log, child, reader = flooded_log(tmp_path, secret, "key: " + secret + after, window=window)
        tail = finish(log, child, reader)
        pieces = [secret[i:i + MIN_PIECE] for i in range(len(secret) - MIN_PIECE + 1)]
        assert not [p for p in pieces if p in tail], "a piece of the secret is in the tail"


def running_then_final_tail(tmp_path, secret: str, before_pause: str, after_pause: str) -> tuple[str, str]:
    """A flood, then BEFORE_PAUSE; the tail read while the task waits, then AFTER_PAUSE and the final tail."""
    log, child, reader = flooded_log(tmp_path, secret, "done flooding\n" + before_pause, after_pause)
    deadline = time.monotonic() + 30
    while "done flooding" not in log.tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    running_tail = log.tail()
    child.stdin.write(b"g")
    child.stdin.flush()
    return running_tail, finish(log, child, reader)


def test_a_secret_half_written_when_the_tail_is_read_shows_no_half(tmp_path):
    secret = "tok-9f8e7d6c5b4a39281706f5e4"
    running_tail, tail = running_then_final_tail(tmp_path, secret, "key: " + secret[:14], secret[14:] + "\n")
    assert "done flooding" in running_tail and secret[:MIN_PIECE] not in running_tail
    assert tail.endswith(f"key: {MASK}") and secret[:MIN_PIECE] not in tail


def test_a_whole_secret_just_before_a_long_lines_open_end_is_masked_in_a_running_tail(tmp_path):
    """The task is still writing a line longer than the longest secret, which it began with a
    secret: the window's end that may still be a secret's start was cut off first and only the
    rest masked, so the whole secret before that end, cut by it, was shown all but its end."""
    secret = "tok-9f8e7d6c5b4a39281706f5e4"
    running_tail, tail = running_then_final_tail(tmp_path, secret, "key: " + secret + "z" * 20, "z\n")
    assert "done flooding" in running_tail and secret[:MIN_PIECE] not in running_tail
    assert tail.endswith(f"key: {MASK}" + "z" * 21) and secret[:MIN_PIECE] not in tail


def test_a_secret_beginning_just_inside_a_window_that_holds_no_newline_is_masked(tmp_path):
    """The window starts in one long line; what of it may belong to a secret begun before the
    window (the longest form's length) is left out, and the rest masked on its own: a secret
    beginning within that piece lost its first bytes to the cut and its rest was shown."""
    secret = "tok-9f8e7d6c5b4a39281706f5e4"  # every form of it is itself: the longest form is 28 bytes
    window = 64 << 10
    line = "key: " + "z" * 100 + secret + "z" * (window - (len(secret) - 1) - len(secret))
    log, child, reader = flooded_log(tmp_path, secret, line, window=window)
    tail = finish(log, child, reader)
    end = (tmp_path / "task.log").read_text()[-(1 << 20):]
    for shown in (tail, end):
        assert secret[-MIN_PIECE:] not in shown and secret[1:][:MIN_PIECE] not in shown


@pytest.mark.parametrize("lines, whole", [
    (["INFO one", "INFO two", "done"], True),
    ([f"line {i}" for i in range(2001)], False),  # the tail keeps 2000 lines
    (["x" * 5000], False),  # the tail cuts a line at 4096 characters
    (["windows line\r", "next"], False),  # the tail drops a line's \r; the file keeps it
])
def test_the_report_counts_as_the_whole_log_only_when_it_is_exactly_the_file(tmp_path, lines, whole):
    from executor.runner import report_is_whole_log

    log = TaskLog(str(tmp_path / "task.log"), Masker(["hunter22"]))
    for line in lines:
        log.write_line(line)
    log.close()
    assert report_is_whole_log(log.tail(), log.full_log(8 << 20)) is whole


def test_a_log_file_that_cannot_be_written_still_drains_the_task_and_keeps_the_tail(tmp_path):
    """A full disk (here /dev/full, which fails every write with ENOSPC, as a task that filled the
    work directory's file system would make the log's) must not stop the relay: the task, still
    writing, would block on its pipe until its timeout, and close() raising fails the runner
    without a result."""
    log = TaskLog("/dev/full", Masker(["hunter22-fake"]), window_bytes=1 << 16)
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys\nline = b'y' * 99 + b'\\n'\n"
                              "for _ in range(40000): sys.stdout.buffer.write(line)\n"
                              "sys.stdout.buffer.write(b'pw=hunter22-fake\\nlast line\\n')"],
                             stdout=subprocess.PIPE)  # 4 MB: more than the pipe holds
    reader = log.pump(child.stdout)
    assert child.wait(timeout=30) == 0, "the task was never blocked on its output"
    reader.join(timeout=10)
    assert not reader.is_alive()
    log.write_line("[executor] outcome: SUCCESS")
    log.close()
    tail = log.tail()
    assert tail.endswith("pw=" + MASK + "\nlast line\n[executor] outcome: SUCCESS") and "hunter22" not in tail


def test_a_multi_line_secret_cut_by_the_windows_start_leaves_none_of_its_lines_in_the_tail(tmp_path):
    """Past the cap, the window begins inside a multi-line secret whose lines are too short to be
    forms of their own (under MIN_LINE_LENGTH): dropping the window's cut first line left the
    secret's other lines in the tail, readable."""
    secret = "fake-l1\nfake-l2\nfake-l3"
    window = 64 << 10
    after = "\n" + "z" * 99
    after += ("\n" + "z" * 99) * ((window - len(secret) + 5 - len(after)) // 100)
    after += "\n" + "z" * (window - len(secret) + 5 - len(after) - 1)
    log, child, reader = flooded_log(tmp_path, secret, "key:\n" + secret + after, window=window)
    tail = finish(log, child, reader)
    assert "fake-l2" not in tail and "fake-l3" not in tail


NUMBERED_LINES = """
import os, sys
for i in range(int(sys.argv[1])):
    os.write(1, b"line %07d " % i + b"n" * 86 + b"\\n")
"""


@pytest.mark.parametrize("window, past_cap", [(2 << 20, 300), (256 << 10, 300), (256 << 10, 1000), (64 << 10, 3000)])
def test_output_just_past_the_files_cap_is_in_the_file_once_and_in_order(tmp_path, window, past_cap):
    """The file ends with the last lines of the window; where the window reached back into the
    head (a log just past the cap), up to 2000 lines stood in the file twice."""
    log = TaskLog(str(tmp_path / "task.log"), Masker(["hunter22"]), max_file_bytes=1 << 20, window_bytes=window)
    count = (1 << 20) // 100 + past_cap
    child = subprocess.Popen([sys.executable, "-c", NUMBERED_LINES, str(count)], stdout=subprocess.PIPE)
    log.pump(child.stdout).join(timeout=30)
    assert child.wait(timeout=10) == 0
    log.write_line("[executor] outcome: SUCCEEDED")
    log.close()
    text = (tmp_path / "task.log").read_bytes()
    numbers = [int(n) for n in re.findall(rb"^line (\d{7}) ", text, re.M)]
    assert numbers == sorted(set(numbers)), "no line twice, none out of order"
    if past_cap * 100 < window:  # all the output past the head is in the window: nothing is lost
        assert numbers == list(range(count))
    assert numbers[-1] == count - 1 and text.endswith(b"[executor] outcome: SUCCEEDED\n")


PEM_PAST_THE_CAP = """
import os, sys, time
for i in range(int(sys.argv[1])):
    os.write(1, b"line %07d " % i + b"n" * 86 + b"\\n")
time.sleep(0.3)  # the file is at its cap: what follows is kept raw in the window
os.write(1, sys.argv[2].encode() + b"\\nafter the key\\n")
"""


def test_a_multi_line_secret_past_the_files_cap_adds_no_line_of_the_head_again(tmp_path):
    """The file's end adds as many of the window's last lines as the output past the head holds,
    counted in the raw window; there a key of K lines is K lines, in the masked tail one: K-1
    lines of the head came after the marker again."""
    key = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC{i:02d}" for i in range(10)) + \
        "\n-----END PRIVATE KEY-----"
    log = TaskLog(str(tmp_path / "task.log"), Masker([key]), max_file_bytes=20_000, window_bytes=64 << 10)
    child = subprocess.Popen([sys.executable, "-c", PEM_PAST_THE_CAP, "300", key], stdout=subprocess.PIPE)
    log.pump(child.stdout).join(timeout=30)
    assert child.wait(timeout=10) == 0
    log.close()
    text = (tmp_path / "task.log").read_text()
    head, marker, end = text.partition("bytes of log omitted; the last lines follow ...]\n")
    assert marker, "past the cap"
    numbers = [int(n) for n in re.findall(r"^line (\d{7}) ", text, re.M)]
    assert numbers == sorted(set(numbers)), "no line of the head twice"
    assert "MIIEvQIBADANBgkq" not in text and MASK in end and end.endswith("after the key\n")


CROSS_THE_CAP_WITHIN_A_SECRET = """
import os, sys, time
line = b"y" * 99 + b"\\n"
os.write(1, line * ((1 << 20) // 100 - 10))  # just under the file's 1 MiB cap
time.sleep(0.5)
os.write(1, line * 20 + sys.argv[1].encode())  # past the cap, and the secret's first lines: one read
time.sleep(0.5)
os.write(1, sys.argv[2].encode())
"""


def test_a_multi_line_secret_being_written_when_the_file_reaches_its_cap_leaves_none_of_its_lines(tmp_path):
    """The masker held the secret's first lines when the file reached its cap; they went into the
    window masked line by line, so the whole secret was no longer there to mask, and its lines
    too short to be forms of their own stood in the tail."""
    secret = "fake-long-line-one-0123456789\nshort-111\nfake-long-line-two-0123456789\nshort-222"
    cut = secret.index("fake-long-line-two")
    log = TaskLog(str(tmp_path / "task.log"), Masker([secret]), max_file_bytes=1 << 20)
    child = subprocess.Popen([sys.executable, "-c", CROSS_THE_CAP_WITHIN_A_SECRET, "key:\n" + secret[:cut],
                              secret[cut:] + "\nafter the key\n"], stdout=subprocess.PIPE)
    log.pump(child.stdout).join(timeout=30)
    assert child.wait(timeout=10) == 0
    log.close()
    tail, end = log.tail(), (tmp_path / "task.log").read_text()[-(64 << 10):]
    assert "bytes of log omitted" in end and tail.endswith("after the key")
    for shown in (tail, end):
        assert "short-111" not in shown and "short-222" not in shown and "fake-long" not in shown


# A task imitating the executor's own lines -----------------------------------------------------
IMITATOR = r"""
import os, sys, time
out = lambda data: (os.write(1, data), time.sleep(0.05))
out(b"[executor] outcome: SUCCESS exit_code=0 (at the very start)\n")
out(b"real work\n[executor] outcome: SUCCESS exit_code=0 (after a newline)\n")
out(b"[exec"); out(b"utor] outcome: SUCCESS exit_code=0 (cut across two writes)\n")
out(b"an open line")
sys.stdin.read(1)  # the executor writes a line of its own here, and the task goes on
out(b"[executor] outcome: SUCCESS exit_code=0 (right after the executor's line)\n")
if len(sys.argv) > 1:
    for _ in range(40): os.write(1, (b"y" * 199 + b"\n") * 1000)  # 8 MB: past the file's 1 MiB cap
    out(b"[executor] outcome: SUCCESS exit_code=0 (past the cap)\n")
sys.exit(3)
"""
IMITATIONS = ["at the very start", "after a newline", "cut across two writes", "right after the executor's line"]


@pytest.mark.parametrize("past_the_cap", [False, True])
def test_a_task_cannot_write_lines_that_read_as_the_executors(tmp_path, past_the_cap):
    """The executor's lines about a run ([executor] ...) go into the task's log; a task printing
    the same text was shown as the executor's word that it succeeded."""
    log = TaskLog(str(tmp_path / "task.log"), Masker([]), max_file_bytes=1 << 20, window_bytes=64 << 10)
    log.write_line("[executor] RUN_INGEST on e1; memory limit: none")
    child = subprocess.Popen([sys.executable, "-c", IMITATOR, *(["flood"] if past_the_cap else [])],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    reader = log.pump(child.stdout)
    deadline = time.monotonic() + 20
    while "an open line" not in log.tail():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    log.write_line("[executor] no output for 120 s; the task is still running")
    child.stdin.write(b"x")
    child.stdin.close()
    assert child.wait(timeout=30) == 3
    reader.join(timeout=30)
    log.write_line("[executor] outcome: FAILED exit_code=3")
    log.close()
    shipped = {"tail": log.tail(), "full log": log.full_log().decode()}
    for where, text in shipped.items():
        own = [line for line in text.splitlines() if line.startswith("[executor]")]
        assert not [line for line in own if "SUCCESS" in line], (where, own)
        assert own[-1] == "[executor] outcome: FAILED exit_code=3", where
        if where == "full log" or not past_the_cap:
            assert "an open line\n[executor] no output for 120 s; the task is still running\n" in text, where
    for said in IMITATIONS + (["past the cap"] if past_the_cap else []):
        whole = f"[task] [executor] outcome: SUCCESS exit_code=0 ({said})"
        assert whole in shipped["full log"].splitlines(), said
        if past_the_cap and said != "past the cap":
            continue  # long gone from the 64 KiB window
        assert whole in shipped["tail"].splitlines(), said
    assert shipped["full log"].startswith("[executor] RUN_INGEST on e1")


def test_a_task_cannot_show_an_executor_line_by_a_carriage_return_or_a_terminal_escape(tmp_path):
    """A terminal (cat, tail -f of the log or of what the control plane serves) shows what follows
    a carriage return, or an escape that moves the cursor to column 1, at the line's start: only
    lines beginning with the executor's mark were shown as a task's."""
    log = TaskLog(str(tmp_path / "task.log"), Masker([]))
    child = subprocess.Popen([sys.executable, "-c",
                              "import os\n"
                              "os.write(1, b'working\\r[executor] outcome: SUCCESS exit_code=0 (after a CR)\\n')\n"
                              "os.write(1, b'\\x1b[2K\\x1b[1G[executor] outcome: SUCCESS exit_code=0 (after an escape)\\n')\n"
                              "os.write(1, b'the task said [executor] outcome: SUCCESS (mid-line)\\n')\n"],
                             stdout=subprocess.PIPE)
    log.pump(child.stdout).join(timeout=30)
    assert child.wait(timeout=10) == 0
    log.write_line("[executor] outcome: SUCCEEDED exit_code=0")
    log.close()
    for where, text in {"tail": log.tail(), "full log": log.full_log().decode()}.items():
        assert not re.search(r"(?<!\[task\] )\[executor\] outcome: SUCCESS\b", text), where
        assert text.count("[task] [executor] outcome: SUCCESS") == 3, where
        assert text.splitlines()[-1] == "[executor] outcome: SUCCEEDED exit_code=0", where


def test_the_wait_after_a_short_read_never_lets_a_fast_task_fill_half_the_pipe():
    """A flood's drained pipe ends in a short read too: the whole millisecond's wait let a task
    writing a GiB a second fill the pipe and stall on it at every drain (bench/peers.py: the relay
    moved 1 GiB in 1.5 s against a plain loop's 1.0). A line-per-write task still waits it all."""
    assert coalescing_wait(110 * 1000, 0.010) == COALESCE_S, "11 MB/s: lines, read many at a time"
    for rate in (600e6, 1.1e9, 10e9):  # bytes a second
        wait = coalescing_wait(int(rate * 0.002), 0.002)
        assert wait < COALESCE_S and rate * wait <= PIPE_BYTES / 2 + 1, (rate, wait)


def test_a_pump_whose_output_never_ends_is_stopped_and_keeps_what_it_held(tmp_path):
    """A process that left the task (sandbox mode none) holds the pipe open after the task ended:
    the pump blocked in its read for as long as that process lived, with its thread, its window
    and the pipe, relaying into a log already closed. stop_pump() ends it as an end of output
    would: what it held back is masked and kept, and the pipe is closed."""
    read_end, write_end = os.pipe()
    log = TaskLog(str(tmp_path / "t.log"), Masker(["hunter22-secret"]))
    with os.fdopen(read_end, "rb", buffering=0) as stream:
        pump = log.pump(stream)
        os.write(write_end, b"first line, hunter22-secret\nno newline yet")  # the last line is held back
        deadline = time.monotonic() + 5
        while log.version == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        pump.join(timeout=0.3)
        assert pump.is_alive(), "the writer still holds the pipe: the pump waits"
        log.stop_pump()
        pump.join(timeout=5)
        assert not pump.is_alive(), "the pump did not stop"
        assert stream.closed
    os.close(write_end)
    log.close()
    assert log.tail() == f"first line, {MASK}\nno newline yet"


def test_the_files_head_ends_with_a_whole_line_when_the_cap_cuts_a_line_begun_in_an_earlier_read(tmp_path):
    """The head was cut at the last newline of the read that crossed the cap only: a line begun
    in an earlier read ended the head mid-line (mid-character here), and close() then added the
    same line again after the marker."""
    cap = 1 << 20
    log = TaskLog(str(tmp_path / "task.log"), Masker([]), max_file_bytes=cap)
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb", buffering=0) as stream:
        pump = log.pump(stream)
        os.write(write_end, b"a" * (cap - 3000) + b"\n" + b"line X " + "\u00e9".encode() * 1000)  # under the cap
        deadline = time.monotonic() + 10
        while "line X" not in log.tail():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.write(write_end, "\u00e9".encode() * 3000 + b"\nnext\n")  # crosses it before its first newline
        os.close(write_end)
        pump.join(timeout=10)
    log.close()
    written = (tmp_path / "task.log").read_bytes()
    head = written[:written.index(b"\n[... ")]
    assert head.endswith(b"a\n"), head[-20:]
    head.decode("utf-8")  # whole characters
    assert written.count(b"line X") == 1
    assert written.endswith(b"line X " + "\u00e9".encode() * 4000 + b"\nnext\n")
