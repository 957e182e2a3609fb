"""(b) The linux_x86_64 PEX starts and runs the demo under every CPython 3.9-3.13 on this machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess

import pytest

from tests.pex.pexlib import PYTHONS, find_python, project_version
from tests.support.components import missing

pytestmark = pytest.mark.pex


def interpreter(version: str) -> str:
    py = find_python(version)
    if py is None:
        missing(f"CPython {version} is not installed on this machine")
    return py


@pytest.fixture
def linux_pex(built_pexes):
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip("the linux_x86_64 PEX runs only on Linux x86_64")
    return built_pexes["linux_x86_64"]


@pytest.mark.parametrize("version", PYTHONS)
def test_version(linux_pex, version: str, tmp_path) -> None:
    env = dict(os.environ, PEX_ROOT=str(tmp_path / "pex_root"))
    proc = subprocess.run([interpreter(version), str(linux_pex), "--version"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"orchestrator-pex {project_version()}"


@pytest.mark.parametrize("version", PYTHONS)
def test_demo(linux_pex, version: str, tmp_path) -> None:
    env = dict(os.environ, PEX_ROOT=str(tmp_path / "pex_root"))
    results = tmp_path / "results"
    proc = subprocess.run([interpreter(version), str(linux_pex), "demo", "--json", "--results-dir", str(results)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["instances"], doc
    assert {i["status"] for i in doc["instances"]} == {"succeeded"}
    run_dirs = [p for p in results.iterdir() if (p / "results.json").is_file()]
    assert len(run_dirs) == 1
