"""How the suite is spread over pytest-xdist's two workers (pyproject.toml: -n 2 --dist loadgroup).

The system tests (tests/e2e, tests/faults) start executors, control planes and real `datahub
ingest` runs, kill masters with SIGKILL and watch what is left: they run one after another, in
one worker, as they always did, so no two of them ever see each other's processes, cgroups or
CPU load. The rest (control plane, sandbox, executor parts, deployment artefacts) runs in the
other worker meanwhile; the whole takes about as long as the system tests alone. `-n 0` runs
everything in this process, in order.
"""
from __future__ import annotations

from pathlib import Path

import pytest

SYSTEM_TESTS = ("e2e", "faults")
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        part = Path(item.path).relative_to(HERE).parts[0]
        if part in SYSTEM_TESTS:
            item.add_marker(pytest.mark.xdist_group("system"))
