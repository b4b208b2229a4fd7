from __future__ import annotations

import pytest


@pytest.fixture
def helm_env(tmp_path) -> dict[str, str]:
    """Helm's environment: its caches and config in the test's own directory, nothing of the host's."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HELM_CACHE_HOME": str(tmp_path / "cache"),
            "HELM_CONFIG_HOME": str(tmp_path / "config"), "HELM_DATA_HOME": str(tmp_path / "data")}
