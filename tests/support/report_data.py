"""Synthetic run directories for the report and metrics tests: a results document and its journal, no agents run.

:func:`make_run` writes ``RUN/results.json``, ``RUN/journal.jsonl`` and ``RUN/logs/`` for ``n`` instances with a
deterministic mix of statuses, models, agents, tools and retries; instance 7 (when there is one) has a result that
tries to inject ``<script>`` and markup. Both files match the project's schemas (``schemas/``).
"""

from __future__ import annotations

import os
import random
from typing import Any, Dict, List

from orchestrator_pex import journal, results

HOSTILE = '<script>document.title="pwned"</script><img src="http://127.0.0.1:9/x" onerror="alert(1)"> & </td>'
STATUSES = ["succeeded"] * 12 + ["failed", "timed-out", "api-error", "cancelled", "budget-stopped", "stalled"]
MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
TOOLS = ["Bash", "Read", "Edit", "Grep", "WebFetch"]


def make_run(run_dir: str, n: int, seed: int = 15, t0: float = 1_790_000_000.0) -> Dict[str, Any]:
    rng = random.Random(seed)
    os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
    records: List[Dict[str, Any]] = []
    events: List[Any] = []  # (time, order, event)
    lanes = [t0] * 16
    for i in range(n):
        name = f"inst-{i:05d}"
        lane = i % len(lanes)
        start = lanes[lane] + rng.uniform(0.0, 2.0)
        status = "succeeded" if i == 7 else STATUSES[rng.randrange(len(STATUSES))]
        retries = 1 if i % 11 == 3 else 0
        events.append((start, 0, {"event": "instance_started", "name": name, "attempt": 1, "at": results.iso(start)}))
        t = start
        for a in range(retries):
            t += rng.uniform(1.0, 5.0)
            events.append((t, 1, {"event": "instance_retry", "name": name, "attempt": a + 1, "api_error_status": 529,
                                  "delay_s": 0.5}))
            t += 0.5
            events.append((t, 0, {"event": "instance_started", "name": name, "attempt": a + 2,
                                  "at": results.iso(t)}))
        end = t + rng.uniform(2.0, 60.0)
        lanes[lane] = end
        tokens = {"input": rng.randrange(100, 20000), "output": rng.randrange(10, 3000),
                  "cache_creation": rng.randrange(0, 5000), "cache_read": rng.randrange(0, 90000)}
        tokens["total"] = sum(tokens.values())
        tools = {tool: rng.randrange(1, 5) for tool in rng.sample(TOOLS, rng.randrange(0, 3))}
        stdout_log = os.path.join(run_dir, "logs", f"{name}.stdout")
        if i < 3:
            with open(stdout_log, "w", encoding="utf-8") as f:
                f.write('{"type":"result"}\n')
        record = {
            "name": name, "status": status, "exit_code": 0 if status == "succeeded" else 1,
            "started_at": results.iso(start), "finished_at": results.iso(end),
            "duration_s": round(end - start, 3), "attempts": 1 + retries, "tokens": tokens,
            "cost_usd": round(tokens["input"] * 3e-6 + tokens["output"] * 15e-6, 6), "cost_source": "result",
            "model": MODELS[i % len(MODELS)], "tools": dict(sorted(tools.items())), "session_id": None,
            "num_turns": 3, "result": HOSTILE if i == 7 else f"Done: task {i} " + "lorem ipsum " * 20,
            "error": None if status == "succeeded" else f"{status}: something went wrong in {name}",
            "api_error_status": 529 if status == "api-error" else None, "skipped_lines": 0,
            "stdout_log": stdout_log, "stderr_log": os.path.join(run_dir, "logs", f"{name}.stderr"),
        }
        records.append(record)
        events.append((end, 2, {"event": "instance_finished", "name": name, "record": record}))
    events.sort(key=lambda ev: ev[:2])
    finished = max(lanes)
    meta = {"run_id": os.path.basename(run_dir), "batch": os.path.join(run_dir, "synthetic.toml"),
            "started_at": results.iso(t0), "finished_at": results.iso(finished),
            "status": results.run_status(records), "exit_status": 0 if results.run_status(records) == "succeeded"
            else 1, "orchestrator_version": "test", "agent_version": "synthetic"}
    doc = results.build_document(meta, records)
    results.write_atomic(os.path.join(run_dir, "results.json"), doc)
    with open(os.path.join(run_dir, "journal.jsonl"), "wb") as f:
        for ev in [{"event": "run_started", "instances": n, **meta, "finished_at": None, "status": "running"},
                   *(ev for _, _, ev in events),
                   {"event": "run_finished", "status": doc["status"], "finished_at": meta["finished_at"],
                    "totals": doc["totals"]}]:
            f.write(journal.encode(ev))
    return doc
