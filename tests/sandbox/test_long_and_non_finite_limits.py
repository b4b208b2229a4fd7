"""Limits at the edges of what a number can say: a timeout longer than one poll(2) can wait,
and infinite or not-a-number limits, which no kernel and no deadline can honour."""
from __future__ import annotations

import pytest

from sandbox import Limits, SandboxError, Status


@pytest.mark.parametrize("timeout_s", [2147484.0, 10.0 * 365 * 86400])
def test_a_timeout_longer_than_one_poll_can_wait_lets_the_task_finish(sandbox, timeout_s):
    """poll(2) takes its timeout as a C int of milliseconds (about 24.8 days at most); a longer
    timeout used to overflow it, and the reaper took that for a failed wait and killed the task."""
    outcome = sandbox.start(["sleep", "0.3"], Limits(timeout_s=timeout_s)).wait(timeout=20)
    assert outcome.status is Status.SUCCEEDED
    assert outcome.killed_by is None
    assert outcome.duration_s >= 0.25


@pytest.mark.parametrize("field", ["timeout_s", "cpu_max", "memory_max_bytes", "pids_max"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_infinite_and_nan_limits_are_refused_before_anything_runs(sandbox, tmp_path, field, value):
    ran = tmp_path / "ran"
    with pytest.raises(SandboxError, match=field):
        sandbox.start(["touch", str(ran)], Limits(**{field: value}))
    assert not ran.exists()
    assert sandbox.driver.leftover_names() == []
