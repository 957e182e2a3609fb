"""Release fixtures: throwaway signing keys and real release bundles built by ``scripts/release`` (Pants) from
clean clones of this repository's HEAD -- version 1 as committed, version 2 with the version bumped.

The builds are shared by the whole session (each takes about a minute and a half). Tests skip when this is not a git
checkout (e.g. under a Pants sandbox) or ``ssh-keygen`` is missing. Uncommitted changes are not part of what these
tests build: they release HEAD, as a release would.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Tuple

import pytest

from tests.support.components import missing

ROOT = Path(__file__).resolve().parents[2]
PRINCIPAL = "release@orchestrator-pex"
V2 = "99.0.0"


def host_tag() -> str:
    machine = os.uname().machine
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[machine]
    if os.uname().sysname == "Darwin":
        return "macos_arm64" if arch == "aarch64" else "macos_x86_64"
    return f"linux_{arch}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_key(folder: Path, name: str) -> Tuple[Path, Path]:
    """An Ed25519 key pair without passphrase and an allowed_signers file trusting it."""
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", PRINCIPAL, "-f", str(key)], check=True)
    allowed = folder / f"{name}.allowed_signers"
    pub = (folder / f"{name}.pub").read_text().strip()
    allowed.write_text(f'{PRINCIPAL} namespaces="orchestrator-pex" {pub}\n')
    return key, allowed


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> Dict[str, Path]:
    if shutil.which("ssh-keygen") is None:
        missing("ssh-keygen (OpenSSH) is not installed")
    folder = tmp_path_factory.mktemp("keys")
    key, allowed = make_key(folder, "release")
    other, other_allowed = make_key(folder, "intruder")
    return {"key": key, "allowed": allowed, "other_key": other, "other_allowed": other_allowed}


def clone(dest: Path, source: Path = ROOT) -> Path:
    """A fresh clone of ``source``'s HEAD (the repository under test by default)."""
    if not (source / ".git").exists():
        missing("release tests need a git checkout of the repository")
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(source), str(dest)], check=True)
    return dest


def git_commit(repo: Path, message: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "release-test",
        "GIT_AUTHOR_EMAIL": "release-test@invalid",
        "GIT_COMMITTER_NAME": "release-test",
        "GIT_COMMITTER_EMAIL": "release-test@invalid",
        "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z",
        "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z",
    }
    subprocess.run(["git", "-C", str(repo), "commit", "--quiet", "-am", message], check=True, env=env)


def release(repo: Path, key: Path, out: Path) -> Path:
    """Run scripts/release in ``repo``; return the bundle folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("PEX", "ORCHESTRATOR_PEX_SIGNING_KEY", "PYTHONPATH")}
    proc = subprocess.run(
        [str(repo / "scripts" / "release"), "--key", str(key), "--out", str(out)],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    bundles = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(bundles) == 1, bundles
    return bundles[0]


def project_version(repo: Path) -> str:
    return re.search(r'^version\s*=\s*"([^"]+)"', (repo / "pyproject.toml").read_text(), re.M).group(1)


@pytest.fixture(scope="session")
def repo_v1(tmp_path_factory) -> Path:
    return clone(tmp_path_factory.mktemp("v1") / "repo")


@pytest.fixture(scope="session")
def bundle_v1(repo_v1, keys, tmp_path_factory) -> Path:
    return release(repo_v1, keys["key"], tmp_path_factory.mktemp("release-v1"))


@pytest.fixture(scope="session")
def bundle_v2(keys, tmp_path_factory) -> Path:
    repo = clone(tmp_path_factory.mktemp("v2") / "repo")
    pyproject = repo / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(re.sub(r'^version\s*=\s*"[^"]+"', f'version = "{V2}"', text, count=1, flags=re.M))
    git_commit(repo, f"release test: version {V2}")
    bundle = release(repo, keys["key"], tmp_path_factory.mktemp("release-v2"))
    assert bundle.name == V2
    return bundle
