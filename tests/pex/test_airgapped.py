"""(c) Air-gapped: scripts/prove-airgapped runs a batch in `unshare -n` (loopback only), `env -i` with PATH and HOME
only, HOME read-only — once relying on pex's temporary PEX_ROOT fallback, once with PEX_ROOT given."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.pex.pexlib import ROOT
from tests.support.components import missing

pytestmark = pytest.mark.pex


def test_runs_air_gapped(built_pexes) -> None:
    probe = subprocess.run(["unshare", "-n", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        missing(f"cannot create network/mount namespaces here (needs root): {probe.stderr.decode().strip()}")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "prove-airgapped"), str(built_pexes["linux_x86_64"])],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "prove-airgapped: OK" in proc.stdout
