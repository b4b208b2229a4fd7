"""A file no name leads to until it is given one: by link where the file system makes O_TMPFILE
files, by copy where it does not (the kernel refuses a name to an unlinked ordinary file)."""
from __future__ import annotations

import errno
import os

import pytest

from executor.runtime import unnamed_file
from executor.runtime.masking import Masker
from executor.runtime.task_log import TaskLog
from executor.runtime.unnamed_file import give_name, open_unnamed


@pytest.fixture(params=["o_tmpfile", "unlinked"])
def without_tmpfile(request, monkeypatch):
    """Both ways: the file system's O_TMPFILE, and one that refuses it (overlayfs before 6.6)."""
    if request.param == "unlinked":
        real_open = os.open

        def refusing(path, flags, *args, **kwargs):
            if flags & os.O_TMPFILE == os.O_TMPFILE:
                raise OSError(errno.EOPNOTSUPP, "Operation not supported")
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(unnamed_file.os, "open", refusing)
    return request.param


def test_the_file_has_no_name_until_given_one_and_replaces_what_was_put_there(tmp_path, without_tmpfile):
    made = open_unnamed(str(tmp_path))
    assert made.linkable is (without_tmpfile == "o_tmpfile")
    os.write(made.fd, b"the executor's own bytes\n")
    assert list(tmp_path.iterdir()) == [], "the unnamed file can be reached by a name"
    target = tmp_path / "run.log"
    target.write_bytes(b"what a task put at the name meanwhile\n")
    target.chmod(0o644)
    give_name(made, str(target))
    assert target.read_bytes() == b"the executor's own bytes\n"
    assert target.stat().st_mode & 0o777 == 0o600
    os.write(made.fd, b"more\n")  # a linked file is that file; a copied one is what was there at the copy
    expected = b"the executor's own bytes\nmore\n" if made.linkable else b"the executor's own bytes\n"
    assert target.read_bytes() == expected
    assert [p.name for p in tmp_path.iterdir()] == ["run.log"], "a temporary name was left"
    os.close(made.fd)


def test_a_hidden_task_log_is_nowhere_by_name_while_it_is_written_then_kept_whole(tmp_path, without_tmpfile):
    path = tmp_path / "exe_1.log"
    path.write_bytes(b"a previous run's log\n")
    log = TaskLog(str(path), Masker([]), hidden=True, max_file_bytes=1 << 16)
    assert not path.exists(), "the hidden log (or the previous run's) is reachable by its name"
    log.write_line("[executor] started")
    log._append([b"x" * 100 + b"\n"] * 1000)  # past the file's cap: a head, a marker, the last lines
    log.close()
    shipped = log.full_log()
    assert not path.exists()
    log.keep()
    log.keep()  # once
    kept = path.read_bytes()
    assert kept.startswith(b"\xff[executor] started\n") and b"bytes of log omitted" in kept
    assert len(kept) < (1 << 16) + 400_000 and shipped.startswith(b"[executor] started\n")
