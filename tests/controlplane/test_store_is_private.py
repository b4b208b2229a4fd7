"""The control plane's database holds runs' logs and results and the metadata ingested: it is
readable by its owner alone, as the admin token and the secret key beside it are. SQLite made
it with the umask's mode (0644 under the usual 022), readable by every user of the host."""
from __future__ import annotations

import os
import stat

from controlplane.store import Store


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_database_and_its_write_ahead_log_are_private(tmp_path):
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "controlplane.sqlite3"
        store = Store(str(path))
        store.query("SELECT 1")
    finally:
        os.umask(old_umask)
    assert mode_of(path) == 0o600
    for suffix in ("-wal", "-shm"):
        beside = tmp_path / f"controlplane.sqlite3{suffix}"
        if beside.exists():
            assert mode_of(beside) == 0o600, suffix


def test_a_database_others_could_read_is_made_private_at_start(tmp_path):
    path = tmp_path / "controlplane.sqlite3"
    Store(str(path))
    os.chmod(path, 0o644)
    Store(str(path))
    assert mode_of(path) == 0o600
