"""Reading and writing the small files only their owner may read (the admin token, the secret
key), on a real file system: what is refused, what is never replaced, what is left behind."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from controlplane.private_file import NotARegularFile, OthersMayRead, read_private, write_private


def private(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_a_file_only_its_owner_may_read_is_read_up_to_the_limit(tmp_path):
    path = private(tmp_path / "token", b"x" * 2000)
    assert read_private(path) == b"x" * 1024
    assert read_private(path, limit=10) == b"x" * 10


def test_a_missing_file_is_none(tmp_path):
    assert read_private(tmp_path / "absent") is None


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640, 0o620, 0o601], ids=oct)
def test_a_file_others_may_read_or_write_is_refused_with_its_mode(tmp_path, mode):
    path = private(tmp_path / "token", b"kept", mode)
    with pytest.raises(OthersMayRead) as refused:
        read_private(path)
    assert refused.value.mode == mode and refused.value.path == path
    assert str(refused.value) == f"{path} may be read by others (mode {mode:04o})"


def test_a_directory_is_refused_as_open_refuses_it(tmp_path):
    """As before this module: the admin token's message says "cannot be read (Is a directory)"."""
    (tmp_path / "token").mkdir(mode=0o700)
    with pytest.raises(IsADirectoryError) as refused:
        read_private(tmp_path / "token")
    assert refused.value.errno == errno.EISDIR


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    """Opened for reading without O_NONBLOCK, a FIFO blocks until something writes into it."""
    path = tmp_path / "token"
    os.mkfifo(path, 0o600)
    with pytest.raises(NotARegularFile) as refused:
        read_private(path)
    assert refused.value.path == path and str(refused.value) == f"{path} is not a regular file"


def test_a_link_is_judged_by_the_file_it_leads_to(tmp_path):
    """A key kept on another volume and linked into the state directory is read; the link does not
    make a file others may read acceptable."""
    link = tmp_path / "token"
    link.symlink_to(private(tmp_path / "elsewhere", b"kept"))
    assert read_private(link) == b"kept"
    (tmp_path / "elsewhere").chmod(0o644)
    with pytest.raises(OthersMayRead):
        read_private(link)


def test_writing_without_replace_never_replaces_a_file_already_there(tmp_path):
    path = tmp_path / "secret-key"
    assert write_private(path, b"first", replace=False) is True
    assert write_private(path, b"second", replace=False) is False
    assert path.read_bytes() == b"first" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["secret-key"], "no temporary file left behind"


def test_writing_without_replace_leaves_even_a_loose_file_as_it_was(tmp_path):
    """Refusing it is the reader's job; the writer must not destroy what may be the only key."""
    path = private(tmp_path / "secret-key", b"theirs", 0o644)
    assert write_private(path, b"mine", replace=False) is False
    assert path.read_bytes() == b"theirs" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["secret-key"]


def test_writing_with_replace_leaves_mode_0600_over_a_file_others_could_read(tmp_path):
    """Opening the old file to write would have kept its 0644."""
    path = private(tmp_path / "admin-token", b"old", 0o644)
    assert write_private(path, b"new", replace=True) is True
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_private(path) == b"new"
    assert os.listdir(tmp_path) == ["admin-token"], "no temporary file left behind"


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    """A directory in the target's place: the rename fails, the temporary file is removed."""
    (tmp_path / "admin-token").mkdir()
    (tmp_path / "admin-token" / "inside").touch()
    with pytest.raises(OSError):
        write_private(tmp_path / "admin-token", b"new", replace=True)
    assert os.listdir(tmp_path) == ["admin-token"]
