"""P1 ingest: 4 instances each streaming 20,000 tool-use messages (~25 MB each) through the orchestrator.

``--dialect claude`` (default) streams Claude Code's stream-json, ``codex`` Codex CLI's ``exec --json`` (tool
items, then ``turn.completed``), ``gemini`` Gemini CLI's stream-json (``tool_use`` events, then ``result``); all
from the simulated agent's ``flood`` scenario.

Baseline, run beside it: the same 4 producers, each piped into a Python loop calling ``json.loads`` per line
(4 pipelines at once). The orchestrator also writes the raw logs, does the accounting and keeps its status
report on. Prints wall time, orchestrator peak RSS and the ratio orchestrator / baseline (goal <= 1.1, RSS <= 40 MB).

    python bench/p1_ingest.py [--rounds 3] [--messages 20000] [--line-bytes 1250] [--dialect claude|codex|gemini]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time

from _common import ORCH, PY, REPO, env_with_repo, measure, median, table

CONSUMER = "import sys, json\nfor line in sys.stdin.buffer:\n    json.loads(line)\n"


DIALECT = "claude"
TOOL = {"claude": "Bash", "codex": "command_execution", "gemini": "run_shell_command"}


def producer_argv():
    if DIALECT == "codex":
        return [PY, "-m", "orchestrator_pex", "agent-sim", "--dialect", "codex", "exec", "--json", "--", "flood"]
    if DIALECT == "gemini":
        return [PY, "-m", "orchestrator_pex", "agent-sim", "--dialect", "gemini", "-p", "flood", "--output-format",
                "stream-json"]
    return [PY, "-m", "orchestrator_pex", "agent-sim", "-p", "flood", "--output-format", "stream-json", "--verbose"]


def baseline(n: int, env) -> float:
    t0 = time.perf_counter()
    pairs = []
    for _ in range(n):
        prod = subprocess.Popen(producer_argv(), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        cons = subprocess.Popen([PY, "-c", CONSUMER], stdin=prod.stdout, stdout=subprocess.DEVNULL)
        prod.stdout.close()
        pairs.append((prod, cons))
    for prod, cons in pairs:
        prod.wait()
        if cons.wait() != 0:
            raise SystemExit("baseline consumer failed")
    return time.perf_counter() - t0


def orchestrator(n: int, env, tmp: str):
    batch = os.path.join(tmp, "p1.toml")
    with open(batch, "w") as f:
        f.write(f'claude = "@agent-sim"\ncodex = "@agent-sim"\ngemini = "@agent-sim"\nagent = "{DIALECT}"\n'
                f'concurrency = {n}\n')
        for i in range(n):
            f.write(f'[[instances]]\nname = "flood-{i}"\nprompt = "flood"\n')
    results = os.path.join(tmp, "runs")
    m = measure([*ORCH, "run", batch, "--results-dir", results, "--json"], env=env, cwd=REPO,
                stdout=open(os.path.join(tmp, "doc.json"), "w"))
    doc = json.load(open(os.path.join(tmp, "doc.json")))
    return m, doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--line-bytes", type=int, default=1250)
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--dialect", choices=sorted(TOOL), default="claude")
    a = ap.parse_args()
    global DIALECT
    DIALECT = a.dialect
    env = env_with_repo({"AGENT_SIM_SCENARIO": "flood", "AGENT_SIM_MESSAGES": str(a.messages),
                         "AGENT_SIM_LINE_BYTES": str(a.line_bytes)})
    base, orch, rss = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.rounds):
            base.append(baseline(a.instances, env))
            m, doc = orchestrator(a.instances, env, tmp)
            assert m.returncode == 0, m.returncode
            for r in doc["instances"]:
                assert r["tools"].get(TOOL[DIALECT]) == a.messages, r["tools"]
                assert r["status"] == "succeeded", r
            orch.append(m.wall)
            rss.append(m.peak_rss_mb)
    mb = a.instances * a.messages * a.line_bytes / 1e6
    print(f"P1 ingest ({DIALECT}): {a.instances} x {a.messages} tool-use messages (~{mb:.0f} MB), "
          f"{a.rounds} rounds, medians")
    print(table([
        ["", "wall s", "peak RSS MB"],
        ["baseline (producer | json.loads loop) x4", f"{median(base):.2f}", "-"],
        ["orchestrator-pex run", f"{median(orch):.2f}", f"{max(rss):.1f}"],
    ]))
    print(f"ratio orchestrator/baseline = {median(orch) / median(base):.2f} (goal <= 1.10); "
          f"peak RSS {max(rss):.1f} MB (goal <= 40)")


if __name__ == "__main__":
    main()
