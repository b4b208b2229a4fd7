"""How the suite is spread over pytest-xdist's two workers (pyproject.toml: -n 2 --dist loadgroup).

The system tests (tests/e2e, tests/faults) start executors, control planes and real `datahub
ingest` runs, kill masters with SIGKILL and watch what is left: they run one after another, in
one worker, as they always did, so no two of them ever see each other's processes, cgroups or
CPU load. The rest (control plane, sandbox, executor parts, deployment artefacts) runs in the
other worker meanwhile, test by test, and in the first worker too once the system tests are done.
A module whose tests share a costly module- or session-scoped fixture (SHARED_FIXTURE_MODULES)
runs whole in one worker, so the fixture is built once, not once per worker. `-n 0` runs
everything in this process, in order.

The groups are made by the scheduler below, from test ids: xdist's own `xdist_group` marker does
nothing under pytest 9 (xdist 3.8 renames the test by setting `item._nodeid`, which pytest 9's
Node no longer reads), so marking the tests no longer kept them together.
"""
from __future__ import annotations

import pytest

SYSTEM_TESTS = ("tests/e2e/", "tests/faults/")
SHARED_FIXTURE_MODULES = (
    "tests/deploy/test_systemd.py",  # `installed`: one install.sh run into a root (~20-30 s)
    "tests/deploy/test_container_image.py",  # `image`: the image replayed into a root (~15 s)
    "tests/deploy/test_pool_id_rule.py",  # `by_java`: one JVM over every pool id (~2 s)
    # `first_run`: bin/bootstrap in a toy checkout (~15 s). Not a system test, though it lives in
    # tests/e2e: no executor, control plane or cgroup, only the scripts with a stand-in apt-get.
    "tests/e2e/test_first_run_scripts.py",
)


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: `system`, its module, or itself."""
    path = nodeid.split("::", 1)[0]
    if path in SHARED_FIXTURE_MODULES:
        return path
    if path.startswith(SYSTEM_TESTS):
        return "system"
    return nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        """xdist's load-scope scheduling with scope_of's units: the largest first (the system
        tests), then the rest one unit at a time to whichever worker runs short of work."""

        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return Scheduler(config, log)
