"""Shared helpers for the benchmarks: run a command, sample its peak RSS and CPU time, report ratios.

Every benchmark measures the orchestrator and its baseline side by side in one run, on this machine, and prints
``ratio = orchestrator / baseline`` (lower is better). Timings never appear in tests.

Every command runs with the bytecode cache an installed host has after its first start (:func:`env_with_repo`):
``PYTHONDONTWRITEBYTECODE``, which some CI environments set (this machine's does), is dropped and the cache is kept
under :data:`PYCACHE`, filled once before the first measurement, so no side compiles Python sources while it is
measured (the orchestrator's, or a Python agent's). Both sides of every comparison get the same environment.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
ORCH = [PY, "-m", "orchestrator_pex"]
#: the benchmarks' bytecode cache (``PYTHONPYCACHEPREFIX``), one per interpreter version
PYCACHE = os.path.join(os.path.expanduser("~"), ".cache", "orchestrator-pex",
                       f"bench-pycache-{sys.version_info[0]}.{sys.version_info[1]}")
_WARM: List[bool] = []


def env_with_repo(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment every benchmarked command runs in: this checkout on ``PYTHONPATH`` and the bytecode cache of
    an installed host (see the module docstring), filled on first use."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    if not _WARM:
        _WARM.append(True)
        subprocess.run([PY, "-c", "import compileall, sys, trio, attrs, cattrs, cattrs.gen, tomli_w, json, "
                        "subprocess, argparse\n"
                        "compileall.compile_dir(sys.argv[1], quiet=1)", os.path.join(REPO, "orchestrator_pex")],
                       env=env, check=True, stdout=subprocess.DEVNULL)
    env.update(extra or {})
    return env


def _status_kb(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_split(pid: int) -> Tuple[float, float]:
    """The process's own user and system CPU seconds so far (all its threads; not its children)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        tck = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tck, int(fields[12]) / tck
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def _cpu_s(pid: int) -> float:
    return sum(_cpu_split(pid))


class Measured:
    def __init__(self, wall: float, peak_rss_mb: float, cpu_s: float, returncode: int, cpu_user_s: float = 0.0,
                 cpu_sys_s: float = 0.0) -> None:
        self.wall, self.peak_rss_mb, self.cpu_s, self.returncode = wall, peak_rss_mb, cpu_s, returncode
        self.cpu_user_s, self.cpu_sys_s = cpu_user_s, cpu_sys_s  #: the split of cpu_s (user, system)


def measure(argv: Sequence[str], *, env=None, cwd=None, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL) -> Measured:
    """Run argv; wall time, and the process's own peak RSS (VmHWM) and CPU time, sampled until it exits."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=stdout, stderr=stderr)
    peak = [0, 0.0, 0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _status_kb(proc.pid, b"VmHWM:"))
            user, system = _cpu_split(proc.pid)
            if user + system >= peak[1] + peak[2]:  # CPU time only grows; 0 once the process is gone
                peak[1], peak[2] = user, system
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    t.join()
    return Measured(wall, peak[0] / 1024, peak[1] + peak[2], rc, cpu_user_s=peak[1], cpu_sys_s=peak[2])


def median(values: List[float]) -> float:
    return statistics.median(values)


def table(rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
