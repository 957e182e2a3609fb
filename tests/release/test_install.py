"""deploy/install.sh from a real bundle: install, idempotent re-install, upgrade, rollback (the installed PEX runs
after every step), and the tamper matrix -- every unverifiable bundle is refused and the prefix is left unchanged."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Tuple

import pytest

from .conftest import V2, host_tag, sha256


def install(bundle: Path, prefix: Path, *args: str, trust=None) -> subprocess.CompletedProcess:
    argv = ["sh", str(bundle / "install.sh"), "--prefix", str(prefix), *args]
    if trust is not None:
        argv += ["--trust", str(trust)]
    env = {k: v for k, v in os.environ.items() if k not in ("PEX", "PYTHONPATH")}
    return subprocess.run(argv, capture_output=True, text=True, env=env)


def changed(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.strip().splitlines()[-1]


def snapshot(prefix: Path) -> Dict[str, Tuple[str, str]]:
    """Everything under ``prefix``: path -> (kind, symlink target or content digest)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(prefix):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(prefix))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", "")
            else:
                out[rel] = ("file", sha256(p))
    return out


def run_current(prefix: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PEX", "PYTHONPATH", "ORCHESTRATOR_PEX_RESULTS_DIR")}
    return subprocess.run([str(prefix / "current" / "orchestrator-pex"), *args], cwd=prefix.parent,
                          capture_output=True, text=True, env=env)


def assert_current(prefix: Path, version: str, demo: bool = False) -> None:
    assert os.readlink(prefix / "current") == version
    proc = run_current(prefix, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"orchestrator-pex {version}", proc.stderr
    if demo:
        proc = run_current(prefix, "demo")
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_install_reinstall_upgrade_rollback(bundle_v1, bundle_v2, keys, tmp_path):
    prefix = tmp_path / "opt" / "orchestrator-pex"
    v1 = bundle_v1.name
    trust = keys["allowed"]

    first = install(bundle_v1, prefix, trust=trust)
    assert first.returncode == 0 and changed(first) == "changed=true", first.stderr
    assert_current(prefix, v1, demo=True)
    assert not (prefix / "previous").exists()
    installed = prefix / v1
    assert {p.name for p in installed.iterdir()} >= {
        f"orchestrator-pex-{v1}-{host_tag()}.pex", "orchestrator-pex", "SHA256SUMS", "SHA256SUMS.sig",
        "allowed_signers",
        f"orchestrator-pex-{v1}-{host_tag()}.cdx.json",
    }
    verify = run_current(prefix, "self", "verify")
    assert verify.returncode == 0, verify.stderr

    before = snapshot(prefix)
    again = install(bundle_v1, prefix, trust=trust)
    assert again.returncode == 0 and changed(again) == "changed=false", again.stderr
    assert "already installed" in again.stdout
    assert snapshot(prefix) == before

    upgrade = install(bundle_v2, prefix, trust=trust)
    assert upgrade.returncode == 0 and changed(upgrade) == "changed=true", upgrade.stderr
    assert_current(prefix, V2, demo=True)
    assert os.readlink(prefix / "previous") == v1
    assert (prefix / v1).is_dir()  # earlier versions are kept
    assert changed(install(bundle_v2, prefix, trust=trust)) == "changed=false"

    back = install(bundle_v2, prefix, "--rollback")
    assert back.returncode == 0 and changed(back) == "changed=true", back.stderr
    assert_current(prefix, v1, demo=True)
    assert os.readlink(prefix / "previous") == V2
    # Rolling back again returns to the newer version; re-installing v2 switches without copying.
    assert changed(install(bundle_v2, prefix, "--rollback")) == "changed=true"
    assert_current(prefix, V2)
    install(bundle_v2, prefix, "--rollback")
    reinstall = install(bundle_v2, prefix, trust=trust)
    assert changed(reinstall) == "changed=true" and "switched" in reinstall.stdout
    assert_current(prefix, V2)


def test_rollback_without_previous_is_refused(bundle_v1, keys, tmp_path):
    prefix = tmp_path / "p"
    assert install(bundle_v1, prefix, trust=keys["allowed"]).returncode == 0
    before = snapshot(prefix)
    proc = install(bundle_v1, prefix, "--rollback")
    assert proc.returncode == 1 and "nothing to roll back to" in proc.stderr and changed(proc) == "changed=false"
    assert snapshot(prefix) == before


def test_rollback_refuses_a_modified_previous_version(bundle_v1, bundle_v2, keys, tmp_path):
    prefix = tmp_path / "p"
    assert install(bundle_v1, prefix, trust=keys["allowed"]).returncode == 0
    assert install(bundle_v2, prefix, trust=keys["allowed"]).returncode == 0
    pex = prefix / bundle_v1.name / f"orchestrator-pex-{bundle_v1.name}-{host_tag()}.pex"
    data = bytearray(pex.read_bytes())
    data[100] ^= 0xFF
    pex.write_bytes(bytes(data))
    before = snapshot(prefix)
    proc = install(bundle_v2, prefix, "--rollback")
    assert proc.returncode == 1 and "REFUSED" in proc.stderr and "does not match" in proc.stderr
    assert snapshot(prefix) == before


def flip(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset if offset >= 0 else len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def tamper_pex(b: Path, ctx) -> None:
    flip(b / ctx["pex"])


def tamper_other_platform_pex(b: Path, ctx) -> None:
    other = next(p for p in b.glob("*.pex") if p.name != ctx["pex"])
    flip(other)


def tamper_sums(b: Path, ctx) -> None:
    flip(b / "SHA256SUMS", offset=3)  # a hex digit of the first checksum


def tamper_sums_consistently(b: Path, ctx) -> None:
    """Replace the PEX and fix its checksum: the signature no longer matches SHA256SUMS."""
    flip(b / ctx["pex"])
    lines = (b / "SHA256SUMS").read_text().splitlines()
    fixed = [f"{sha256(b / ctx['pex'])}  {ctx['pex']}" if line.endswith(ctx["pex"]) else line for line in lines]
    (b / "SHA256SUMS").write_text("\n".join(fixed) + "\n")


def tamper_signature(b: Path, ctx) -> None:
    sig = (b / "SHA256SUMS.sig").read_text().splitlines()
    body = list(sig[2])
    body[10] = "A" if body[10] != "A" else "B"
    sig[2] = "".join(body)
    (b / "SHA256SUMS.sig").write_text("\n".join(sig) + "\n")


def swap_in_other_version(b: Path, ctx) -> None:
    shutil.copyfile(ctx["v1_pex_path"], b / ctx["pex"])


def resign_with_unknown_key(b: Path, ctx) -> None:
    (b / "SHA256SUMS.sig").unlink()
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(ctx["other_key"]), "-n", "orchestrator-pex",
                    str(b / "SHA256SUMS")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def remove_pex(b: Path, ctx) -> None:
    (b / ctx["pex"]).unlink()


def remove_signature(b: Path, ctx) -> None:
    (b / "SHA256SUMS.sig").unlink()


def remove_sums(b: Path, ctx) -> None:
    (b / "SHA256SUMS").unlink()


def wrong_namespace(b: Path, ctx) -> None:
    (b / "SHA256SUMS.sig").unlink()
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(ctx["key"]), "-n", "file", str(b / "SHA256SUMS")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def resign_broken_pex(b: Path, ctx) -> None:
    """The trusted key signed a PEX that cannot start (a broken build): refused by the start check."""
    (b / ctx["pex"]).write_bytes(b"#!/usr/bin/env python3\nraise SystemExit('broken build')\n")
    lines = (b / "SHA256SUMS").read_text().splitlines()
    fixed = [f"{sha256(b / ctx['pex'])}  {ctx['pex']}" if line.endswith(ctx["pex"]) else line for line in lines]
    (b / "SHA256SUMS").write_text("\n".join(fixed) + "\n")
    (b / "SHA256SUMS.sig").unlink()
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(ctx["key"]), "-n", "orchestrator-pex", str(b / "SHA256SUMS")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


TAMPERS = {
    "flipped byte in the PEX": (tamper_pex, "does not match its SHA-256"),
    "flipped byte in another platform's PEX": (tamper_other_platform_pex, "does not match its SHA-256"),
    "flipped byte in SHA256SUMS": (tamper_sums, "not a valid signature"),
    "PEX replaced and SHA256SUMS fixed up": (tamper_sums_consistently, "not a valid signature"),
    "flipped byte in the signature": (tamper_signature, "not a valid signature"),
    "PEX of another version swapped in": (swap_in_other_version, "does not match its SHA-256"),
    "signed by an unknown key": (resign_with_unknown_key, "not a valid signature"),
    "signed for another namespace": (wrong_namespace, "not a valid signature"),
    "PEX missing": (remove_pex, "is missing"),
    "signature missing": (remove_signature, "SHA256SUMS.sig is missing"),
    "SHA256SUMS missing": (remove_sums, "SHA256SUMS is missing"),
    "signed PEX that does not start": (resign_broken_pex, "does not start"),
}


@pytest.fixture(scope="module")
def installed_v1(bundle_v1, keys, tmp_path_factory) -> Path:
    prefix = tmp_path_factory.mktemp("tamper") / "prefix"
    proc = install(bundle_v1, prefix, trust=keys["allowed"])
    assert proc.returncode == 0, proc.stderr
    return prefix


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_bundle_is_refused_and_prefix_unchanged(case, bundle_v1, bundle_v2, keys, installed_v1, tmp_path):
    tamper, message = TAMPERS[case]
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_v2, bundle)
    pex = f"orchestrator-pex-{V2}-{host_tag()}.pex"
    ctx = {
        "pex": pex,
        "v1_pex_path": bundle_v1 / f"orchestrator-pex-{bundle_v1.name}-{host_tag()}.pex",
        "other_key": keys["other_key"],
        "key": keys["key"],
    }
    tamper(bundle, ctx)
    before = snapshot(installed_v1)
    proc = install(bundle, installed_v1, trust=keys["allowed"])
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "REFUSED" in proc.stderr and message in proc.stderr, proc.stderr
    assert changed(proc) == "changed=false"
    assert snapshot(installed_v1) == before
    assert_current(installed_v1, bundle_v1.name)


def test_untrusted_key_file_is_refused(bundle_v2, keys, installed_v1):
    before = snapshot(installed_v1)
    proc = install(bundle_v2, installed_v1, trust=keys["other_allowed"])
    assert proc.returncode == 1 and "not a valid signature" in proc.stderr
    assert snapshot(installed_v1) == before


def test_fresh_prefix_is_not_created_when_refused(bundle_v2, keys, tmp_path):
    proc = install(bundle_v2, tmp_path / "never", trust=keys["other_allowed"])
    assert proc.returncode == 1
    assert not (tmp_path / "never").exists()


def test_usage_errors(bundle_v1, tmp_path):
    proc = install(bundle_v1, tmp_path / "p")
    assert proc.returncode == 2 and "--trust" in proc.stderr
    proc = subprocess.run(["sh", str(bundle_v1 / "install.sh"), "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown argument" in proc.stderr
