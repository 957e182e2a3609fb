#!/usr/bin/env python3
"""Start-up time of the PEX per execution mode: cold (empty PEX_ROOT) and warm ``--version``; prints a table.

    python3 bench/startup.py [--python /path/to/python3] [--cold-runs 5] [--warm-runs 20]

Variants, all holding the same code and locked dists for linux_x86_64 / CPython 3.9-3.13:
  dist            the release PEX from `scripts/pants package ::` (its execution_mode: venv)
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
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

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


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(pex: str, pex_root: str, path: str) -> tuple:
    """(wall seconds, CPU seconds incl. every process it waited for) of one `pex --version`."""
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "PEX_ROOT": pex_root}
    cpu0, start = cpu_children(), time.perf_counter()
    proc = subprocess.run([pex, "--version"], env=env, capture_output=True)
    elapsed, cpu = time.perf_counter() - start, cpu_children() - cpu0
    if proc.returncode != 0 or not proc.stdout.startswith(b"orchestrator-pex "):
        raise SystemExit(f"{pex} --version failed: {proc.stderr.decode()[-2000:]}")
    return elapsed, cpu


def measure(pex: str, path: str, cold_runs: int, warm_runs: int, work: str) -> tuple:
    cold = []
    for _ in range(cold_runs):
        root = tempfile.mkdtemp(prefix="cold.", dir=work)
        cold.append(run_once(pex, root, path))
        shutil.rmtree(root)
    root = tempfile.mkdtemp(prefix="warm.", dir=work)
    run_once(pex, root, path)
    warm = [run_once(pex, root, path) for _ in range(warm_runs)]
    shutil.rmtree(root)
    med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731 - a one-line helper local to the table below
    return med(cold, 0), med(cold, 1), med(warm, 0), med(warm, 1)


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
        with zipfile.ZipFile(dist) as z:
            dist_mode = "venv" if json.loads(z.read("PEX-INFO")).get("venv") else "zipapp"
        pexes = {f"dist ({dist_mode})": dist, **build_variants(work)}
        # Lower bound: the interpreter alone.
        start = time.perf_counter()
        for _ in range(args.warm_runs):
            subprocess.run([args.python, "-c", "pass"], check=True)
        bare = (time.perf_counter() - start) / args.warm_runs
        print(f"\nCPython {py_version} ({args.python}); `python -c pass` = {bare * 1000:.0f} ms")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times suffer under load; "
              "CPU = user+sys of the process tree)")
        print(f"| {'mode':<14} | {'size':>7} | {'cold wall':>9} | {'cold CPU':>8} "
              f"| {'warm wall':>9} | {'warm CPU':>8} |")
        print(f"|{'-' * 16}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 11}|{'-' * 10}|")
        for name, pex in pexes.items():
            cw, cc, ww, wc = (v * 1000 for v in measure(pex, path, args.cold_runs, args.warm_runs, work))
            size = os.path.getsize(pex) / 1e6
            print(f"| {name:<14} | {size:>5.2f}MB | {cw:>6.0f} ms | {cc:>5.0f} ms | {ww:>6.0f} ms | {wc:>5.0f} ms |",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
