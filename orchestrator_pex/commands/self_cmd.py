"""``orchestrator-pex self verify [--bundle DIR] [--trust FILE]``: is the running PEX the one the release signed?

Checks, in order, and stops at the first failure (exit 1, one line saying what failed):

1. ``DIR/SHA256SUMS.sig`` is a valid OpenSSH signature (namespace ``orchestrator-pex``) over ``DIR/SHA256SUMS`` by a
   key listed in the allowed-signers file ``FILE`` (``ssh-keygen -Y verify``; each principal in the file is tried);
2. the running PEX file (``$PEX``, which pex sets) has the SHA-256 that ``SHA256SUMS`` lists for its file name;
3. the SBOM ``SHA256SUMS`` lists beside it, if any, is the one whose digest the release embedded in the PEX.

``DIR`` defaults to the folder holding the running PEX (``install.sh`` copies ``SHA256SUMS``, its signature and the
trusted ``allowed_signers`` there); ``FILE`` defaults to ``$ORCHESTRATOR_PEX_TRUST``, then ``DIR/allowed_signers``.
Exit 2 when there is nothing to verify (not running from a PEX, no bundle, no ``ssh-keygen``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
from typing import Dict, List, Optional

from orchestrator_pex.errors import EXIT_OK, UsageError, VerifyError

NAMESPACE = "orchestrator-pex"
SUMS = "SHA256SUMS"
SIG = "SHA256SUMS.sig"
TRUST_ENV = "ORCHESTRATOR_PEX_TRUST"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="self_command", metavar="ACTION")
    verify = sub.add_parser("verify", help="check the running PEX against a release's SHA256SUMS and signature")
    verify.add_argument("--bundle", metavar="DIR", help="release folder with SHA256SUMS and SHA256SUMS.sig")
    verify.add_argument("--trust", metavar="FILE", help="allowed_signers file naming the release key(s)")
    verify.add_argument("--pex", metavar="FILE", help=argparse.SUPPRESS)  # verify another file (tests)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_sums(text: str) -> Dict[str, str]:
    """``file name -> sha256`` from ``sha256sum`` output (text or ``*binary`` mode); malformed lines are errors."""
    out: Dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not match or "/" in match.group(2) or match.group(2) in out:
            raise VerifyError(SUMS, f"line {n}", "malformed")
        out[match.group(2)] = match.group(1)
    return out


def principals(allowed_signers: str) -> List[str]:
    """The principals named in an allowed_signers file (first field of each entry, comma separated)."""
    names: List[str] = []
    with open(allowed_signers, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                for name in line.split()[0].split(","):
                    if name and name not in names:
                        names.append(name)
    return names


def verify_signature(sums_path: str, sig_path: str, allowed_signers: str) -> str:
    """The principal whose key signed ``sums_path``; :class:`VerifyError` when no trusted key did."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise UsageError("ssh-keygen", "", "not found on PATH: OpenSSH >= 8.1 is needed to verify the signature")
    with open(sums_path, "rb") as f:
        data = f.read()
    for principal in principals(allowed_signers):
        argv = [keygen, "-Y", "verify", "-f", allowed_signers, "-I", principal, "-n", NAMESPACE, "-s", sig_path]
        proc = subprocess.run(argv, input=data, capture_output=True)
        if proc.returncode == 0:
            return principal
    raise VerifyError(sig_path, "", f"not a valid signature of {sums_path} by a key in {allowed_signers}")


def verify(pex_path: str, bundle: str, trust: str) -> str:
    """Verify ``pex_path`` against ``bundle``; returns a one-line success message or raises :class:`VerifyError`
    (:class:`UsageError` when there is no ``ssh-keygen`` to verify with)."""
    sums_path, sig_path = os.path.join(bundle, SUMS), os.path.join(bundle, SIG)
    for path in (sums_path, sig_path, trust):
        if not os.path.isfile(path):
            raise VerifyError(path, "", "missing")
    principal = verify_signature(sums_path, sig_path, trust)
    with open(sums_path, encoding="utf-8", errors="replace") as f:
        sums = parse_sums(f.read())
    actual = sha256_file(pex_path)
    name = os.path.basename(os.path.realpath(pex_path))
    expected = sums.get(name)
    if expected is None:
        raise VerifyError(sums_path, "", f"{name} is not listed")
    if expected != actual:
        raise VerifyError(pex_path, "", f"sha256 {actual} does not match {expected} listed in {sums_path}")
    sbom_name = name[: -len(".pex")] + ".cdx.json" if name.endswith(".pex") else None
    embedded = _embedded_sbom_digest(pex_path, name)
    if embedded and sbom_name in sums and sums[sbom_name] != embedded:
        raise VerifyError(sums_path, sbom_name, f"not the SBOM {name} was built with")
    return f"verified: {pex_path} (sha256 {actual}) is {name} of {sums_path}, signed by {principal}"


def _embedded_sbom_digest(pex_path: str, name: str) -> Optional[str]:
    """The SBOM digest the release embedded for this PEX's platform (only when verifying the running PEX)."""
    running = os.environ.get("PEX")
    if not running or os.path.realpath(running) != os.path.realpath(pex_path):
        return None
    from orchestrator_pex.commands import version_cmd

    digests = version_cmd.build_info().get("sbom_sha256") or {}
    tag = version_cmd.pex_platform_tag(pex_path)
    return digests.get(tag) if isinstance(digests, dict) and tag else None


def main(args: argparse.Namespace) -> int:
    """Exit 0 verified, 1 (:class:`VerifyError`) a check failed, 2 (:class:`UsageError`) nothing to verify."""
    from orchestrator_pex.request import SelfRequest

    request = SelfRequest.from_args(args)
    if request.action != "verify":
        raise UsageError("self", "", "expected an action: verify")
    pex = request.pex or os.environ.get("PEX")
    if not pex or not os.path.isfile(pex):
        raise UsageError("self verify", "", "not running from a PEX file ($PEX is not set)")
    bundle = request.bundle or os.path.dirname(os.path.realpath(pex))
    trust = request.trust or os.environ.get(TRUST_ENV) or os.path.join(bundle, "allowed_signers")
    try:
        message = verify(pex, bundle, trust)
    except (VerifyError, OSError) as exc:
        raise VerifyError("self verify", "", f"FAILED: {exc}") from None
    print(message)
    return EXIT_OK
