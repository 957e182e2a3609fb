"""(a) Reproducible and offline: two builds with empty caches at different paths, one online and one from a
wheelhouse inside `unshare -n` with the index off, give byte-identical PEX files (scripts/prove-reproducible)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.pex.pexlib import ROOT

pytestmark = pytest.mark.pex


def test_clean_builds_are_identical(python39, tmp_path) -> None:
    env = dict(os.environ, PANTS_PYTHON=python39)
    proc = subprocess.run([str(ROOT / "scripts" / "prove-reproducible"), str(tmp_path / "work")], env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("identical", "DIFFERENT"))]
    assert len(lines) == 4 and all(line.startswith("identical") for line in lines), proc.stdout
