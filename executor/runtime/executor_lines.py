"""Which lines of a task's log are the executor's, so that a task cannot write one.

The executor writes its own lines about a run into the task's log (`[executor] outcome: ...`, the
memory limit, a silence warning), and operators read them as the truth. A task could print the
same text. Inside the executor, each of the executor's lines is kept with a byte in front that no
task output can contain (0xFF: the relay makes every task byte valid UTF-8 first, and valid UTF-8
never holds 0xFF). Wherever the log leaves the executor (the tail in each result, the uploaded
full log) it is rendered: the marker byte goes, and every `[executor]` a task wrote is shown as
`[task] [executor]`, wherever it stands in a line: a terminal shows what follows a carriage return,
or an escape that moves the cursor to column 1, at the line's start. Rendering costs two searches
of what is shipped (the 2 MiB window, at most 8 MiB of log); the relay, which lets most of a
flood go unread, pays nothing.
"""
from __future__ import annotations

MARK = b"[executor]"
_OWN = b"\xff"  # before each of the executor's own lines, inside the executor only
_TASK = b"[task] "


def own_line(line: bytes) -> bytes:
    """LINE (beginning with MARK), kept as the executor's."""
    return _OWN + line


def rendered(data: bytes) -> bytes:
    """DATA as it leaves the executor: its own lines as written, a task's imitations marked."""
    if MARK not in data:
        return data
    return data.replace(MARK, _TASK + MARK).replace(_OWN + _TASK + MARK, MARK)
