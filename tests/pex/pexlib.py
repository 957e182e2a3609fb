"""Helpers shared by the PEX proofs (tests/pex): where things are, which interpreters exist, the version."""

from __future__ import annotations

import glob
import os
import re
import shutil
from pathlib import Path
from typing import Dict, Optional

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = ["linux_x86_64", "linux_aarch64", "macos_arm64", "macos_x86_64"]
PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]


def project_version() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def find_python(version: str) -> Optional[str]:
    """An executable CPython ``version`` (e.g. "3.9"): pyenv's newest, else ``pythonX.Y`` on PATH."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")))
    candidates = found[::-1] + [shutil.which(f"python{version}") or ""]
    if version == "3.9" and os.environ.get("PANTS_PYTHON"):
        candidates.insert(0, os.environ["PANTS_PYTHON"])
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    return None


def dist_paths() -> Dict[str, Path]:
    return {p: ROOT / "dist" / f"orchestrator-pex-{project_version()}-{p}.pex" for p in PLATFORMS}
