"""A task's output: read without blocking the master, masked, kept bounded in memory and on disk.

One thread per task reads raw chunks from the child's pipe (a child writing 100 MB/s is read
as fast as it writes; nothing else waits on it), decodes tolerantly (strict UTF-8 fails good
runs), masks every line, writes the per-task log file and keeps a bounded tail (2000 lines of
at most 4096 characters, as DataHub ships). The file keeps its head up to a cap; past it only
the tail survives, and the file ends with a marker and that tail. Memory stays bounded
whatever the child writes.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque

from .masking import Masker

TRUNCATED_MARKER = "[earlier logs truncated...]"
CHUNK = 1 << 16


class TaskLog:
    def __init__(self, path: str, masker: Masker, *, max_tail_lines: int = 2000, max_line_chars: int = 4096,
                 max_file_bytes: int = 64 << 20) -> None:
        self.path = path
        self.masker = masker
        self.max_line_chars = max_line_chars
        self.max_file_bytes = max_file_bytes
        self._tail: deque[str] = deque(maxlen=max_tail_lines)
        self._lines_seen = 0
        self._file_bytes = 0
        self._dropped_bytes = 0
        self._version = 0
        self._lock = threading.Lock()
        self._file = open(path, "w", encoding="utf-8", errors="replace")
        self.last_output = time.monotonic()

    def pump(self, stream) -> threading.Thread:
        thread = threading.Thread(target=self._read, args=(stream,), name=f"task-log-{os.path.basename(self.path)}", daemon=True)
        thread.start()
        return thread

    def _read(self, stream) -> None:
        fd = stream.fileno()
        pending = b""
        try:
            while True:
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    break
                pending += chunk
                *complete, pending = pending.split(b"\n")
                if len(pending) > self.max_line_chars * 4:  # a line without end: cut it
                    complete.append(pending)
                    pending = b""
                self._add([line.decode("utf-8", errors="replace") for line in complete])
            if pending:
                self._add([pending.decode("utf-8", errors="replace")])
        finally:
            stream.close()

    def write_line(self, text: str) -> None:
        """A line from the executor itself (start, limits, outcome), masked like the rest."""
        self._add([text])

    def _add(self, lines: list[str]) -> None:
        masked = [self.masker.mask(line.rstrip("\r"))[: self.max_line_chars] for line in lines]
        with self._lock:
            self.last_output = time.monotonic()
            for line in masked:
                self._tail.append(line)
                self._lines_seen += 1
                size = len(line) + 1
                if self._file_bytes + size <= self.max_file_bytes:
                    self._file.write(line + "\n")
                    self._file_bytes += size
                else:
                    self._dropped_bytes += size
            self._version += 1

    @property
    def version(self) -> int:
        return self._version

    def tail(self) -> str:
        with self._lock:
            lines = list(self._tail)
            truncated = self._lines_seen > len(lines)
        return "\n".join(([TRUNCATED_MARKER] if truncated else []) + lines)

    def close(self) -> None:
        """Finish the file: past the cap, a marker and the tail follow the head."""
        with self._lock:
            if self._dropped_bytes:
                self._file.write(f"\n[... {self._dropped_bytes} bytes of log omitted; the last lines follow ...]\n")
                self._file.write("\n".join(self._tail) + "\n")
            self._file.close()

    def full_log(self, max_bytes: int) -> bytes:
        with open(self.path, "rb") as f:
            data = f.read(max_bytes + 1)
            if len(data) <= max_bytes:
                return data
            f.seek(-(max_bytes // 2), os.SEEK_END)
            end = f.read()
        return data[: max_bytes // 2] + b"\n[... log truncated for upload ...]\n" + end


class TaskLogDirectory:
    """Where task logs live: one file per execution, the newest KEEP of them kept.

    The directory is 0700 and each file 0600: a log may hold what a task printed about its
    source, and only the executor reads it back (to ship it). Runners ask for paths
    concurrently: pruning is serialised, a file another pass removed is skipped, and the logs
    of executions still held (HELD()) are never removed. (Without that, a fast stream of tasks
    made one runner stat a file another had just deleted: FileNotFoundError after the claim.)
    """

    def __init__(self, directory: str, held, keep: int = 200) -> None:
        self.directory = directory
        self.keep = keep
        self._held = held
        self._lock = threading.Lock()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)

    def path_for(self, execution_id: str) -> str:
        with self._lock:
            held = set(self._held())
            dated = []
            for entry in os.scandir(self.directory):
                if not entry.name.endswith(".log"):
                    continue
                try:
                    dated.append((entry.stat().st_mtime, entry.path, entry.name[:-4]))
                except FileNotFoundError:
                    continue
            dated.sort()
            for _, path, stem in dated[:-self.keep] if len(dated) > self.keep else []:
                if stem not in held:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
        path = os.path.join(self.directory, f"{execution_id}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        return path
