"""Regenerate the complete-platform JSON files the PEX builds resolve against (see README.md beside this file).

Run with Pants' own interpreter (it has `packaging`), from the repository root, after scripts/pants bootstrapped:

    ~/.cache/orchestrator-pex/pants-2.17.1/bin/python build-support/complete_platforms/generate.py

linux_x86_64 comes from inspecting the real local CPython 3.9-3.13 (`pex3 interpreter inspect --markers --tags`);
the other platforms are derived from it by swapping the platform part of every tag, keeping pex's preference order.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys

from packaging.tags import mac_platforms

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PEX_TOOL = os.path.join(ROOT, "build-support", "bin", "pex-v2.1.148")
VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
# Oldest glibc we claim: manylinux2014 (glibc 2.17, e.g. RHEL/CentOS 7). Newer manylinux tags of the build host
# are dropped so a binary wheel needing a newer glibc can never be chosen for an older server.
MAX_GLIBC_MINOR = 17
MANYLINUX_RE = re.compile(r"^manylinux_2_(\d+)_")
LEGACY_RE = re.compile(r"^(manylinux1|manylinux2010|manylinux2014)_")
LEGACY = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}
MACOS_MIN = (11, 0)  # Big Sur: the first macOS on Apple silicon; we claim 11+ for Intel Macs too.
DARWIN_RELEASE = "20.0.0"  # Darwin kernel of macOS 11


def find_interpreter(version: str) -> str:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")))
    if not found:
        sys.exit(f"generate.py: no CPython {version} under {root}/versions")
    return found[-1]


def inspect(python: str) -> dict:
    out = subprocess.run(
        [sys.executable, PEX_TOOL, "interpreter", "inspect", "--python", python, "--markers", "--tags"],
        env={**os.environ, "PEX_SCRIPT": "pex3"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)
    return {"marker_environment": info["marker_environment"], "compatible_tags": info["compatible_tags"]}


def glibc_minor(platform: str) -> int | None:
    m = MANYLINUX_RE.match(platform)
    if m:
        return int(m.group(1))
    m = LEGACY_RE.match(platform)
    return LEGACY[m.group(1)] if m else None


def swap_platforms(tags: list[str], platforms_for) -> list[str]:
    """Replace the platform of each non-`any` tag by the list ``platforms_for(platform)`` (in that order)."""
    result: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        interpreter, abi, platform = tag.split("-")
        new = [platform] if platform == "any" else platforms_for(platform)
        for p in new:
            t = f"{interpreter}-{abi}-{p}"
            if t not in seen:
                seen.add(t)
                result.append(t)
    return result


def linux_x86_64(platform: str) -> list[str]:
    minor = glibc_minor(platform)
    return [platform] if minor is None or minor <= MAX_GLIBC_MINOR else []


def linux_aarch64(platform: str) -> list[str]:
    # aarch64 has no manylinux1/manylinux2010; its first manylinux is manylinux2014 (glibc 2.17).
    minor = glibc_minor(platform)
    if minor is not None and minor != MAX_GLIBC_MINOR:
        return []
    return [platform.replace("x86_64", "aarch64")]


def macos(arch: str):
    plats = list(mac_platforms(MACOS_MIN, arch))

    def swap(platform: str) -> list[str]:
        # All the Linux platforms of one interpreter/abi pair map to the same macOS list (deduplicated).
        return plats

    return swap


def derive(base: dict, tags_for, markers: dict) -> dict:
    return {
        "marker_environment": {**base["marker_environment"], **markers},
        "compatible_tags": swap_platforms(base["compatible_tags"], tags_for),
    }


def main() -> None:
    for version in VERSIONS:
        base = inspect(find_interpreter(version))
        py = "cp" + version.replace(".", "")
        mac_markers = {
            "os_name": "posix",
            "platform_system": "Darwin",
            "sys_platform": "darwin",
            "platform_release": DARWIN_RELEASE,
            "platform_version": f"Darwin Kernel Version {DARWIN_RELEASE}",
        }
        outputs = {
            "linux_x86_64": derive(base, linux_x86_64, {}),
            "linux_aarch64": derive(base, linux_aarch64, {"platform_machine": "aarch64"}),
            "macos_x86_64": derive(base, macos("x86_64"), {**mac_markers, "platform_machine": "x86_64"}),
            "macos_arm64": derive(base, macos("arm64"), {**mac_markers, "platform_machine": "arm64"}),
        }
        for name, data in outputs.items():
            path = os.path.join(HERE, f"{name}-{py}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.write("\n")
            print(f"wrote {os.path.relpath(path, ROOT)} ({len(data['compatible_tags'])} tags)")


if __name__ == "__main__":
    main()
