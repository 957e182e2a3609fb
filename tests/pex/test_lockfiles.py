"""The lockfiles agree with pyproject.toml and with each other, and scripts/lock-requirements reads them right.

Fast and needs no build: not marked `pex`, so it runs with the ordinary suite (plain pytest; not under Pants).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.pex.pexlib import PYTHONS, ROOT, find_python

HEADER_RE = re.compile(r"^// ?")


def read_lock(resolve: str):
    text = (ROOT / "lockfiles" / f"{resolve}.lock").read_text(encoding="utf-8")
    header = json.loads("".join(
        HEADER_RE.sub("", line) for line in text.splitlines(True)
        if line.startswith("//") and not line.startswith("// ---") and line.strip() not in ("//",)
        and not line.startswith("// This lockfile") and not line.startswith("//    pants")))
    body = json.loads("".join(line for line in text.splitlines(True) if not line.startswith("//")))
    return header, body


def versions(body) -> dict:
    (resolve,) = body["locked_resolves"]
    return {r["project_name"]: r["version"] for r in resolve["locked_requirements"]}


def pyproject_section(key: str) -> list:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["dependencies"] if key == "runtime" else project["optional-dependencies"]["dev"]


def normalized(reqs) -> list:
    return sorted(r.replace(" ", "").replace("'", '"') for r in reqs)


def test_lockfiles_match_pyproject() -> None:
    header, _ = read_lock("python-default")
    assert normalized(header["generated_with_requirements"]) == normalized(pyproject_section("runtime")), \
        "pyproject.toml dependencies changed: scripts/pants generate-lockfiles"
    header, _ = read_lock("pytest")
    assert normalized(header["generated_with_requirements"]) == normalized(pyproject_section("dev")), \
        "pyproject.toml dev dependencies changed: scripts/pants generate-lockfiles"


def test_shared_projects_have_the_same_version_in_both_locks() -> None:
    runtime, tests = versions(read_lock("python-default")[1]), versions(read_lock("pytest")[1])
    differ = {n: (runtime[n], tests[n]) for n in runtime.keys() & tests.keys() if runtime[n] != tests[n]}
    assert not differ, f"regenerate both lockfiles together (scripts/pants generate-lockfiles): {differ}"
    assert "trio" in runtime.keys() & tests.keys()


def test_universal_lock_supports_every_python() -> None:
    for resolve in ("python-default", "pytest"):
        header, body = read_lock(resolve)
        assert header["valid_for_interpreter_constraints"] == ["CPython<3.14,>=3.9"]
        assert body["style"] == "universal"


@pytest.mark.parametrize("version", PYTHONS)
def test_lock_requirements_follow_markers(version: str) -> None:
    py = find_python(version)
    if py is None:
        pytest.skip(f"CPython {version} is not installed")
    out = subprocess.run([py, str(ROOT / "scripts" / "lock-requirements"), "python-default"], check=True,
                         capture_output=True, text=True).stdout.split()
    names = {line.split("==")[0] for line in out}
    locked = versions(read_lock("python-default")[1])
    assert {"trio", "attrs", "cattrs", "tomli-w"} <= names
    assert ("tomli" in names) == (version in ("3.9", "3.10"))
    assert ("exceptiongroup" in names) == (version in ("3.9", "3.10"))
    for line in out:
        name, pinned = line.split("==")
        assert locked[name] == pinned
