"""``self verify`` and ``version --json`` without a Pants build: a synthetic signed bundle, a throwaway key."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, project_version


def cli(*args: str, env_extra=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PEX"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "orchestrator_pex", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT)


@pytest.fixture
def bundle(tmp_path, keys) -> Path:
    b = tmp_path / "bundle"
    b.mkdir()
    pex = b / "orchestrator-pex-1.2.3-linux_x86_64.pex"
    pex.write_bytes(os.urandom(4096))
    other = b / "INSTALL.txt"
    other.write_text("hello\n")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted((pex, other))]
    (b / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys["key"]), "-n", "orchestrator-pex",
                    str(b / "SHA256SUMS")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return b


def verify(bundle: Path, trust: Path, pex: Path = None) -> subprocess.CompletedProcess:
    pex = pex or bundle / "orchestrator-pex-1.2.3-linux_x86_64.pex"
    return cli("self", "verify", "--pex", str(pex), "--bundle", str(bundle), "--trust", str(trust))


def test_good_bundle_verifies(bundle, keys):
    proc = verify(bundle, keys["allowed"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("verified: ") and "signed by release@orchestrator-pex" in proc.stdout


def test_trust_file_defaults_to_the_bundle_folder(bundle, keys):
    (bundle / "allowed_signers").write_bytes(keys["allowed"].read_bytes())
    proc = cli("self", "verify", "--pex", str(bundle / "orchestrator-pex-1.2.3-linux_x86_64.pex"))
    assert proc.returncode == 0, proc.stderr


def test_modified_pex_fails(bundle, keys):
    pex = bundle / "orchestrator-pex-1.2.3-linux_x86_64.pex"
    data = bytearray(pex.read_bytes())
    data[0] ^= 1
    pex.write_bytes(bytes(data))
    proc = verify(bundle, keys["allowed"])
    assert proc.returncode == 1 and "does not match" in proc.stderr


def test_unlisted_pex_fails(bundle, keys, tmp_path):
    stranger = tmp_path / "orchestrator-pex-9.9.9-linux_x86_64.pex"
    stranger.write_bytes(b"x")
    proc = verify(bundle, keys["allowed"], pex=stranger)
    assert proc.returncode == 1 and "is not listed" in proc.stderr


def test_modified_sums_and_foreign_key_fail(bundle, keys):
    assert verify(bundle, keys["other_allowed"]).returncode == 1
    sums = bundle / "SHA256SUMS"
    sums.write_text(sums.read_text().replace("INSTALL.txt", "INSTALL.TXT"))
    proc = verify(bundle, keys["allowed"])
    assert proc.returncode == 1 and "not a valid signature" in proc.stderr


def test_missing_signature_fails(bundle, keys):
    (bundle / "SHA256SUMS.sig").unlink()
    proc = verify(bundle, keys["allowed"])
    assert proc.returncode == 1 and "SHA256SUMS.sig: missing" in proc.stderr


def test_not_running_from_a_pex():
    proc = cli("self", "verify")
    assert proc.returncode == 2 and "not running from a PEX" in proc.stderr


def test_version_json_from_a_checkout():
    proc = cli("version", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["version"] == project_version(ROOT)
    assert doc["commit"] is None and doc["sbom_sha256"] is None and doc["pex"] is None
    assert doc["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert doc["platform"] in ("linux_x86_64", "linux_aarch64", "macos_arm64", "macos_x86_64")
    line = cli("version")
    assert line.returncode == 0 and line.stdout.startswith(f"orchestrator-pex {project_version(ROOT)} (commit unknown")
