"""The container image (scripts/image), as the release bundle carries it, on a real container engine.

One signed release with ``scripts/release --image`` is built from a clean clone of HEAD (the PEX files, then the image
from this host's PEX). Then:

* a second, independent ``scripts/image`` build (fresh root filesystem, fresh package download) of the bundle's PEX
  with the same ``SOURCE_DATE_EPOCH`` gives a byte-identical archive and the same image digest;
* ``podman load`` of the archive keeps that digest; ``podman run --network none`` runs ``--version``, the demo and a
  5-instance batch of the simulated agent writing to a mounted results folder, as uid 10001;
* the image has no shell and no package manager: starting them fails, and they are absent from the filesystem;
* the signature covers the image: the SHA256SUMS entries match, and a tampered archive is refused by
  ``sha256sum -c`` and by ``install.sh``; the SBOM lists the pinned Debian packages and the PEX contents.

podman runs as root with runc, the vfs storage driver and cgroupfs under a private storage folder that is removed
afterwards. The test skips, with the reason, only where the image cannot be built or run here (not root, no
mmdebstrap/podman/runc/ssh-keygen); under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

from tests.deploy.deploylib import REPO

PRINCIPAL = "release@orchestrator-pex"
TOOLS = ("mmdebstrap", "dpkg-deb", "podman", "runc", "ssh-keygen", "git")
PODMAN_RUN = ["--runtime", "runc", "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]
RUN_FLAGS = ["run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


def cannot_run(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"image test cannot run under CI=true: {why}")
    pytest.skip(why)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def host_platform() -> str:
    return {"x86_64": "linux_x86_64", "aarch64": "linux_aarch64"}.get(os.uname().machine, "")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(bundle folder, allowed_signers, clone) of ``scripts/release --image`` on a clean clone of HEAD."""
    if os.geteuid() != 0:
        cannot_run("scripts/image needs root (mmdebstrap --mode=root) and podman runs rootful here")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        cannot_run(f"not installed: {', '.join(missing)}")
    if not host_platform():
        cannot_run(f"no image for architecture {os.uname().machine}")
    if not (REPO / ".git").exists():
        cannot_run("the image test releases HEAD and needs a git checkout")
    tmp = tmp_path_factory.mktemp("image-release")
    key = tmp / "release"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", PRINCIPAL, "-f", str(key)], check=True)
    allowed = tmp / "allowed_signers"
    allowed.write_text(f'{PRINCIPAL} namespaces="orchestrator-pex" {(tmp / "release.pub").read_text().strip()}\n')
    repo = tmp / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(repo)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PEX", "ORCHESTRATOR_PEX_SIGNING_KEY", "PYTHONPATH")}
    out = tmp / "out"
    proc = subprocess.run([str(repo / "scripts" / "release"), "--image", "--key", str(key), "--out", str(out)],
                          cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    (folder,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    return folder, allowed, repo


def image_files(folder: Path):
    (archive,) = folder.glob("orchestrator-pex-*-image-*.oci.tar")
    base = archive.name[: -len(".oci.tar")]
    return archive, folder / f"{base}.cdx.json", folder / f"{base}.digest"


@pytest.fixture(scope="module")
def podman(tmp_path_factory, bundle):
    """argv prefix of a podman with private storage, the bundle's image loaded; the image reference."""
    store = tmp_path_factory.mktemp("podman")
    base = ["podman", "--root", str(store / "root"), "--runroot", str(store / "run"), *PODMAN_RUN]
    archive, _, _ = image_files(bundle[0])
    info = subprocess.run([*base, "info"], capture_output=True, text=True, timeout=300)
    if info.returncode != 0:
        cannot_run(f"podman cannot start here (podman info): {info.stderr.strip()[-500:]}")
    load = subprocess.run([*base, "load", "-i", str(archive)], capture_output=True, text=True, timeout=600)
    assert load.returncode == 0, load.stderr[-2000:]  # the engine works: a refused archive is a bug of ours
    ref = re.search(r"Loaded image(?:\(s\))?: (\S+)", load.stdout + load.stderr).group(1)
    probe = subprocess.run([*base, *RUN_FLAGS, ref, "--version"], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0 and ("cgroup" in probe.stderr or "namespace" in probe.stderr):
        cannot_run(f"podman cannot start containers here: {probe.stderr.strip()[-500:]}")
    yield base, ref
    subprocess.run([*base, "rmi", "--all", "--force"], capture_output=True, timeout=300)
    shutil.rmtree(store, ignore_errors=True)


def run_image(podman, args: List[str], flags: List[str] = (), timeout: int = 300) -> subprocess.CompletedProcess:
    base, ref = podman
    return subprocess.run([*base, *RUN_FLAGS, *flags, ref, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.deploy
def test_two_builds_from_a_clean_state_give_the_same_digest(bundle, tmp_path):
    folder, _, repo = bundle
    archive, _, digest_file = image_files(folder)
    (pex,) = folder.glob(f"orchestrator-pex-*-{host_platform()}.pex")
    epoch = subprocess.run(["git", "-C", str(repo), "show", "-s", "--format=%ct"], capture_output=True, text=True,
                           check=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    again = tmp_path / "again.oci.tar"
    proc = subprocess.run([str(repo / "scripts" / "image"), "--pex", str(pex), "--commit", commit, "--out", str(again),
                           "--sbom", str(tmp_path / "again.cdx.json")],
                          env={**os.environ, "SOURCE_DATE_EPOCH": epoch}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digest = digest_file.read_text().strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert proc.stdout.strip() == digest
    assert sha256(again) == sha256(archive)
    assert (tmp_path / "again.cdx.json").read_bytes() == image_files(folder)[1].read_bytes()


@pytest.mark.deploy
def test_podman_load_keeps_the_digest_and_the_image_runs_as_non_root(podman, bundle):
    base, ref = podman
    digest = image_files(bundle[0])[2].read_text().strip()
    inspect = subprocess.run([*base, "image", "inspect", "--format", "{{.Digest}} {{.User}}", ref],
                             capture_output=True, text=True, check=True).stdout.split()
    assert inspect == [digest, "10001:10001"]
    proc = run_image(podman, ["--version"])
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"orchestrator-pex \S+\n", proc.stdout)
    uid = run_image(podman, ["-c", "import os; print(os.getuid(), os.getgid())"], ["--entrypoint", "/usr/bin/python3"])
    assert uid.stdout.split() == ["10001", "10001"]


@pytest.mark.deploy
def test_demo_and_a_batch_write_results_to_a_mounted_folder(podman, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    os.chown(results, 10001, 10001)
    demo = run_image(podman, ["demo"], ["-v", f"{results}:/results"])
    assert demo.returncode == 0, demo.stderr[-3000:]
    (demo_doc,) = results.glob("*-demo-*/results.json")
    assert json.loads(demo_doc.read_text())["status"] == "succeeded"

    batches = tmp_path / "batches"
    batches.mkdir()
    names = [f"img-{i}" for i in range(5)]
    lines = ['claude = "@agent-sim"', "concurrency = 5", "[defaults]", "timeout = 120"]
    for n in names:
        lines += ["[[instances]]", f'name = "{n}"', f'prompt = "{n}"', 'env = { AGENT_SIM_SCENARIO = "tool-use" }']
    (batches / "five.toml").write_text("\n".join(lines) + "\n")
    proc = run_image(podman, ["run", "--json", "/batches/five.toml"],
                     ["-v", f"{results}:/results", "-v", f"{batches}:/batches:ro"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert sorted(i["name"] for i in doc["instances"]) == names
    assert doc["status"] == "succeeded" and doc["totals"]["instances"] == 5
    (run_doc,) = results.glob("*-five-*/results.json")
    assert json.loads(run_doc.read_text())["run_id"] == doc["run_id"]
    assert run_doc.stat().st_uid == 10001  # written by the image's user, not root


@pytest.mark.deploy
def test_the_image_has_no_shell_and_no_package_manager(podman):
    for program in ("/bin/sh", "/bin/bash", "/usr/bin/dpkg", "/usr/bin/apt-get", "/usr/bin/env", "/bin/ls"):
        proc = run_image(podman, ["-c", "true"], ["--entrypoint", program])
        assert proc.returncode != 0, program
        assert "no such file or directory" in proc.stderr.lower(), (program, proc.stderr)
    check = ("import os, shutil; print(sorted(p for p in ['/bin/sh','/usr/bin/sh','/bin/bash','/bin/dash',"
             "'/usr/bin/dpkg','/usr/bin/apt','/usr/bin/apt-get','/bin/tar','/var/lib/dpkg','/etc/apt'] "
             "if os.path.lexists(p)), shutil.which('sh'), shutil.which('dpkg'))")
    proc = run_image(podman, ["-c", check], ["--entrypoint", "/usr/bin/python3"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] None None"


@pytest.mark.deploy
def test_signature_covers_the_image_and_a_tampered_archive_is_refused(bundle, tmp_path):
    folder, allowed, repo = bundle
    archive, sbom, digest_file = image_files(folder)
    listed = dict(reversed(line.split("  ", 1)) for line in (folder / "SHA256SUMS").read_text().splitlines())
    for f in (archive, sbom, digest_file):
        assert listed[f.name] == sha256(f), f.name
    verify = ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", PRINCIPAL, "-n", "orchestrator-pex",
              "-s", "SHA256SUMS.sig"]
    with open(folder / "SHA256SUMS", "rb") as sums:
        assert subprocess.run(verify, stdin=sums, cwd=folder, capture_output=True).returncode == 0
    assert subprocess.run(["sha256sum", "-c", "--ignore-missing", "SHA256SUMS"], cwd=folder,
                          capture_output=True).returncode == 0

    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    data = bytearray((tampered / archive.name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / archive.name).write_bytes(bytes(data))
    check = subprocess.run(["sha256sum", "-c", "--ignore-missing", "SHA256SUMS"], cwd=tampered, capture_output=True,
                           text=True)
    assert check.returncode != 0 and f"{archive.name}: FAILED" in check.stdout
    prefix = tmp_path / "prefix"
    proc = subprocess.run(["sh", str(tampered / "install.sh"), "--prefix", str(prefix), "--trust", str(allowed)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "REFUSED" in proc.stderr and archive.name in proc.stderr, proc.stderr
    assert not (prefix / "current").exists()


@pytest.mark.deploy
def test_image_sbom_lists_the_pinned_debian_packages_and_the_pex(bundle):
    folder, _, repo = bundle
    _, sbom_path, digest_file = image_files(folder)
    sbom = json.loads(sbom_path.read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.5"
    props = {p["name"]: p["value"] for p in sbom["metadata"]["component"]["properties"]}
    assert props["orchestrator-pex:image-digest"] == digest_file.read_text().strip()
    pins = dict(line.split("=", 1) for line in (repo / "build-support" / "image-packages.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    debs = {c["name"]: c for c in sbom["components"] if c["purl"].startswith("pkg:deb/")}
    assert {n: c["version"] for n, c in debs.items()} == pins
    assert all(re.fullmatch(r"[0-9a-f]{64}", c["hashes"][0]["content"]) for c in debs.values())
    assert "python3.11-minimal" in debs and "libpython3.11-stdlib" in debs
    (pex_comp,) = [c for c in sbom["components"] if c["name"] == "orchestrator-pex"]
    (pex,) = folder.glob(f"orchestrator-pex-*-{host_platform()}.pex")
    assert pex_comp["hashes"] == [{"alg": "SHA-256", "content": sha256(pex)}]
    assert {"trio", "attrs", "cattrs"} <= {c["name"] for c in pex_comp["components"]}


@pytest.mark.deploy
def test_image_sbom_validates_against_cyclonedx_schema(bundle):
    pytest.importorskip("cyclonedx", reason="test dependency cyclonedx-python-lib[json-validation] is not installed")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    sbom_path = image_files(bundle[0])[1]
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(sbom_path.read_text()) is None


def test_scripts_image_rejects_bad_input_in_one_line(tmp_path):
    """No root, engine or network needed: input is checked before anything is built."""
    pins = tmp_path / "pins.txt"
    pins.write_text("# comment\nlibc6=2.36-9\nnot a pin\n")
    cases = [
        (["--pins", str(pins)], {}, f"{pins}: line 3: expected PACKAGE=VERSION, got 'not a pin'"),
        (["--pins", str(tmp_path / "absent.txt")], {}, f"{tmp_path / 'absent.txt'}: cannot read the package pins"),
        ([], {"SOURCE_DATE_EPOCH": "yesterday"}, "SOURCE_DATE_EPOCH: expected seconds since 1970, got 'yesterday'"),
        (["--pex", str(tmp_path / "no.pex")], {}, f"--pex {tmp_path / 'no.pex'}: no such file"),
    ]
    for args, env, message in cases:
        proc = subprocess.run([str(REPO / "scripts" / "image"), *args], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(f"image: {message}"), (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == "", proc.stderr
