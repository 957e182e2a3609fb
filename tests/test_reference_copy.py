"""tests/data/reference must be an exact copy of ../shared/reference (the real CLI transcripts the suite compares
against)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COPY = ROOT / "tests" / "data" / "reference"


def _shared() -> Path:
    """``../shared/reference`` beside the repository (as CI lays it), or beside the main checkout when this is a
    ``git worktree`` elsewhere (its common git directory is the main checkout's ``.git``)."""
    candidates = [ROOT.parent / "shared" / "reference"]
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=ROOT,
                                capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        common = ""
    if common:
        candidates.append(Path(common).parent.parent / "shared" / "reference")
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED = _shared()


def _files(base: Path) -> dict:
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def test_reference_copy_matches_shared() -> None:
    if not SHARED.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI lays ../shared beside the repository, but {SHARED} is missing")
        pytest.skip(f"no {SHARED} beside this checkout to compare the copy with")
    assert _files(COPY) == _files(SHARED)
