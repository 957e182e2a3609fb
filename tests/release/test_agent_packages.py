"""The agent CLI on an air-gapped host: `scripts/release --agent-packages` packs pinned npm packages checked against
the registry's integrity, and `install.sh --agent-prefix` installs a signed bundle's packages offline (no network:
run inside `unshare -n` when possible, with an empty npm cache)."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipapp
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLAUDE_SPEC = "@anthropic-ai/claude-code@2.1.330"


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: nothing may be skipped)")
    pytest.skip(why)


def release_module():
    loader = importlib.machinery.SourceFileLoader("release_script", str(ROOT / "scripts" / "release"))
    spec = importlib.util.spec_from_loader("release_script", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture
def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        _missing("npm is not installed (Debian package npm)")
    return found


def test_release_packs_the_pinned_package_and_checks_the_registry_integrity(npm, tmp_path):
    names = release_module().pack_agent_packages([CLAUDE_SPEC], str(tmp_path))
    assert names == ["anthropic-ai-claude-code-2.1.330.tgz", "AGENT-PACKAGES.txt"]
    spec, file, integrity = (tmp_path / "AGENT-PACKAGES.txt").read_text().split()
    assert (spec, file) == (CLAUDE_SPEC, names[0])
    view = subprocess.run([npm, "view", CLAUDE_SPEC, "dist.integrity"], capture_output=True, text=True, check=True)
    assert integrity == view.stdout.strip()
    import base64

    assert integrity == "sha512-" + base64.b64encode(hashlib.sha512((tmp_path / file).read_bytes()).digest()).decode()


def test_release_refuses_a_tarball_whose_integrity_differs_and_unpinned_specs(tmp_path):
    fake = tmp_path / "npm"
    fake.write_text(f"""#!{sys.executable}
import json, os, sys
if sys.argv[1] == "view":
    print("sha512-" + "A" * 86 + "==")
else:
    dest = sys.argv[sys.argv.index("--pack-destination") + 1]
    open(os.path.join(dest, "evil-1.0.0.tgz"), "wb").write(b"not what the registry has")
    print(json.dumps([{{"filename": "evil-1.0.0.tgz"}}]))
""")
    fake.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    release = release_module()
    with pytest.raises(SystemExit) as err:
        release.pack_agent_packages(["evil@1.0.0"], str(out), npm=str(fake))
    assert err.value.code == 1 and not (out / "evil-1.0.0.tgz").exists()
    for spec in ("evil", "evil@latest", "@scope/evil@^1.0.0"):
        with pytest.raises(SystemExit) as err:
            release.pack_agent_packages([spec], str(out), npm=str(fake))
        assert err.value.code == 2


def _signed_bundle(tmp: Path, npm: str, with_agent: bool = True) -> tuple:
    if shutil.which("ssh-keygen") is None:
        _missing("ssh-keygen (OpenSSH) is not installed")
    version = "9.9.9"
    platform = {("Linux", "x86_64"): "linux_x86_64", ("Linux", "aarch64"): "linux_aarch64"}.get(
        (os.uname().sysname, os.uname().machine))
    if platform is None:
        pytest.skip("install.sh test bundle built for Linux only")
    bundle = tmp / ("bundle" if with_agent else "bundle-plain")
    bundle.mkdir()
    src = tmp / "pex-src"
    src.mkdir(exist_ok=True)
    (src / "__main__.py").write_text(f"print('orchestrator-pex {version}')\n")
    pex = f"orchestrator-pex-{version}-{platform}.pex"
    zipapp.create_archive(str(src), str(bundle / pex))
    shutil.copyfile(ROOT / "deploy" / "install.sh", bundle / "install.sh")
    files = [pex, "install.sh"]
    if with_agent:  # a tiny agent package with a bin, packed locally (no registry involved)
        pkg = tmp / "hello-agent"
        (pkg / "bin").mkdir(parents=True)
        (pkg / "package.json").write_text(json.dumps({"name": "hello-agent", "version": "1.2.3",
                                                      "bin": {"hello-agent": "bin/hello.js"}}))
        (pkg / "bin" / "hello.js").write_text("#!/usr/bin/env node\nconsole.log('hello-agent 1.2.3');\n")
        packed = subprocess.run([npm, "pack", str(pkg), "--pack-destination", str(bundle), "--json"],
                                capture_output=True, text=True, check=True, cwd=tmp)
        tgz = json.loads(packed.stdout)[0]["filename"]
        (bundle / "AGENT-PACKAGES.txt").write_text(f"hello-agent@1.2.3 {tgz} sha512-x\n")
        files += [tgz, "AGENT-PACKAGES.txt"]
    (bundle / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256((bundle / f).read_bytes()).hexdigest()}  {f}\n" for f in files))
    key = tmp / "key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "r@t", "-f", str(key)], check=True)
    (tmp / "allowed").write_text(f'r@t namespaces="orchestrator-pex" {(tmp / "key.pub").read_text()}')
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", "orchestrator-pex", str(bundle / "SHA256SUMS")],
                   check=True, capture_output=True)
    return bundle, tmp / "allowed"


def _install(bundle: Path, allowed: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = ["sh", str(bundle / "install.sh"), "--prefix", str(tmp / "opt"), "--trust", str(allowed), *extra]
    offline = os.geteuid() == 0 and shutil.which("unshare") is not None
    if offline:  # no network at all: only loopback
        argv = ["unshare", "--net", *argv]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp / "home"), "LANG": "C.UTF-8"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def test_install_sh_installs_the_agent_packages_offline_and_idempotently(npm, tmp_path):
    bundle, allowed = _signed_bundle(tmp_path, npm)
    agent = tmp_path / "agent"
    first = _install(bundle, allowed, tmp_path, "--agent-prefix", str(agent))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == "changed=true"
    assert "installed agent packages into" in first.stdout
    hello = subprocess.run([str(agent / "bin" / "hello-agent")], capture_output=True, text=True)
    assert hello.stdout.strip() == "hello-agent 1.2.3"
    again = _install(bundle, allowed, tmp_path, "--agent-prefix", str(agent))
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "changed=false", again.stdout + again.stderr
    assert "agent packages already installed" in again.stdout


def test_install_sh_refuses_agent_prefix_without_packages_and_tampered_tarballs(npm, tmp_path):
    plain, allowed = _signed_bundle(tmp_path, npm, with_agent=False)
    refused = _install(plain, allowed, tmp_path, "--agent-prefix", str(tmp_path / "agent"))
    assert refused.returncode == 1 and "no agent packages" in refused.stderr
    assert not (tmp_path / "opt" / "current").exists()
    bundle, allowed = _signed_bundle(tmp_path, npm)
    tgz = next(bundle.glob("*.tgz"))
    tgz.write_bytes(tgz.read_bytes() + b"\0")
    tampered = _install(bundle, allowed, tmp_path, "--agent-prefix", str(tmp_path / "agent"))
    assert tampered.returncode == 1 and "does not match its SHA-256" in tampered.stderr
    assert not (tmp_path / "agent" / "bin").exists()
