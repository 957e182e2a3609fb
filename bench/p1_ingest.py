"""P1 ingest: 4 instances each streaming 20,000 tool-use messages through the orchestrator, for three producers.

Producers: ``flood`` (the project's agent-sim, Claude Code's compact layout), ``compact`` and ``reordered``
(:file:`bench/reference_producer.py`, a plain script the project did not write for its own accounting: the events
of real Claude Code 2.1.330's ``tool-use-allowed`` transcript repeated, as the CLI printed them, or re-serialized
with sorted keys and a space after ``:`` and ``,``). Baseline, run beside each: the same 4 producers, each piped
into a Python loop calling ``json.loads`` per line (4 pipelines at once). The orchestrator also writes the raw logs,
does the accounting and keeps its status report on. Prints wall times, the orchestrator's own peak RSS (VmHWM of
the orchestrator process, not its children), the ratio orchestrator / baseline per producer (goal <= 1.10,
RSS <= 40 MB) and the machine's load.

``--dialect`` chooses what the ``flood`` producer speaks: ``claude`` (default) Claude Code's stream-json, ``codex``
Codex CLI's ``exec --json`` (tool items, then ``turn.completed``), ``gemini`` Gemini CLI's stream-json
(``tool_use`` events, then ``result``); the reference producers always print Claude Code's events.

    python bench/p1_ingest.py [--rounds 3] [--messages 20000] [--producers flood compact reordered]
                              [--dialect claude|codex|gemini]
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
PRODUCER = os.path.join(REPO, "bench", "reference_producer.py")


DIALECT = "claude"
TOOL = {"claude": "Bash", "codex": "command_execution", "gemini": "run_shell_command"}


def producer_argv(kind: str, messages: int):
    if kind != "flood":
        return [PY, PRODUCER, kind, str(messages)]  # one tool use per repetition
    if DIALECT == "codex":
        return [PY, "-m", "orchestrator_pex", "agent-sim", "--dialect", "codex", "exec", "--json", "--", "flood"]
    if DIALECT == "gemini":
        return [PY, "-m", "orchestrator_pex", "agent-sim", "--dialect", "gemini", "-p", "flood", "--output-format",
                "stream-json"]
    return [PY, "-m", "orchestrator_pex", "agent-sim", "-p", "flood", "--output-format", "stream-json", "--verbose"]


def baseline(argv, n: int, env) -> float:
    t0 = time.perf_counter()
    pairs = []
    for _ in range(n):
        prod = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        cons = subprocess.Popen([PY, "-c", CONSUMER], stdin=prod.stdout, stdout=subprocess.DEVNULL)
        prod.stdout.close()
        pairs.append((prod, cons))
    for prod, cons in pairs:
        prod.wait()
        if cons.wait() != 0:
            raise SystemExit("baseline consumer failed")
    return time.perf_counter() - t0


def orchestrator(kind: str, argv, n: int, env, tmp: str):
    batch = os.path.join(tmp, f"p1-{kind}.toml")
    with open(batch, "w") as f:
        if kind == "flood":
            f.write(f'claude = "@agent-sim"\ncodex = "@agent-sim"\ngemini = "@agent-sim"\nagent = "{DIALECT}"\n'
                    f'concurrency = {n}\n')
            for i in range(n):
                f.write(f'[[instances]]\nname = "flood-{i}"\nprompt = "flood"\n')
        else:
            f.write(f"concurrency = {n}\n")
            for i in range(n):
                f.write(f"[[instances]]\nname = \"{kind}-{i}\"\nargv = {json.dumps(argv)}\n")
    results = os.path.join(tmp, "runs")
    out = os.path.join(tmp, "doc.json")
    with open(out, "w") as f:
        m = measure([*ORCH, "run", batch, "--results-dir", results, "--json"], env=env, cwd=REPO, stdout=f)
    with open(out) as f:
        doc = json.load(f)
    return m, doc


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--line-bytes", type=int, default=1250)
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--producers", nargs="+", default=["flood", "compact", "reordered"])
    ap.add_argument("--dialect", choices=sorted(TOOL), default="claude")
    a = ap.parse_args()
    global DIALECT
    DIALECT = a.dialect
    env = env_with_repo({"AGENT_SIM_SCENARIO": "flood", "AGENT_SIM_MESSAGES": str(a.messages),
                         "AGENT_SIM_LINE_BYTES": str(a.line_bytes)})
    rows = [["producer", "baseline s", "orchestrator s", "peak RSS MB", "ratio", "goal"]]
    loads = [load()]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in a.producers:
            argv = producer_argv(kind, a.messages)
            base, orch, rss = [], [], []
            for _ in range(a.rounds):
                base.append(baseline(argv, a.instances, env))
                m, doc = orchestrator(kind, argv, a.instances, env, tmp)
                assert m.returncode == 0, m.returncode
                tool = TOOL[DIALECT] if kind == "flood" else "Bash"
                for r in doc["instances"]:
                    assert r["tools"].get(tool) == a.messages, r["tools"]
                    assert r["status"] == "succeeded", r
                orch.append(m.wall)
                rss.append(m.peak_rss_mb)
            label = f"{kind} ({DIALECT})" if kind == "flood" else kind
            rows.append([label, f"{median(base):.2f}", f"{median(orch):.2f}", f"{max(rss):.1f}",
                         f"{median(orch) / median(base):.2f}", "<= 1.10, <= 40 MB"])
            loads.append(load())
    print(f"P1 ingest: {a.instances} producers x {a.messages} tool-use messages, {a.rounds} round(s), medians "
          f"(baseline: producer | json.loads loop, x{a.instances} at once)")
    print(table(rows))
    print(f"load average (1, 5, 15 min) before and after each producer: {' | '.join(loads)}")


if __name__ == "__main__":
    main()
