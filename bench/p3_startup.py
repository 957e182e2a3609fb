"""P3: start-up in a virtualenv — ``orchestrator-pex --version`` and ``run --dry-run`` of a 3-instance batch.

Baseline beside them: ``python -c pass`` (the interpreter's own start-up). Medians of N runs; goals: --version
<= 60 ms, dry-run <= 250 ms.

    python bench/p3_startup.py [--runs 21]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

from _common import ORCH, PY, REPO, env_with_repo, median, table


def timed(argv, env, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - t0)
    return median(samples) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=21)
    a = ap.parse_args()
    env = env_with_repo()
    with tempfile.TemporaryDirectory() as tmp:
        batch = os.path.join(tmp, "three.toml")
        with open(batch, "w") as f:
            f.write('claude = "@agent-sim"\n[defaults]\nmodel = "claude-sonnet-4-5"\n')
            for i in range(3):
                f.write(f'[[instances]]\nname = "i{i}"\nprompt = "task {i}"\nenv = {{ X = "{i}" }}\n')
        base = timed([PY, "-c", "pass"], env, a.runs)
        version = timed([*ORCH, "--version"], env, a.runs)
        dry = timed([*ORCH, "run", batch, "--dry-run"], env, a.runs)
    print(f"P3 start-up, median of {a.runs} runs")
    if env.get("PYTHONDONTWRITEBYTECODE"):  # no __pycache__: every start compiles the package's imported sources
        print("PYTHONDONTWRITEBYTECODE is set: each start compiles orchestrator_pex's sources (no __pycache__)")
    print(table([
        ["command", "ms", "ratio to python -c pass", "goal ms"],
        ["python -c pass", f"{base:.0f}", "1.00", "-"],
        ["orchestrator-pex --version", f"{version:.0f}", f"{version / base:.2f}", "60"],
        ["orchestrator-pex run --dry-run (3 instances)", f"{dry:.0f}", f"{dry / base:.2f}", "250"],
    ]))


if __name__ == "__main__":
    main()
