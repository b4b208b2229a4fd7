"""docs/operations.md keeps up with the code: every task reason the executor or the control plane
can report, and every line `datahub-executor check` prints, is explained there."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text()
REASON = re.compile(r'TaskRejected\(\s*"([A-Z_]+)"|reason = "([A-Z_]+)"|"reason": "([A-Z_]+)"|reason=\'([A-Z_]+)\''
                    r'|\("(?:FAILURE|TIMEOUT|ABORTED|CANCELLED)", "([A-Z_]+)"\)|"reason", "([A-Z_]+)"\)')


def reasons_in_code() -> set[str]:
    found = set()
    for path in [*ROOT.glob("executor/**/*.py"), *ROOT.glob("controlplane/**/*.py")]:
        for match in REASON.finditer(path.read_text()):
            found.update(group for group in match.groups() if group)
    return found


def test_every_reason_the_code_reports_is_explained():
    reasons = reasons_in_code()
    assert {"MEMORY_LIMIT_EXCEEDED", "SECRET_NOT_FOUND", "EXECUTOR_LOST", "INVALID_RECIPE"} <= reasons, reasons
    missing = sorted(r for r in reasons if f"`{r}`" not in DOC)
    assert not missing, f"docs/operations.md does not explain: {missing}"


def test_every_check_line_is_in_the_troubleshooting_table():
    names = re.findall(r'check\("([^"]+)"', (ROOT / "executor" / "check.py").read_text())
    assert len(names) == 6
    for name in names:
        assert f"| `{name}` |" in DOC, f"check line {name!r} is not mapped in docs/operations.md"
