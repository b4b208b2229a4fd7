"""docs/operations.md keeps up with the code: every task reason the executor or the control plane
can report, and every line `datahub-executor check` prints, is explained there."""
from __future__ import annotations

import re
from pathlib import Path

from vocabulary.statuses import REASONS

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text()


def test_every_reason_the_code_reports_is_explained():
    """The one list of reasons (vocabulary/statuses.py), which both sides report from."""
    assert {"MEMORY_LIMIT_EXCEEDED", "SECRET_NOT_FOUND", "EXECUTOR_LOST", "INVALID_RECIPE"} <= REASONS
    missing = sorted(r for r in REASONS if f"`{r}`" not in DOC)
    assert not missing, f"docs/operations.md does not explain: {missing}"


def test_every_check_line_is_in_the_troubleshooting_table():
    names = re.findall(r'check\("([^"]+)"', (ROOT / "executor" / "check.py").read_text())
    assert len(names) == 7
    for name in names:
        assert f"| `{name}` |" in DOC, f"check line {name!r} is not mapped in docs/operations.md"
