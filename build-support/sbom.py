#!/usr/bin/env python3
"""CycloneDX 1.5 SBOM for one orchestrator-pex PEX file (build helper; never bundled into the PEX).

What it lists: every third-party distribution bundled in the PEX (read from the PEX's ``PEX-INFO`` and its
``.deps/<wheel>/<name>.dist-info/METADATA``), each with name, version, PyPI purl, the SHA-256 of the exact wheel the
Pants lockfile pinned (matched by wheel file name), and its license (``License-Expression``, else a recognised
``License`` field or trove classifier, else the ``License`` text as a name). The tool itself is
``metadata.component``, with the commit and platform as properties. The PEX's own hash is deliberately absent:
the PEX embeds this SBOM's digest, and ``SHA256SUMS`` carries the PEX hash.

Output is deterministic: the timestamp is ``SOURCE_DATE_EPOCH``, the serial number a UUIDv5 of
(version, commit, platform), keys sorted -- the same inputs give the same bytes.

Usage: sbom.py --pex FILE --lockfile lockfiles/python-default.lock --version V --commit SHA
               --source-date-epoch N --platform TAG [--license SPDX] [-o OUT]
"""

from __future__ import annotations

import argparse
import datetime
import email.parser
import json
import os
import re
import sys
import uuid
import zipfile
from typing import Any, Dict, List, Optional, Tuple

SPEC_VERSION = "1.5"
SBOM_NAMESPACE = uuid.UUID("6f1d1c1e-4a47-5d0e-9a53-6f7263682d70")

#: Trove classifier (after "License :: ") -> SPDX id; only ids the CycloneDX schema's SPDX list knows.
_CLASSIFIERS = {
    "OSI Approved :: MIT License": "MIT",
    "OSI Approved :: Apache Software License": "Apache-2.0",
    "OSI Approved :: ISC License (ISCL)": "ISC",
    "OSI Approved :: Python Software Foundation License": "PSF-2.0",
    "OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "OSI Approved :: The Unlicense (Unlicense)": "Unlicense",
    "OSI Approved :: Zope Public License": "ZPL-2.1",
    "OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
}
#: ``License:`` field values that are plainly an SPDX id or expression.
_SPDX_IDS = {
    "MIT",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "PSF-2.0",
    "MPL-2.0",
    "Unlicense",
    "0BSD",
    "LGPL-3.0-only",
    "Python-2.0",
}
_SPDX_ALIASES = {"Apache 2.0": "Apache-2.0", "Apache License 2.0": "Apache-2.0", "MIT License": "MIT", "BSD": None}


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lockfile(path: str) -> Dict[str, Dict[str, Any]]:
    """``wheel/sdist file name -> {name, version, sha256, url}`` from a Pants lockfile (JSON after ``//`` comments)."""
    with open(path, encoding="utf-8") as f:
        text = "".join(line for line in f if not line.lstrip().startswith("//"))
    lock = json.loads(text)
    out: Dict[str, Dict[str, Any]] = {}
    for resolve in lock.get("locked_resolves", []):
        for req in resolve.get("locked_requirements", []):
            for art in req.get("artifacts", []):
                if art.get("algorithm", "sha256") != "sha256":
                    continue
                filename = art["url"].rsplit("/", 1)[-1].split("#", 1)[0]
                out[filename] = {
                    "name": req["project_name"],
                    "version": req["version"],
                    "sha256": art["hash"],
                    "url": art["url"],
                }
    return out


def _license(meta) -> Optional[Dict[str, Any]]:
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return {"expression": expression}
    field = (meta.get("License") or "").strip()
    if field in _SPDX_IDS:
        return {"license": {"id": field}}
    if field in _SPDX_ALIASES and _SPDX_ALIASES[field]:
        return {"license": {"id": _SPDX_ALIASES[field]}}
    if re.fullmatch(r"[A-Za-z0-9.+-]+( (OR|AND) [A-Za-z0-9.+-]+)+", field) and all(
        part in _SPDX_IDS for part in re.split(r" (?:OR|AND) ", field)
    ):
        return {"expression": field}
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License :: "):
            spdx = _CLASSIFIERS.get(classifier[len("License :: ") :])
            if spdx:
                return {"license": {"id": spdx}}
    if field and "\n" not in field and len(field) <= 100:
        return {"license": {"name": field}}
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License :: ") and classifier != "License :: OSI Approved":
            return {"license": {"name": classifier.rsplit(" :: ", 1)[-1]}}
    return None


def pex_distributions(pex_path: str) -> List[Dict[str, Any]]:
    """The distributions bundled in a PEX: ``{filename, name, version, license}`` sorted by name and version."""
    out = []
    with zipfile.ZipFile(pex_path) as zf:
        info = json.loads(zf.read("PEX-INFO"))
        names = zf.namelist()
        for filename in sorted(info.get("distributions", {})):
            prefix = f".deps/{filename}/"
            metas = [n for n in names if n.startswith(prefix) and re.fullmatch(r"[^/]+\.dist-info/METADATA", n[len(prefix) :])]
            if len(metas) != 1:
                raise SystemExit(f"sbom: {pex_path}: cannot find the METADATA of {filename} (found {len(metas)})")
            meta = email.parser.BytesParser().parsebytes(zf.read(metas[0]), headersonly=False)
            out.append({"filename": filename, "name": meta["Name"], "version": meta["Version"], "license": _license(meta)})
    return sorted(out, key=lambda d: (normalize(d["name"]), d["version"]))


def build_sbom(
    pex_path: str,
    lock: Optional[Dict[str, Dict[str, Any]]],
    version: str,
    commit: str,
    source_date_epoch: int,
    platform: str,
    tool_license: str = "Apache-2.0",
) -> Dict[str, Any]:
    tool_ref = f"pkg:generic/orchestrator-pex@{version}"
    components = []
    for dist in pex_distributions(pex_path):
        purl = f"pkg:pypi/{normalize(dist['name'])}@{dist['version']}"
        comp: Dict[str, Any] = {
            "type": "library",
            "bom-ref": purl,
            "name": dist["name"],
            "version": dist["version"],
            "purl": purl,
            "properties": [{"name": "orchestrator-pex:wheel", "value": dist["filename"]}],
        }
        if lock is not None:
            pinned = lock.get(dist["filename"])
            if pinned is None or normalize(pinned["name"]) != normalize(dist["name"]) or pinned["version"] != dist["version"]:
                raise SystemExit(f"sbom: {dist['filename']} is in {pex_path} but not pinned by the lockfile")
            comp["hashes"] = [{"alg": "SHA-256", "content": pinned["sha256"]}]
            comp["externalReferences"] = [{"type": "distribution", "url": pinned["url"]}]
        if dist["license"]:
            comp["licenses"] = [dist["license"]]
        components.append(comp)
    timestamp = datetime.datetime.fromtimestamp(source_date_epoch, tz=datetime.timezone.utc)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(SBOM_NAMESPACE, f"{version}\0{commit}\0{platform}")),
        "version": 1,
        "metadata": {
            "timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "orchestrator-pex build-support/sbom.py", "version": version}]},
            "component": {
                "type": "application",
                "bom-ref": tool_ref,
                "name": "orchestrator-pex",
                "version": version,
                "purl": tool_ref,
                "licenses": [{"license": {"id": tool_license}}],
                "properties": [
                    {"name": "orchestrator-pex:commit", "value": commit},
                    {"name": "orchestrator-pex:platform", "value": platform},
                    {"name": "orchestrator-pex:pex", "value": os.path.basename(pex_path)},
                ],
            },
        },
        "components": components,
        "dependencies": [{"ref": tool_ref, "dependsOn": [c["bom-ref"] for c in components]}]
        + [{"ref": c["bom-ref"]} for c in components],
    }


def dumps(sbom: Dict[str, Any]) -> bytes:
    return (json.dumps(sbom, indent=2, sort_keys=True) + "\n").encode("utf-8")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pex", required=True)
    p.add_argument("--lockfile", help="Pants lockfile; without it no hashes are recorded")
    p.add_argument("--version", required=True)
    p.add_argument("--commit", required=True)
    p.add_argument("--source-date-epoch", type=int, required=True)
    p.add_argument("--platform", required=True)
    p.add_argument("--license", default="Apache-2.0")
    p.add_argument("-o", "--output")
    a = p.parse_args(argv)
    lock = read_lockfile(a.lockfile) if a.lockfile else None
    data = dumps(build_sbom(a.pex, lock, a.version, a.commit, a.source_date_epoch, a.platform, a.license))
    if a.output:
        with open(a.output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
