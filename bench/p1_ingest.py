"""P1 ingest: 4 instances each streaming 20,000 tool-use messages through the orchestrator, for three producers.

Producers: ``flood`` (the project's agent-sim, Claude Code's compact layout), ``compact`` and ``reordered``
(:file:`bench/reference_producer.py`, a plain script the project did not write for its own accounting: the events
of real Claude Code 2.1.330's ``tool-use-allowed`` transcript repeated, as the CLI printed them, or re-serialized
with sorted keys and a space after ``:`` and ``,``). Baseline, run beside each: the same 4 producers, each piped
into a Python loop calling ``json.loads`` per line (4 pipelines at once). The orchestrator also writes the raw logs,
does the accounting and keeps its status report on. Prints wall times, the orchestrator's own peak RSS (VmHWM of
the orchestrator process, not its children), the ratio orchestrator / baseline per producer (goal <= 1.10,
RSS <= 40 MB) and the machine's load. CPU seconds are printed beside the wall times (less noisy on a shared
machine): the orchestrator's own, and each side's total (producers + consumers, producers + orchestrator, from
``RUSAGE_CHILDREN``).

``--dialect`` chooses what the ``flood`` producer speaks: ``claude`` (default) Claude Code's stream-json, ``codex``
Codex CLI's ``exec --json`` (tool items, then ``turn.completed``), ``gemini`` Gemini CLI's stream-json
(``tool_use`` events, then ``result``); the reference producers always print Claude Code's events.

    python bench/p1_ingest.py [--rounds 3] [--messages 20000] [--producers flood compact reordered]
                              [--dialect claude|codex|gemini]
    python bench/p1_ingest.py --micro [--messages 20000]

``--micro``: no processes; in this one process, the CPU seconds of Claude's reader (``Accounting.feed`` per line)
over the reference events (``4 × --messages`` lines) in each layout, side by side with a ``json.loads`` loop over
the same lines (best of 3).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
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


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def micro(messages: int) -> None:
    """Reader CPU per layout vs json.loads, in this process (see the module docstring)."""
    sys.path.insert(0, REPO)
    from orchestrator_pex.accounting import Accounting

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    rows = [["layout", "lines", "json.loads s", "reader s", "reader / json.loads"]]
    for layout in ("compact", "reordered"):
        data = subprocess.run([PY, PRODUCER, layout, str(messages)], check=True, stdout=subprocess.PIPE).stdout
        lines = data.split(b"\n")
        best_loads = best_feed = float("inf")
        for _ in range(3):
            t = cpu()
            for line in lines:
                if line:
                    json.loads(line)
            best_loads = min(best_loads, cpu() - t)
            acct = Accounting()
            feed = acct.feed
            t = cpu()
            for line in lines:
                feed(line)
            best_feed = min(best_feed, cpu() - t)
            assert acct.tools == {"Bash": messages} and acct.bad_lines == 0, (acct.tools, acct.bad_lines)
        rows.append([layout, str(len(lines)), f"{best_loads:.3f}", f"{best_feed:.3f}",
                     f"{best_feed / best_loads:.2f}"])
    print(f"P1 micro: Claude reader CPU vs json.loads per line, reference events x {messages}, best of 3")
    print(table(rows))
    print(f"load average (1, 5, 15 min): {load()}")


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
    ap.add_argument("--micro", action="store_true", help="reader CPU per layout vs json.loads, no processes")
    a = ap.parse_args()
    if a.micro:
        micro(a.messages)
        return
    global DIALECT
    DIALECT = a.dialect
    env = env_with_repo({"AGENT_SIM_SCENARIO": "flood", "AGENT_SIM_MESSAGES": str(a.messages),
                         "AGENT_SIM_LINE_BYTES": str(a.line_bytes)})
    rows = [["producer", "baseline s", "orchestrator s", "peak RSS MB", "ratio", "goal", "orch CPU s",
             "CPU base / orch side", "CPU ratio"]]
    loads = [load()]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in a.producers:
            argv = producer_argv(kind, a.messages)
            base, orch, rss, own, base_cpu, orch_cpu = [], [], [], [], [], []
            for _ in range(a.rounds):
                c0 = children_cpu()
                base.append(baseline(argv, a.instances, env))
                c1 = children_cpu()
                m, doc = orchestrator(kind, argv, a.instances, env, tmp)
                c2 = children_cpu()
                base_cpu.append(c1 - c0)
                orch_cpu.append(c2 - c1)
                own.append(m.cpu_s)
                assert m.returncode == 0, m.returncode
                tool = TOOL[DIALECT] if kind == "flood" else "Bash"
                for r in doc["instances"]:
                    assert r["tools"].get(tool) == a.messages, r["tools"]
                    assert r["status"] == "succeeded", r
                orch.append(m.wall)
                rss.append(m.peak_rss_mb)
            label = f"{kind} ({DIALECT})" if kind == "flood" else kind
            rows.append([label, f"{median(base):.2f}", f"{median(orch):.2f}", f"{max(rss):.1f}",
                         f"{median(orch) / median(base):.2f}", "<= 1.10, <= 40 MB", f"{median(own):.2f}",
                         f"{median(base_cpu):.2f} / {median(orch_cpu):.2f}",
                         f"{median(orch_cpu) / median(base_cpu):.2f}"])
            loads.append(load())
    print(f"P1 ingest: {a.instances} producers x {a.messages} tool-use messages, {a.rounds} round(s), medians "
          f"(baseline: producer | json.loads loop, x{a.instances} at once)")
    print(table(rows))
    print(f"load average (1, 5, 15 min) before and after each producer: {' | '.join(loads)}")


if __name__ == "__main__":
    main()
