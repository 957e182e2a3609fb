#!/usr/bin/env python3
"""Start-up time of the PEX per execution mode: cold (empty PEX_ROOT) and warm ``--version``; prints a table.

    python3 bench/startup.py [--python /path/to/python3] [--cold-runs 5] [--warm-runs 20]

Variants, all holding the same code and locked dists for linux_x86_64 / CPython 3.9-3.13:
  dist            the release PEX from `scripts/pants package ::` (zipapp)
  zipapp          pex --layout zipapp (default mode), built directly with the pinned pex tool
  zipapp+sh-boot  the same with --sh-boot (a /bin/sh preamble that execs a cached interpreter)
  venv            pex --venv (first run installs a virtualenv into PEX_ROOT)
  venv+sh-boot    --venv --sh-boot (warm runs exec the venv's python directly, skipping the PEX bootstrap)
Pants 2.17's pex_binary has no sh_boot field, hence the direct builds (same pex, lock and complete platforms).

Each PEX is run as an executable (shebang `/usr/bin/env python3`) with PATH starting at the chosen python's bin
directory. Cold: a fresh empty PEX_ROOT per run. Warm: the same PEX_ROOT after one priming run. Reports medians.
Goal: warm <= 200 ms, cold <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("ORCHESTRATOR_PEX_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "orchestrator-pex")
PEX_TOOL = os.path.join(ROOT, "build-support", "bin", "pex-v2.1.148")
PANTS_PYTHON = os.path.join(CACHE, "pants-2.17.1", "bin", "python")
PYTHONS = ["39", "310", "311", "312", "313"]
VARIANTS = {
    "zipapp": [],
    "zipapp+sh-boot": ["--sh-boot"],
    "venv": ["--venv"],
    "venv+sh-boot": ["--venv", "--sh-boot"],
}


def version() -> str:
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        return re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M).group(1)


def ensure_dist() -> str:
    path = os.path.join(ROOT, "dist", f"orchestrator-pex-{version()}-linux_x86_64.pex")
    if not os.path.exists(path) or not os.path.exists(PEX_TOOL):
        subprocess.run([os.path.join(ROOT, "scripts", "pants"), "package", "orchestrator_pex:pex-linux_x86_64"],
                       cwd=ROOT, check=True)
    return path


def build_variants(work: str) -> dict:
    """The direct pex builds, from a copy of exactly what the release PEX bundles."""
    src = os.path.join(work, "src")
    shutil.copytree(os.path.join(ROOT, "orchestrator_pex"), os.path.join(src, "orchestrator_pex"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "BUILD"))
    shutil.copy2(os.path.join(ROOT, "pyproject.toml"), src)
    lock = os.path.join(work, "python-default.lock")
    with open(os.path.join(ROOT, "lockfiles", "python-default.lock"), encoding="utf-8") as f:
        body = "".join(line for line in f if not line.startswith("//"))
    with open(lock, "w", encoding="utf-8") as f:
        f.write(body)
    requirements = json.loads(body)["requirements"]
    built = {}
    for name, flags in VARIANTS.items():
        out = os.path.join(work, f"orchestrator-pex-{name}.pex")
        argv = [PANTS_PYTHON, PEX_TOOL, "--lock", lock, *requirements, "-D", src,
                "--entry-point", "orchestrator_pex.cli:main", "--python-shebang", "/usr/bin/env python3",
                "--no-strip-pex-env", "-o", out, *flags]
        for py in PYTHONS:
            argv += ["--complete-platform",
                     os.path.join(ROOT, "build-support", "complete_platforms", f"linux_x86_64-cp{py}.json")]
        subprocess.run(argv, check=True, env=dict(os.environ, PEX_ROOT=os.path.join(CACHE, "bench-pex-root")))
        built[name] = out
    return built


def run_once(pex: str, pex_root: str, path: str) -> float:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "PEX_ROOT": pex_root}
    start = time.perf_counter()
    proc = subprocess.run([pex, "--version"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or not proc.stdout.startswith(b"orchestrator-pex "):
        raise SystemExit(f"{pex} --version failed: {proc.stderr.decode()[-2000:]}")
    return elapsed


def measure(pex: str, path: str, cold_runs: int, warm_runs: int, work: str) -> tuple:
    cold = []
    for i in range(cold_runs):
        root = tempfile.mkdtemp(prefix="cold.", dir=work)
        cold.append(run_once(pex, root, path))
        shutil.rmtree(root)
    root = tempfile.mkdtemp(prefix="warm.", dir=work)
    run_once(pex, root, path)
    warm = [run_once(pex, root, path) for _ in range(warm_runs)]
    shutil.rmtree(root)
    return statistics.median(cold), statistics.median(warm), max(warm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter the PEX runs with (first on PATH)")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--warm-runs", type=int, default=20)
    args = parser.parse_args()
    path = os.pathsep.join([os.path.dirname(os.path.abspath(args.python)), "/usr/bin", "/bin"])
    py_version = subprocess.run([args.python, "-c", "import platform; print(platform.python_version())"],
                                check=True, capture_output=True, text=True).stdout.strip()
    dist = ensure_dist()
    work = tempfile.mkdtemp(prefix="orchestrator-pex-bench.")
    try:
        pexes = {"dist": dist, **build_variants(work)}
        # Lower bound: the interpreter alone.
        start = time.perf_counter()
        for _ in range(args.warm_runs):
            subprocess.run([args.python, "-c", "pass"], check=True)
        bare = (time.perf_counter() - start) / args.warm_runs
        print(f"\nCPython {py_version} ({args.python}); `python -c pass` = {bare * 1000:.0f} ms")
        print(f"{'mode':<16} {'size':>8} {'cold (median)':>14} {'warm (median)':>14} {'warm (max)':>11}")
        for name, pex in pexes.items():
            cold, warm, worst = measure(pex, path, args.cold_runs, args.warm_runs, work)
            size = os.path.getsize(pex) / 1e6
            print(f"{name:<16} {size:>6.2f}MB {cold * 1000:>11.0f} ms {warm * 1000:>11.0f} ms {worst * 1000:>8.0f} ms",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
