"""The release bundle: contents, signature, SBOMs (CycloneDX schema, exactly the bundled distributions, lockfile
hashes), build metadata embedded in the PEX, self verify, and byte-for-byte reproducibility."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import PRINCIPAL, ROOT, clone, host_tag, project_version, release, sha256

PLATFORMS = ("linux_x86_64", "linux_aarch64", "macos_arm64", "macos_x86_64")


def load_sbom_module():
    spec = importlib.util.spec_from_file_location("sbom_under_test", ROOT / "build-support" / "sbom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_pex(pex: Path, *args: str, env_extra=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PEX", "PYTHONPATH")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(pex), *args], capture_output=True, text=True, env=env)


def test_bundle_layout_and_checksums(bundle_v1, repo_v1):
    version = project_version(repo_v1)
    expected = {"SHA256SUMS", "SHA256SUMS.sig", "install.sh", "INSTALL.txt"}
    for plat in PLATFORMS:
        expected |= {f"orchestrator-pex-{version}-{plat}.pex", f"orchestrator-pex-{version}-{plat}.cdx.json"}
    assert {p.name for p in bundle_v1.iterdir()} == expected
    listed = {}
    for line in (bundle_v1 / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    assert set(listed) == expected - {"SHA256SUMS", "SHA256SUMS.sig"}
    for name, digest in listed.items():
        assert sha256(bundle_v1 / name) == digest, name
    assert (bundle_v1 / "install.sh").read_bytes() == (repo_v1 / "deploy" / "install.sh").read_bytes()
    assert os.access(bundle_v1 / "install.sh", os.X_OK)


def test_signature_verifies_by_hand_and_not_with_another_key(bundle_v1, keys):
    def verify(allowed):
        with open(bundle_v1 / "SHA256SUMS", "rb") as data:
            return subprocess.run(
                ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", PRINCIPAL, "-n", "orchestrator-pex",
                 "-s", str(bundle_v1 / "SHA256SUMS.sig")],
                stdin=data, capture_output=True,
            ).returncode

    assert verify(keys["allowed"]) == 0
    assert verify(keys["other_allowed"]) != 0


def test_version_json_reports_embedded_build_metadata(bundle_v1, repo_v1):
    version = project_version(repo_v1)
    commit = subprocess.run(["git", "-C", str(repo_v1), "rev-parse", "HEAD"], stdout=subprocess.PIPE,
                            text=True).stdout.strip()
    epoch = int(subprocess.run(["git", "-C", str(repo_v1), "show", "-s", "--format=%ct"], stdout=subprocess.PIPE,
                               text=True).stdout)
    tag = host_tag()
    pex = bundle_v1 / f"orchestrator-pex-{version}-{tag}.pex"
    proc = run_pex(pex, "version", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["version"] == version and doc["commit"] == commit and doc["source_date_epoch"] == epoch
    assert doc["platform"] == tag
    assert doc["sbom_sha256"] == sha256(bundle_v1 / f"orchestrator-pex-{version}-{tag}.cdx.json")
    assert doc["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert doc["pex"] == str(pex)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["build_time"])
    # The generated metadata file never stays in the tree it was built from.
    assert not (repo_v1 / "orchestrator_pex" / "_build_info.json").exists()
    assert run_pex(pex, "--version").stdout.strip() == f"orchestrator-pex {version}"


def test_self_verify(bundle_v1, repo_v1, keys, tmp_path):
    version = project_version(repo_v1)
    pex = bundle_v1 / f"orchestrator-pex-{version}-{host_tag()}.pex"
    ok = run_pex(pex, "self", "verify", "--trust", str(keys["allowed"]))
    assert ok.returncode == 0, ok.stderr
    assert f"signed by {PRINCIPAL}" in ok.stdout
    bad_trust = run_pex(pex, "self", "verify", "--trust", str(keys["other_allowed"]))
    assert bad_trust.returncode == 1 and "not a valid signature" in bad_trust.stderr
    # A modified copy of the PEX (same name) is caught by the checksum.
    copy_dir = tmp_path / "b"
    copy_dir.mkdir()
    for name in ("SHA256SUMS", "SHA256SUMS.sig"):
        (copy_dir / name).write_bytes((bundle_v1 / name).read_bytes())
    data = bytearray(pex.read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy_dir / pex.name).write_bytes(bytes(data))
    tampered = run_pex(pex, "self", "verify", "--pex", str(copy_dir / pex.name), "--bundle", str(copy_dir),
                       "--trust", str(keys["allowed"]))
    assert tampered.returncode == 1 and "does not match" in tampered.stderr
    assert run_pex(pex, "self", "verify", "--trust", str(keys["allowed"]), "--bundle", str(tmp_path)).returncode == 1


@pytest.mark.parametrize("plat", PLATFORMS)
def test_sbom_lists_exactly_the_bundled_distributions(bundle_v1, repo_v1, plat):
    version = project_version(repo_v1)
    pex = bundle_v1 / f"orchestrator-pex-{version}-{plat}.pex"
    sbom = json.loads((bundle_v1 / f"orchestrator-pex-{version}-{plat}.cdx.json").read_text())
    with zipfile.ZipFile(pex) as zf:
        wheels = sorted(json.loads(zf.read("PEX-INFO"))["distributions"])
    in_pex = set()
    for wheel in wheels:
        name, dist_version = wheel.split("-")[:2]
        in_pex.add((re.sub(r"[-_.]+", "-", name).lower(), dist_version))
    listed = {(re.sub(r"[-_.]+", "-", c["name"]).lower(), c["version"]) for c in sbom["components"]}
    assert listed == in_pex and len(sbom["components"]) == len(wheels)
    assert {"trio", "attrs", "cattrs", "tomli-w"} <= {n for n, _ in listed}
    lock = load_sbom_module().read_lockfile(str(repo_v1 / "lockfiles" / "python-default.lock"))
    by_wheel = {p["value"]: c for c in sbom["components"] for p in c["properties"]
                if p["name"] == "orchestrator-pex:wheel"}
    assert sorted(by_wheel) == wheels
    for wheel, comp in by_wheel.items():
        assert comp["hashes"] == [{"alg": "SHA-256", "content": lock[wheel]["sha256"]}]
        assert comp["purl"] == f"pkg:pypi/{re.sub(r'[-_.]+', '-', comp['name']).lower()}@{comp['version']}"
        assert comp.get("licenses"), f"{wheel}: no license found"
    tool = sbom["metadata"]["component"]
    assert (tool["name"], tool["version"]) == ("orchestrator-pex", version)
    assert {"name": "orchestrator-pex:platform", "value": plat} in tool["properties"]


@pytest.mark.parametrize("plat", PLATFORMS)
def test_sbom_validates_against_cyclonedx_schema(bundle_v1, repo_v1, plat):
    pytest.importorskip("cyclonedx", reason="test dependency cyclonedx-python-lib[json-validation] is not installed")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = (bundle_v1 / f"orchestrator-pex-{project_version(repo_v1)}-{plat}.cdx.json").read_text()
    assert json.loads(text)["specVersion"] == "1.5"
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text) is None


def test_pex_does_not_carry_build_helpers(bundle_v1, repo_v1):
    pex = bundle_v1 / f"orchestrator-pex-{project_version(repo_v1)}-{host_tag()}.pex"
    with zipfile.ZipFile(pex) as zf:
        names = zf.namelist()
    assert not [n for n in names if "sbom" in n or n.startswith(("build-support/", "scripts/", "tests/", "deploy/"))]
    assert "orchestrator_pex/_build_info.json" in names
    assert not [n for n in names if "cyclonedx" in n.lower()]


def test_two_releases_of_one_commit_are_byte_identical(bundle_v1, repo_v1, keys, tmp_path_factory):
    # Another clone of the very commit bundle_v1 was built from, built in another folder.
    other = clone(tmp_path_factory.mktemp("v1-again") / "repo", source=repo_v1)
    again = release(other, keys["key"], tmp_path_factory.mktemp("rel-again"))
    names = sorted(p.name for p in bundle_v1.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    differing = [n for n in names if (bundle_v1 / n).read_bytes() != (again / n).read_bytes()]
    assert differing == []


def test_release_refuses_key_inside_repo_and_dirty_tree(repo_v1, keys):
    inside = repo_v1 / "release-key"
    inside.write_bytes(keys["key"].read_bytes())
    proc = subprocess.run([str(repo_v1 / "scripts" / "release"), "--key", str(inside)], cwd=repo_v1,
                          capture_output=True, text=True)
    inside.unlink()
    assert proc.returncode == 2 and "inside the repository" in proc.stderr
    readme = repo_v1 / "pyproject.toml"
    original = readme.read_bytes()
    readme.write_bytes(original + b"\n")
    try:
        proc = subprocess.run([str(repo_v1 / "scripts" / "release"), "--key", str(keys["key"])], cwd=repo_v1,
                              capture_output=True, text=True)
    finally:
        readme.write_bytes(original)
    assert proc.returncode == 2 and "uncommitted changes" in proc.stderr
    proc = subprocess.run([str(repo_v1 / "scripts" / "release")], cwd=repo_v1, capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_PEX_SIGNING_KEY"})
    assert proc.returncode == 2 and "no signing key" in proc.stderr


def test_self_verify_catches_a_resigned_bundle_with_another_sbom(bundle_v1, repo_v1, keys, tmp_path):
    """Even a bundle re-signed by the trusted key cannot pair the PEX with an SBOM it was not built with."""
    copy = tmp_path / "bundle"
    copy.mkdir()
    version = project_version(repo_v1)
    pex_name = f"orchestrator-pex-{version}-{host_tag()}.pex"
    sbom_name = pex_name[: -len(".pex")] + ".cdx.json"
    (copy / pex_name).write_bytes((bundle_v1 / pex_name).read_bytes())
    (copy / sbom_name).write_bytes((bundle_v1 / sbom_name).read_bytes() + b"\n")
    (copy / "SHA256SUMS").write_text("".join(f"{sha256(copy / n)}  {n}\n" for n in sorted((pex_name, sbom_name))))
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys["key"]), "-n", "orchestrator-pex",
                    str(copy / "SHA256SUMS")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = run_pex(copy / pex_name, "self", "verify", "--trust", str(keys["allowed"]))
    assert proc.returncode == 1 and f"{sbom_name}: not the SBOM " in proc.stderr, proc.stderr
    (copy / sbom_name).write_bytes((bundle_v1 / sbom_name).read_bytes())
    (copy / "SHA256SUMS").write_text("".join(f"{sha256(copy / n)}  {n}\n" for n in sorted((pex_name, sbom_name))))
    (copy / "SHA256SUMS.sig").unlink()
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys["key"]), "-n", "orchestrator-pex",
                    str(copy / "SHA256SUMS")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = run_pex(copy / pex_name, "self", "verify", "--trust", str(keys["allowed"]))
    assert proc.returncode == 0, proc.stderr
