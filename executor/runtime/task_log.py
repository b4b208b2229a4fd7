"""A task's output: read without blocking the master, masked, kept bounded in memory and on disk.

One thread per task reads raw chunks from the child's pipe (a child writing 100 MB/s is read
as fast as it writes; nothing else waits on it), makes them valid UTF-8 (strict UTF-8 fails good
runs: bad bytes become U+FFFD), masks them as a stream (a secret cut across two reads, or written
over many lines, is masked whole: masking.MaskingStream), and appends them to the per-task log
file and to a window of recent output that the tail is cut from when it is asked for. Each read
costs a few passes in C over its bytes and no Python step per line; bench/log_relay.py measures
the relay against a plain pipe-to-file copy.

Memory stays bounded whatever the child writes: the masker holds back at most its longest form,
the window keeps the last 2 MiB. The file keeps its head up to a cap, in whole lines; past it
only the window survives, and the file ends with a marker and the tail. Past the cap the
stream is no longer masked as it goes by: most of a flood is let go unread, so the window is
masked when a tail is cut from it (Masker.mask_window), which leaves out what may be part of
a secret lying partly outside the window. The tail is the
window's last 2000 lines, each cut at 4096 characters, as DataHub ships it (2000 ingestion log
lines are ~300 KB; a task whose lines average over 1 KiB shows fewer); lines in the file are
kept whole. A file that cannot be written (the disk is full: a task can fill the work
directory's file system itself) is given up like a full one: the pipe is still drained, the
window still kept, and the executor's log says why the file ends early.
"""
from __future__ import annotations

import codecs
import fcntl
import os
import select
import threading
import time
import weakref

from loguru import logger

from sandbox import reused_threads
from vocabulary import full_log

from . import executor_lines
from .masking import Masker, MaskingStream
from .unnamed_file import UnnamedFile, give_name, open_unnamed

TRUNCATED_MARKER = "[earlier logs truncated...]"
# The pipe is enlarged to PIPE_BYTES (Linux's default limit for an unprivileged process) and read
# CHUNK at a time: a task that floods its output runs ahead of the masking instead of stalling on
# a 64 KiB pipe, and each read's fixed costs are paid four times less often.
PIPE_BYTES = 1 << 20
CHUNK = 1 << 18
# After a read shorter than this, the reader waits up to COALESCE_S before the next one, so that
# a task writing a line per write (an unbuffered Python logger) is read many lines at a time
# instead of paying the masking's fixed cost per line. Its output reaches the log a millisecond
# later, which nobody sees. The wait is shorter for a task that would fill half the pipe in it
# (coalescing_wait): a flood's drained pipe ends in a short read too, and a whole millisecond
# let a task writing a GiB a second fill the pipe and stall on it, every time (the relay moved
# 1 GiB in 1.5 s where a plain loop took 1.0).
SHORT_READ = CHUNK // 4
COALESCE_S = 0.001


def coalescing_wait(read: int, seconds: float) -> float:
    """How long to wait after a short read, for a task that wrote READ bytes in the last SECONDS:
    COALESCE_S, or less where the task would fill half the pipe in it."""
    if read * COALESCE_S <= (PIPE_BYTES // 2) * seconds:
        return COALESCE_S
    return (PIPE_BYTES // 2) * seconds / read


class TaskLog:
    def __init__(self, path: str, masker: Masker, *, max_tail_lines: int = 2000, max_line_chars: int = 4096,
                 max_file_bytes: int = 64 << 20, window_bytes: int = 2 << 20, hidden: bool = False) -> None:
        """The log of one task at PATH. HIDDEN (for a task of the executor's own uid): the file
        has no name until keep() gives it PATH, so that the task cannot open it and write into it
        what the relay would never pass, the executor's own lines (unnamed_file.py)."""
        self.path = path
        self.masker = masker
        self.max_tail_lines = max_tail_lines
        self.max_line_chars = max_line_chars
        self.max_file_bytes = max_file_bytes
        # The window is a ring, filled as output comes and then overwritten in place: one buffer
        # for the whole run, not the reads themselves kept alive (that made every read fault in
        # fresh pages, which cost as much as the masking).
        self._ring = bytearray()
        self._ring_view: memoryview | None = None  # writes into the full ring: 15x faster than bytearray slices
        self._ring_cap = window_bytes
        self._ring_at = 0  # once the ring is full: where its oldest byte is, and the next write goes
        self._window_cut = False  # output older than the window was let go
        # Past the file's cap only the window keeps output, so a flood's output is masked when the
        # tail is cut from the window, not as it streams by (most of it is let go unread).
        self._window_raw = False  # the window holds output not masked yet
        self._streaming = False  # the task's output is still coming (its end may be a form's start)
        self._ends_line = True
        self._file_bytes = 0
        self._dropped_bytes = 0
        self._version = 0
        self._final_window: tuple[int, tuple[bool, bool, bytes]] | None = None  # _masked_window's, by version
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._decoding = False  # the decoder holds the first bytes of a character
        self._unnamed: UnnamedFile | None = None
        if hidden:
            try:
                os.unlink(path)  # a previous run's (a redelivery): no name leads anywhere until keep()
            except FileNotFoundError:
                pass
            self._unnamed = open_unnamed(os.path.dirname(path))
            self._file = open(self._unnamed.fd, "w+b")
        else:
            self._file = open(path, "w+b")
        # The file is read back (full_log) through this descriptor, never by its name: where tasks
        # run as the executor's own uid (an unprivileged container) a task can reach the name and
        # swap it for a link to /proc/self/environ, which the executor would resolve to its own
        # environment, its token, and ship as the log.
        self._reader = os.dup(self._file.fileno())
        weakref.finalize(self, os.close, self._reader)
        self.last_output = time.monotonic()
        # Written by stop_pump(): the pump's wait for output wakes on it as on output.
        self._stop_pump = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        weakref.finalize(self, os.close, self._stop_pump)

    def pump(self, stream) -> reused_threads.Job:
        """Relay STREAM on a thread of its own until it ends (join() waits for that)."""
        return reused_threads.start(self._read, stream, name=f"task-log-{os.path.basename(self.path)}")

    def stop_pump(self) -> None:
        """End the pump as if its output had ended: what it holds back is masked and kept, and
        the pipe is closed. For output that never ends though the task has: a process that left
        the task (sandbox mode none has no cgroup to end it with the task) and holds its stdout.
        Without it the pump kept its thread, its window and the pipe, relaying that process's
        output into a log already closed, for as long as the process lived."""
        os.eventfd_write(self._stop_pump, 1)

    def _read(self, stream) -> None:
        fd = stream.fileno()
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (AttributeError, OSError):  # not a pipe, not Linux, or over the user's pipe quota
            pass
        masking: MaskingStream | None = self.masker.stream()
        self._streaming = True
        since, read = time.monotonic(), 0  # since the last wait began, and how much came in that time
        waiting = select.poll()
        waiting.register(fd, select.POLLIN)
        waiting.register(self._stop_pump, select.POLLIN)
        try:
            while True:
                ready = waiting.poll()
                if any(ready_fd == self._stop_pump for ready_fd, _ in ready):
                    break
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    break
                read += len(chunk)
                self.last_output = time.monotonic()
                data = self._valid_utf8(chunk)
                if masking is not None and self._dropped_bytes:  # the file is full: the window alone keeps output
                    self._window_raw = True  # before the first unmasked byte is in it: a tail may be cut any time
                    self._append(masking.release())  # masked with what follows, in the window
                    masking = None
                self._append(masking.feed(data) if masking is not None else [data])
                if len(chunk) < SHORT_READ:
                    now = time.monotonic()
                    time.sleep(coalescing_wait(read, now - since))
                    since, read = now, 0
            last = self._valid_utf8(b"", final=True)
            if masking is not None:
                self._append(masking.feed(last))
                self._append(masking.finish())
            else:
                self._append([last])
        finally:
            self._streaming = False
            stream.close()

    def _valid_utf8(self, data: bytes, final: bool = False) -> bytes:
        """DATA with bytes that are not UTF-8 replaced, before masking: a secret's bytes are the
        same either way, and what the masker emits then needs no second look."""
        if self._decoding or final or not data.isascii():
            data = self._decoder.decode(data, final).encode()
            self._decoding = bool(self._decoder.getstate()[0])
        return data

    def _append(self, pieces: list[bytes | memoryview]) -> None:
        with self._lock:
            for piece in pieces:
                if len(piece):
                    self._keep(piece)

    def write_line(self, text: str) -> None:
        """A line from the executor itself (start, limits, outcome; TEXT begins `[executor]`),
        masked like the rest, on a line of its own even when the task's last line has no end yet,
        and kept as the executor's (executor_lines.py: a task's imitation is shown as one)."""
        line = self.masker.mask(text).encode("utf-8", "replace") + b"\n"
        if line.startswith(executor_lines.MARK):
            line = executor_lines.own_line(line)
        with self._lock:
            self.last_output = time.monotonic()
            self._keep(line if self._ends_line else b"\n" + line)

    def _keep(self, data: bytes | memoryview) -> None:
        file_ends_line = self._ends_line
        self._ends_line = data[-1:] == b"\n"
        if self._dropped_bytes or self._file.closed:
            self._dropped_bytes += len(data)
        elif self._file_bytes + len(data) <= self.max_file_bytes:
            self._write_file(data)
        else:
            data = bytes(data)
            head = data[: data.rfind(b"\n", 0, self.max_file_bytes - self._file_bytes) + 1]
            if not head and not file_ends_line:
                # The line the cap cuts began in an earlier piece (the masker's pieces end
                # anywhere): the head ends where that line began, or it would end mid-line
                # (mid-character, even) and close() would add the line again after the marker.
                self._dropped_bytes += self._cut_file_to_last_line()
            self._write_file(head)
            self._dropped_bytes += len(data) - len(head)
        self._remember(data)
        self._version += 1

    def _cut_file_to_last_line(self) -> int:
        """Truncate the file after its last newline; the bytes cut. Read back from its end in
        blocks: once per log, at its cap."""
        try:
            self._file.flush()
            end = self._file_bytes
            while end > 0:
                start = max(0, end - CHUNK)
                newline = _read_at(self._reader, end - start, start).rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
            self._file.truncate(end)
            self._file.seek(end)
        except OSError:
            return 0  # the head keeps its last line cut; nothing is lost
        cut, self._file_bytes = self._file_bytes - end, end
        return cut

    def _write_file(self, data: bytes | memoryview) -> None:
        """DATA onto the file, or the file given up (as past its cap) when it cannot be written."""
        try:
            self._file.write(data)
        except OSError as exc:
            logger.warning("task log {} cannot be written ({}): it ends here, only the tail is kept",
                           self.path, exc.strerror)
            self._dropped_bytes += len(data)
            self._close_file()
            return
        self._file_bytes += len(data)

    def _close_file(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # what the buffer held is lost with the file; the window still has it

    def _remember(self, data: bytes | memoryview) -> None:
        ring, cap = self._ring, self._ring_cap
        if len(ring) < cap:
            room = cap - len(ring)
            ring += data[:room]
            data = data[room:]
            if not data:
                return
        if self._ring_view is None:  # full from now on: it never changes size again
            self._ring_view = memoryview(ring)
        view = self._ring_view
        self._window_cut = True
        data = data[-cap:]
        at, end = self._ring_at, self._ring_at + len(data)
        if end <= cap:
            view[at:end] = data
        else:
            view[at:] = data[: cap - at]
            view[: end - cap] = data[cap - at:]
        self._ring_at = end % cap

    def _lines_in_last(self, count: int) -> int:
        """How many lines the window's last COUNT bytes end (a last one without its newline too);
        more than the window has when it holds no more than COUNT bytes."""
        ring, size, at = self._ring, len(self._ring), self._ring_at  # AT: 0 until the ring is full
        if count >= size:
            return size + 1
        if at - count >= 0:
            newlines = ring.count(b"\n", at - count, at)
        else:
            newlines = ring.count(b"\n", size + at - count) + ring.count(b"\n", 0, at)
        return newlines + (not self._ends_line)

    def _masked_lines_in_last(self, count: int) -> int:
        """_lines_in_last(COUNT) of a window kept raw, counted once masked, as the tail close()
        takes them from is: a secret of K lines among them is one line there, and counting the
        raw lines took K-1 lines too many, which reached back into the head and were written
        twice. The lines from the one where the head ends are masked apart; a secret that began
        before them is let go as mask_window lets go of one cut at a window's start."""
        data = self._window_bytes()
        start = data.rfind(b"\n", 0, len(data) - count)  # the newline before the line the head ends in
        masked = self.masker.mask_window(data[start:] if start != -1 else data, cut_at_start=start != -1,
                                         open_at_end=False)
        return masked.count(b"\n") + (not self._ends_line)

    def _window_bytes(self) -> bytes:
        """The window as it is kept (raw or masked), oldest byte first: once the ring is full, one
        copy of its two parts. Under the lock."""
        view = self._ring_view
        return b"".join((view[self._ring_at:], view[: self._ring_at])) if view is not None else bytes(self._ring)

    @property
    def version(self) -> int:
        return self._version

    def _masked_window(self) -> tuple[bool, bool, bytes]:
        """(whether output older than the window was let go, whether the window was kept raw, the
        window as bytes, masked). Once the output has ended, the masked window is kept for as
        long as nothing is added: close() and the result's tail() read the same window, and
        after a flood each masking of it costs a search of 2 MiB."""
        with self._lock:
            if self._final_window is not None and self._final_window[0] == self._version:
                return self._final_window[1]
            data = self._window_bytes()
            truncated, raw, streaming, version = self._window_cut, self._window_raw, self._streaming, self._version
        if raw:
            data = self.masker.mask_window(data, cut_at_start=truncated, open_at_end=streaming)
        if not streaming:
            with self._lock:
                self._final_window = (version, (truncated, raw, data))
        return truncated, raw, data

    def _tail_lines(self, *, render: bool = True) -> tuple[bool, list[str]]:
        """The window's last lines; RENDER: as shipped (executor_lines.rendered), else as kept
        (for the file, which is rendered when read: its marker bytes survive as surrogates)."""
        truncated, raw, data = self._masked_window()
        text = (executor_lines.rendered(data).decode("utf-8", "replace") if render
                else data.decode("utf-8", "surrogateescape"))
        if truncated and not raw:  # the window's first line began before it (mask_window drops it)
            text = text[text.find("\n") + 1:]
        if text.endswith("\n"):
            text = text[:-1]
        lines = text.rsplit("\n", self.max_tail_lines) if text else []
        if len(lines) > self.max_tail_lines:
            lines, truncated = lines[1:], True
        return truncated, [line.rstrip("\r")[: self.max_line_chars] for line in lines]

    def tail(self) -> str:
        truncated, lines = self._tail_lines()
        return "\n".join(([TRUNCATED_MARKER] if truncated else []) + lines)

    def close(self) -> None:
        """Finish the file: past the cap, a marker and the last lines of what the head does not
        hold. The window may reach back into the head (a log just past the cap): those lines are
        in the file already, so only as many lines as the output past the head ends are added."""
        with self._lock:
            dropped = self._dropped_bytes
            past_head = self._lines_in_last(dropped) if dropped else 0
            if dropped and self._window_raw and past_head <= len(self._ring):
                past_head = self._masked_lines_in_last(dropped)
        lines = self._tail_lines(render=False)[1][-past_head:] if dropped else []
        with self._lock:
            if dropped and not self._file.closed:
                try:
                    self._file.write(f"\n[... {dropped} bytes of log omitted; the last lines follow ...]\n".encode())
                    self._file.write("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
                except OSError:
                    pass  # the disk filled up just now: the file keeps its head
            self._close_file()

    def keep(self) -> None:
        """A hidden log gets its name (PATH), for operators on the host, once what is shipped
        of it has been read: from then on a process of the task's uid could write into it, but
        nothing of it leaves the executor any more. Once; nothing for a log that had its name."""
        unnamed, self._unnamed = self._unnamed, None
        if unnamed is None:
            return
        try:
            give_name(UnnamedFile(self._reader, unnamed.linkable), self.path)
        except OSError as exc:
            logger.warning("task log {} could not be kept on disk ({}); it was shipped", self.path, exc.strerror)

    def full_log(self, max_bytes: int = full_log.CAP_BYTES) -> bytes:
        """The file as shipped (rendered), or its head and tail: MAX_BYTES in all, read as two
        pieces, never whole. Rendering can only lengthen a task's imitations of the executor's
        lines, so the cap is applied after it."""
        size = os.fstat(self._reader).st_size
        if size <= max_bytes:
            return full_log.head_and_tail(executor_lines.rendered(_read_at(self._reader, max_bytes + 1, 0)), max_bytes)
        # Only what is shipped is read: a flood's log is its 64 MiB head, of which 8 MiB go.
        half = (max_bytes - len(full_log.TRUNCATION_MARKER)) // 2
        data = b"".join((_read_at(self._reader, half, 0), full_log.TRUNCATION_MARKER,
                         _read_at(self._reader, half, size - half)))
        return full_log.head_and_tail(executor_lines.rendered(data), max_bytes)


def _read_at(fd: int, size: int, offset: int) -> bytes:
    """Up to SIZE bytes of FD from OFFSET (pread: the descriptor's own offset is the writer's)."""
    pieces = []
    while size > 0:
        piece = os.pread(fd, size, offset)
        if not piece:
            break
        pieces.append(piece)
        size -= len(piece)
        offset += len(piece)
    return b"".join(pieces)


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
        # The logs on disk, oldest first: read from the directory once (a restart finds the last
        # run's), then kept here, so a new task costs no directory scan.
        self._known = self._scan()

    def _scan(self) -> dict[str, None]:
        dated = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".log"):
                try:
                    dated.append((entry.stat().st_mtime, entry.name[:-4]))
                except FileNotFoundError:
                    continue
        return dict.fromkeys(stem for _, stem in sorted(dated))

    def path_for(self, execution_id: str) -> str:
        with self._lock:
            self._known.pop(execution_id, None)
            self._known[execution_id] = None
            excess = len(self._known) - self.keep
            if excess > 0:
                held = set(self._held()) | {execution_id}
                for stem in [s for s in self._known if s not in held][:excess]:
                    try:
                        os.unlink(os.path.join(self.directory, f"{stem}.log"))
                    except FileNotFoundError:
                        pass
                    del self._known[stem]
        path = os.path.join(self.directory, f"{execution_id}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        return path
