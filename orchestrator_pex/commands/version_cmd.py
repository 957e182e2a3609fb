"""``orchestrator-pex version [--json]``: what this build is.

Fields: ``version``, ``commit``, ``build_time`` (UTC, from the release's ``SOURCE_DATE_EPOCH``, i.e. the commit
time, so two builds of one commit agree), ``source_date_epoch``, ``platform`` (the release platform tag of this PEX:
``linux_x86_64``, ``linux_aarch64``, ``macos_arm64`` or ``macos_x86_64``), ``python`` (the interpreter running it),
``sbom_sha256`` (digest of the CycloneDX SBOM the release shipped beside this PEX), ``pex`` (path of the running PEX
file, ``null`` outside a PEX).

Build metadata is a JSON resource, ``orchestrator_pex/_build_info.json``, that ``scripts/release`` writes before it
packages the PEX files; a checkout or a development PEX has none and reports ``commit: null``. The platform tag is
read from the PEX file name (``orchestrator-pex-<version>-<tag>.pex``) and otherwise derived from the host.
"""

from __future__ import annotations

import argparse
import json
import os
import pkgutil
import platform as _platform
import re
import sys
from typing import Any, Dict, Optional

from orchestrator_pex import strictjson

BUILD_INFO_RESOURCE = "_build_info.json"
PLATFORM_TAGS = ("linux_x86_64", "linux_aarch64", "macos_arm64", "macos_x86_64")
_PEX_NAME_RE = re.compile(  # always fullmatch
    r"orchestrator-pex-(?P<version>.+)-(?P<tag>linux_x86_64|linux_aarch64|macos_arm64|macos_x86_64)\.pex")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of one line")


def build_info() -> Dict[str, Any]:
    """The release build metadata embedded in this PEX, or ``{}`` when there is none (a checkout)."""
    try:
        data = pkgutil.get_data("orchestrator_pex", BUILD_INFO_RESOURCE)
    except (OSError, ValueError):
        data = None
    if not data:
        return {}
    try:
        info = json.loads(data.decode("utf-8"))
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def host_platform_tag() -> Optional[str]:
    """The release platform tag matching this host, or ``None`` for a platform there is no release for."""
    system = _platform.system()
    machine = _platform.machine().lower()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(machine)
    if system == "Linux" and arch:
        return f"linux_{arch}"
    if system == "Darwin" and arch:
        return "macos_arm64" if arch == "aarch64" else "macos_x86_64"
    return None


def running_pex() -> Optional[str]:
    """Absolute path of the PEX file this process runs from (pex exports it as ``$PEX``), else ``None``."""
    path = os.environ.get("PEX")
    return os.path.abspath(path) if path else None


def pex_platform_tag(pex_path: Optional[str]) -> Optional[str]:
    if not pex_path:
        return None
    for candidate in (pex_path, os.path.realpath(pex_path)):
        match = _PEX_NAME_RE.fullmatch(os.path.basename(candidate))
        if match:
            return match.group("tag")
    return None


def describe_build() -> Dict[str, Any]:
    """The document ``version --json`` prints."""
    from orchestrator_pex.version import version

    info = build_info()
    pex = running_pex()
    tag = pex_platform_tag(pex) or host_platform_tag()
    sboms = info.get("sbom_sha256") or {}
    return {
        "name": "orchestrator-pex",
        "version": info.get("version") or version(),
        "commit": info.get("commit"),
        "build_time": info.get("build_time"),
        "source_date_epoch": info.get("source_date_epoch"),
        "platform": tag,
        "python": {
            "version": _platform.python_version(),
            "implementation": _platform.python_implementation(),
            "executable": sys.executable,
        },
        "sbom_sha256": sboms.get(tag) if isinstance(sboms, dict) else None,
        "pex": pex,
    }


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex.request import VersionRequest

    request = VersionRequest.from_args(args)
    doc = describe_build()
    if request.json:
        print(strictjson.dumps(doc, indent=2, sort_keys=True))
        return 0
    commit = (doc["commit"] or "unknown")[:12]
    built = doc["build_time"] or "not a release build"
    print(
        f"orchestrator-pex {doc['version']} (commit {commit}, built {built}, {doc['platform'] or 'unknown platform'}, "
        f"python {doc['python']['version']})"
    )
    return 0
