"""Reading a big journal: CPU of ``journal.load_run`` (what ``resume`` does first) and of ``history.document``
(``runs show``) over a journal of N events, for this tree and, with ``--against REF``, for git revision REF's
``orchestrator_pex`` (extracted with ``git archive``), interleaved round by round in fresh processes so both see the
same machine load.

The journal: one ``run_started``, then ``instance_started`` + ``instance_finished`` (a realistic succeeded record)
per instance, a ``warning`` every 1,000 instances, and 10 instances left started but unfinished (an interrupted run,
so ``runs show`` rebuilds the document from the journal instead of trusting ``results.json``).

    python bench/journal_read.py [--events 100000] [--rounds 5] [--against REF]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys
from orchestrator_pex import history, journal
run_dir = sys.argv[1]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0 = cpu()
state, problems = journal.load_run(run_dir)
t1 = cpu()
doc = history.document(run_dir)
t2 = cpu()
assert len(doc["instances"]) == len(state.records) + len(state.in_flight), "instances lost"
print(json.dumps({"load_run": t1 - t0, "document": t2 - t1, "instances": len(doc["instances"])}))
"""


def record(name: str) -> dict:
    return {"name": name, "agent": "claude", "status": "succeeded", "exit_code": 0,
            "started_at": "2026-11-29T10:00:00.000Z", "finished_at": "2026-11-29T10:00:03.250Z", "duration_s": 3.25,
            "attempts": 1, "tokens": {"input": 12, "output": 345, "cache_creation": 6789, "cache_read": 12345,
                                      "total": 19491},
            "cost_usd": 0.031234, "cost_source": "result", "reasoning_tokens": None, "model": "claude-sonnet-4-5",
            "models": ["claude-sonnet-4-5"], "tools": {"Bash": 2, "Read": 1}, "session_id": "0f1e2d3c-aaaa-bbbb",
            "session_name": None, "num_turns": 4, "result": "Done: the tests pass.", "error": None,
            "api_error_status": None, "agent_usage": {"input_tokens": 12, "output_tokens": 345},
            "skipped_lines": 0, "stdout_log": f"/srv/runs/r/logs/{name}.stdout",
            "stderr_log": f"/srv/runs/r/logs/{name}.stderr", "workspace": None, "tags": ["bench"], "description": None}


def write_journal(run_dir: str, events: int) -> None:
    os.makedirs(os.path.join(run_dir, "logs"), mode=0o700)
    head = {"schema_version": 1, "event": "run_started", "instances": events // 2, "run_id": "bench",
            "batch": "/srv/bench.toml", "started_at": "2026-11-29T10:00:00.000Z", "finished_at": None,
            "status": "running", "run_dir": run_dir, "orchestrator_version": "0", "orchestrator_pid": 1, "host": "x"}
    lines = [head]
    n = max(1, (events - 1) // 2)
    for i in range(n):
        name = f"noop-{i:06d}"
        lines.append({"schema_version": 1, "event": "instance_started", "name": name, "attempt": 1,
                      "at": "2026-11-29T10:00:00.000Z", "stdout_offset": 0, "agent": "claude"})
        if i >= n - 10:
            continue  # interrupted: started, never finished
        lines.append({"schema_version": 1, "event": "instance_finished", "name": name, "record": record(name)})
        if i % 1000 == 999:
            lines.append({"schema_version": 1, "event": "warning", "message": f"{name}: a warning"})
    with open(os.path.join(run_dir, "journal.jsonl"), "w", encoding="ascii") as f:
        for event in lines:
            f.write(json.dumps(event, separators=(",", ":")) + "\n")


def measure(root: str, run_dir: str) -> dict:
    env = {**os.environ, "PYTHONPATH": root, "CI": ""}
    out = subprocess.run([sys.executable, "-c", CHILD, run_dir], env=env, cwd=run_dir, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--against", metavar="REF", help="also measure orchestrator_pex of this git revision")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        write_journal(run_dir, a.events)
        roots = {"this tree": REPO}
        if a.against:
            old = os.path.join(tmp, "ref")
            os.makedirs(old)
            archive = subprocess.run(["git", "archive", a.against, "orchestrator_pex"], cwd=REPO, check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
            roots = {a.against: old, **roots}
        got: dict = {label: {"load_run": [], "document": []} for label in roots}
        for _ in range(a.rounds):
            for label, root in roots.items():
                m = measure(root, run_dir)
                for key in ("load_run", "document"):
                    got[label][key].append(m[key])
        size = os.path.getsize(os.path.join(run_dir, "journal.jsonl"))
    print(f"journal of {a.events} events ({size / 1e6:.1f} MB): CPU s, median / min of {a.rounds} rounds "
          f"(self CPU {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.1f} s)")
    for label, values in got.items():
        print(f"  {label:12s} load_run {statistics.median(values['load_run']):6.3f} / {min(values['load_run']):6.3f}"
              f"   runs show (document) {statistics.median(values['document']):6.3f} / "
              f"{min(values['document']):6.3f}")


if __name__ == "__main__":
    main()
