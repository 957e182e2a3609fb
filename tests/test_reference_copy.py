"""tests/data/reference must be an exact copy of ../shared/reference (the real CLI transcripts the suite compares against)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COPY = ROOT / "tests" / "data" / "reference"
SHARED = ROOT.parent / "shared" / "reference"


def _files(base: Path) -> dict:
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def test_reference_copy_matches_shared() -> None:
    if not SHARED.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI lays ../shared beside the repository, but {SHARED} is missing")
        pytest.skip(f"no {SHARED} beside this checkout to compare the copy with")
    assert _files(COPY) == _files(SHARED)
