"""(d) What is inside each PEX: exactly the locked runtime distributions, the runtime package, pyproject.toml."""

from __future__ import annotations

import json
import re
import zipfile

import pytest

from tests.pex.pexlib import PLATFORMS, ROOT

pytestmark = pytest.mark.pex


def locked_runtime() -> set:
    text = (ROOT / "lockfiles" / "python-default.lock").read_text(encoding="utf-8")
    lock = json.loads("".join(line for line in text.splitlines(True) if not line.startswith("//")))
    (resolve,) = lock["locked_resolves"]
    return {(canonical(r["project_name"]), r["version"]) for r in resolve["locked_requirements"]}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def source_files() -> set:
    pkg = ROOT / "orchestrator_pex"
    return {
        str(p.relative_to(ROOT))
        for p in pkg.rglob("*")
        if p.is_file() and p.name != "BUILD" and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.mark.parametrize("platform", PLATFORMS)
def test_pex_holds_exactly_the_runtime(built_pexes, platform: str) -> None:
    with zipfile.ZipFile(built_pexes[platform]) as z:
        names = z.namelist()
        info = json.loads(z.read("PEX-INFO"))
        bundled_pyproject = z.read("pyproject.toml")

    # Distributions: every locked runtime project (for every Python 3.9-3.13 marker branch), nothing else.
    dists = set()
    for wheel in info["distributions"]:
        name, version = wheel.split("-")[:2]
        dists.add((canonical(name), version))
    assert dists == locked_runtime()
    assert not {d for d, _ in dists} & {"pytest", "pytest-trio", "pluggy", "iniconfig", "pip", "setuptools"}

    # Top level: pex's own machinery, the package and pyproject.toml (the version source) beside it.
    top = {n.split("/", 1)[0] for n in names}
    assert top == {".bootstrap", ".deps", "PEX-INFO", "__main__.py", "__pex__", "orchestrator_pex", "pyproject.toml"}
    assert bundled_pyproject == (ROOT / "pyproject.toml").read_bytes()

    # The package: exactly the runtime sources of the checkout; no tests, no BUILD files, no bytecode.
    packaged = {n for n in names if n.startswith("orchestrator_pex/") and not n.endswith("/")}
    assert packaged == source_files()
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n or "conftest" in n or n.endswith(".pyc")]
    assert info["entry_point"] == "orchestrator_pex.cli:main"
    assert info["build_properties"]["pex_version"] == "2.1.148"
