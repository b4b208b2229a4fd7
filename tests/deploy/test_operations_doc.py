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
    counted = re.search(r"(\w+) lines, each `PASS`", DOC).group(1)  # what the quick start says check prints
    words = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen"]
    assert counted.lower() in words and words.index(counted.lower()) + 10 == len(names), (counted, names)
    for name in names:
        assert f"| `{name}` |" in DOC, f"check line {name!r} is not mapped in docs/operations.md"


def executor_log_formats() -> list[str]:
    """Every string literal of the executor's code (an f-string's or a format's fields as NUL),
    implicit concatenations joined: what its log lines are made from."""
    import ast

    def text(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        return None

    formats = []
    for path in (ROOT / "executor").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            found = text(node)
            if found:
                formats.append(re.sub(r"\{[^{}]*\}", "\0", found))
    return formats


# In a documented line, what stands for a value: <placeholders>, "...", X and N, numbers, a/b
# alternatives before a colon, and upper-case words (RUN_INGEST, SUCCESS).
VALUE = r"<[^>]+>|\.\.\.|\b[XN]\b|\b\d+\b|\S+/\S+(?=:)|\b[A-Z][A-Z_]{2,}\b"


def test_every_log_line_the_doc_quotes_is_one_the_executor_writes():
    """'Lines worth knowing' is what operators grep their logs for: each line it quotes, its
    values aside, must be what the executor's code writes."""
    section = DOC[DOC.index("Lines worth knowing:"):DOC.index("## Task statuses and reasons")]
    quoted = [span for row in section.splitlines() if row.startswith("| `")
              for span in re.findall(r"`([^`]+)`", row.split("|")[1])]
    assert len(quoted) >= 10
    formats = executor_log_formats()
    # A whole format whose fields the quoted line fills in (a field may hold a message of its own).
    whole = [re.compile(".*".join(re.escape(part) for part in f.split("\0")), re.S) for f in formats
             if len(f.replace("\0", "")) >= 20]
    for line in quoted:
        pattern = ".*".join(re.escape(part) for part in re.split(VALUE, line))
        assert (any(re.search(pattern, f, re.S) for f in formats)
                or any(w.fullmatch(line) for w in whole)), f"the executor writes no line like {line!r}"
