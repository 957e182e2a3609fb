"""SECURITY.md stays backed by tests: every test it names exists (a renamed or deleted test fails here)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+)(?:\[[^\]`]*\])?)?`")


def test_every_test_named_in_security_md_exists():
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    refs = REFERENCE.findall(text)
    assert len(refs) >= 40  # the document really names its tests
    missing = []
    for path, name in refs:
        source = ROOT / path
        if not source.is_file():
            missing.append(path)
        elif name and not re.search(rf"^(async )?def {name}\(", source.read_text(encoding="utf-8"), re.M):
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_guarantee_row_names_a_test_or_a_placeholder():
    rows = [line for line in (ROOT / "SECURITY.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith("| guarantee") and not line.startswith("| party")
            and not line.startswith("| **")]
    assert rows
    unbacked = [row for row in rows if "tests/" not in row.rsplit("|", 2)[-2] and "TODO(test)" not in row]
    assert unbacked == []
