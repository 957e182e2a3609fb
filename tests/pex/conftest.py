"""Fixtures for the proofs about the built PEX files (``pytest -m pex tests/pex``).

``built_pexes`` builds once per session with ``scripts/pants package ::`` when dist/ is missing a PEX or older than
any build input, then checks dist/SHA256SUMS. Everything here skips, with the reason, only when CPython 3.9 (which
Pants 2.17.1 needs) is absent. These tests never run inside a Pants sandbox (tests/BUILD leaves tests/pex out).
"""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from tests.pex.pexlib import ROOT, dist_paths, find_python
from tests.support.components import missing

BUILD_INPUTS = [
    "orchestrator_pex",
    "orchestrator_pex/**/*",
    "pyproject.toml",
    "pants.toml",
    "BUILD",
    "lockfiles/*.lock",
    "build-support/complete_platforms/*",
    "scripts/pants",
    "scripts/build-pex-tool",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pex: proofs about the built PEX files (build them with scripts/pants)")


def _stale(paths: List[Path]) -> bool:
    if not all(p.is_file() for p in paths) or not (ROOT / "dist" / "SHA256SUMS").is_file():
        return True
    oldest = min(p.stat().st_mtime for p in paths)
    for pattern in BUILD_INPUTS:
        for f in glob.glob(str(ROOT / pattern), recursive=True):
            # Directories count too: their mtime changes when a file is added or removed.
            if "__pycache__" not in f and os.stat(f).st_mtime > oldest:
                return True
    return False


@pytest.fixture(scope="session")
def python39() -> str:
    py = find_python("3.9")
    if py is None:
        missing("CPython 3.9 is absent: Pants 2.17.1 (scripts/pants) needs it to build the PEX files "
                    "(e.g. `pyenv install 3.9.18`, or PANTS_PYTHON=/path/to/python3.9)")
    return py


@pytest.fixture(scope="session")
def built_pexes(python39: str) -> Dict[str, Path]:
    """platform -> dist/orchestrator-pex-<version>-<platform>.pex, (re)built if missing or stale."""
    paths = dist_paths()
    if _stale(list(paths.values())):
        env = dict(os.environ, PANTS_PYTHON=python39)
        proc = subprocess.run([str(ROOT / "scripts" / "pants"), "package", "::"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"scripts/pants package :: failed:\n{proc.stderr[-4000:]}"
    missing = [str(p) for p in paths.values() if not p.is_file()]
    assert not missing, f"package did not write {missing}"
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=ROOT / "dist", capture_output=True, text=True)
    assert check.returncode == 0, f"dist/SHA256SUMS does not verify:\n{check.stdout}{check.stderr}"
    return paths
