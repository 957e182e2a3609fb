"""Fixtures for the deploy tests: real ansible-playbook (scripts/install-ansible), a real built PEX.

* ``ansible_bin``: the bin directory of the ansible-core venv made by ``scripts/install-ansible`` (idempotent,
  about a second when already installed); skips when it cannot be installed.
* ``built_pex``: a private copy of this platform's PEX (built with ``./scripts/pants package ::`` when dist/ has
  none or it is stale; ``ORCHESTRATOR_PEX_TEST_PEX`` names another); skips with the reason when there is none.

Helpers live in deploylib.py. The ``deploy`` marker tags the slow tests (``-m "not deploy"`` leaves them out).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.deploylib import REPO, ensure_built_pex
from tests.support.components import missing


def pytest_configure(config):
    config.addinivalue_line("markers",
                            "deploy: slow deploy test (real ansible-playbook, PEX runs); -m 'not deploy' skips")


@pytest.fixture(scope="session")
def ansible_bin() -> Path:
    script = REPO / "scripts" / "install-ansible"
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        missing(f"scripts/install-ansible failed (no package index?): {proc.stderr.strip()[-300:]}")
    bindir = Path(proc.stdout.strip().splitlines()[-1])
    if not (bindir / "ansible-playbook").exists():
        missing(f"scripts/install-ansible printed {bindir}, which has no ansible-playbook")
    return bindir


@pytest.fixture(scope="session")
def built_pex(tmp_path_factory) -> Path:
    """A private copy of the built PEX (a rebuild of dist/ during the session cannot swap it underneath)."""
    pex, why = ensure_built_pex()
    if pex is None:
        missing(why)
    copy = tmp_path_factory.mktemp("built-pex") / pex.name
    shutil.copyfile(pex, copy)
    copy.chmod(0o755)
    return copy
