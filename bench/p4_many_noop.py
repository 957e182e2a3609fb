"""P4: 2,000 instances of a 3-line no-op agent, with logs, results and the run journal on.

Baseline beside it: ``xargs -P64`` running the same agent 2,000 times with output to a file. Prints the wall-time
ratio orchestrator / xargs (goal <= 1.0) and the orchestrator's own CPU per instance (goal <= 2 ms).

    python bench/p4_many_noop.py [--instances 2000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

from _common import ORCH, PY, REPO, env_with_repo, measure, median, table

NOOP = os.path.join(REPO, "bench", "noop_agent")


def xargs(n: int, tmp: str) -> float:
    names = os.path.join(tmp, "names.txt")
    with open(names, "w") as f:
        f.write("".join(f"noop-{i}\n" for i in range(n)))
    out = open(os.path.join(tmp, "xargs.out"), "wb")
    t0 = time.perf_counter()
    subprocess.run(["xargs", "-P64", "-n1", "-a", names, PY, NOOP], stdout=out, check=True)
    return time.perf_counter() - t0


def orchestrator(n: int, tmp: str, extra):
    batch = os.path.join(tmp, "p4.toml")
    with open(batch, "w") as f:
        for i in range(n):
            f.write(f'[[instances]]\nname = "noop-{i}"\nargv = ["{PY}", "{NOOP}"]\n')
    return measure([*ORCH, "run", batch, "--results-dir", os.path.join(tmp, "runs"), *extra],
                   env=env_with_repo(), cwd=REPO)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    walls, cpus, base, capped = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.rounds):
            base.append(xargs(a.instances, tmp))
            m = orchestrator(a.instances, tmp, [])
            assert m.returncode == 0, m.returncode
            walls.append(m.wall)
            cpus.append(m.cpu_s)
            m64 = orchestrator(a.instances, tmp, ["--concurrency", "64"])
            capped.append(m64.wall)
    n = a.instances
    print(f"P4: {n} no-op instances, {a.rounds} round(s), medians")
    print(table([
        ["", "wall s", "orchestrator CPU ms/instance"],
        ["xargs -P64 (output to a file)", f"{median(base):.2f}", "-"],
        ["orchestrator-pex run (default)", f"{median(walls):.2f}", f"{1000 * median(cpus) / n:.2f}"],
        ["orchestrator-pex run --concurrency 64", f"{median(capped):.2f}", "-"],
    ]))
    print(f"ratio orchestrator/xargs = {median(walls) / median(base):.2f} (goal <= 1.0); "
          f"CPU {1000 * median(cpus) / n:.2f} ms/instance (goal <= 2)")


if __name__ == "__main__":
    main()
