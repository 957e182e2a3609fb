"""P3: start-up in a virtualenv — ``orchestrator-pex --version`` and ``run --dry-run`` of a 3-instance batch.

Baseline beside them: ``python -c pass`` (the interpreter's own start-up). Medians of N runs; goals: --version
<= 60 ms, dry-run <= 250 ms. Each is measured twice, with the bytecode cache a host has after the first start (the
goal applies to these) and with nothing compiled yet (``PYTHONDONTWRITEBYTECODE=1`` and an empty cache: every
start compiles the sources it imports, this package's and its dependencies', as the first start after an install
does). Both use their own ``PYTHONPYCACHEPREFIX`` under a temporary folder, so the checkout's ``__pycache__``
folders neither help nor change, and the result is the same whether the environment sets
``PYTHONDONTWRITEBYTECODE`` or not.

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
        cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        uncached = dict(env, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=os.path.join(tmp, "none"))
        commands = [("python -c pass", [PY, "-c", "pass"], "-"),
                    ("orchestrator-pex --version", [*ORCH, "--version"], "60"),
                    ("orchestrator-pex run --dry-run (3 instances)", [*ORCH, "run", batch, "--dry-run"], "250")]
        for _, argv, _ in commands:  # fill the cache
            timed(argv, cached, 2)
        rows = [["command", "cached ms", "ratio to python -c pass", "goal ms", "nothing compiled ms", "ratio"]]
        base = base_uncached = 0.0
        for name, argv, goal in commands:  # interleaved: cached and uncached measured at the same moment
            ms, ms_uncached = timed(argv, cached, a.runs), timed(argv, uncached, a.runs)
            if not base:
                base, base_uncached = ms, ms_uncached
            rows.append([name, f"{ms:.0f}", f"{ms / base:.2f}", goal, f"{ms_uncached:.0f}",
                         f"{ms_uncached / base_uncached:.2f}"])
    print(f"P3 start-up, median of {a.runs} runs (goals: with the bytecode cache a host has after its first start)")
    print(table(rows))


if __name__ == "__main__":
    main()
