"""Hostile agent output in a real batch (subprocess ``run``): one instance's output never ends the batch, poisons a
total, lowers spend, or bloats the documents; every document and journal line written is strict JSON.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from orchestrator_pex.accounting import MAX_TOOL_NAMES, OTHER_TOOLS
from orchestrator_pex.strictjson import loads_strict

REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "claude-code-2.1.330"
TOOL_USE = REFERENCE / "tool-use-allowed.stream.jsonl"

# Prints the file named in argv[1] verbatim, then exits 0.
CAT = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"


def _instance(name: str, payload: Path, extra: str = "") -> str:
    return (f'[[instances]]\nname = "{name}"\n'
            f'argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(CAT)}, {json.dumps(str(payload))}]\n{extra}\n')


def _assistant(mid: str, usage: dict, tool: str | None = None) -> bytes:
    content = [{"type": "tool_use", "id": "t", "name": tool, "input": {}}] if tool else []
    return json.dumps({"type": "assistant", "message": {"id": mid, "type": "message", "role": "assistant",
                       "model": "claude-sonnet-4-5", "content": content, "usage": usage}},
                      separators=(",", ":")).encode() + b"\n"


def _strict_documents(run_dir: str) -> dict:
    """Parse results.json and every journal line strictly (no NaN/Infinity); return the results document."""
    with open(os.path.join(run_dir, "results.json"), "rb") as f:
        doc = loads_strict(f.read())
    with open(os.path.join(run_dir, "journal.jsonl"), "rb") as f:
        for line in f.read().splitlines():
            loads_strict(line)
    return doc


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_hostile_instances_beside_a_normal_one(tmp_path, write_batch, run_batch):
    depth = 100_000
    (tmp_path / "nested.jsonl").write_bytes(
        TOOL_USE.read_bytes() + b"[" * depth + b"]" * depth + b"\n" + b'{"a":' * depth + b"\n")
    (tmp_path / "numbers.jsonl").write_bytes(
        _assistant("m1", {"input_tokens": 100, "output_tokens": 10})
        + b'{"type":"result","is_error":false,"num_turns":NaN,"total_cost_usd":Infinity,"usage":'
          b'{"input_tokens":-1000000000000,"output_tokens":NaN,"cache_creation_input_tokens":"7",'
          b'"cache_read_input_tokens":1e400}}\n'
        + _assistant("m2", {"input_tokens": -5, "output_tokens": 10**15}))
    with open(tmp_path / "tools.jsonl", "wb") as f:
        for n in range(20_000):
            f.write(_assistant(f"m{n}", {"input_tokens": 1, "output_tokens": 1}, tool=f"T{n:05d}" + "x" * 2048))
    batch = write_batch(_instance("normal", TOOL_USE) + _instance("nested", tmp_path / "nested.jsonl")
                        + _instance("numbers", tmp_path / "numbers.jsonl")
                        + _instance("tools", tmp_path / "tools.jsonl"))
    run = run_batch(batch, timeout=120)
    assert run.code == 0, run.stderr.decode(errors="replace")
    loads_strict(run.stdout)
    doc = _strict_documents(run.doc["run_dir"])
    by_name = {r["name"]: r for r in doc["instances"]}
    assert {n: r["status"] for n, r in by_name.items()} == dict.fromkeys(("normal", "nested", "numbers", "tools"),
                                                                          "succeeded")
    expected = {"input": 2400, "output": 49, "cache_creation": 600, "cache_read": 10000, "total": 13049}
    assert by_name["normal"]["tokens"] == expected
    assert by_name["normal"]["cost_usd"] == 0.013185 and by_name["normal"]["cost_source"] == "result"
    # The nested lines were skipped, the reference lines before them still counted exactly.
    assert by_name["nested"]["skipped_lines"] == 2 and by_name["nested"]["tokens"] == expected
    numbers = by_name["numbers"]
    assert numbers["tokens"] == {"input": 100, "output": 10, "cache_creation": 0, "cache_read": 0, "total": 110}
    assert numbers["cost_source"] == "estimate" and numbers["num_turns"] is None
    tools = by_name["tools"]["tools"]
    assert len(tools) == MAX_TOOL_NAMES and sum(tools.values()) == 20_000 and OTHER_TOOLS in tools
    assert os.path.getsize(os.path.join(run.doc["run_dir"], "results.json")) < 1024 * 1024
    assert all(math.isfinite(x) and x >= 0 for x in _numbers(doc["totals"]))
    assert doc["totals"]["tokens"]["total"] == 2 * 13049 + 110 + 40_000


def test_early_lying_result_cannot_hide_spend_from_the_budget(tmp_path, write_batch, run_batch):
    """A result claiming -10^12 tokens and $0 arrives first; the usage streamed after it still reaches the budget."""
    script = tmp_path / "liar.py"
    script.write_text(
        "import sys, time\n"
        "w = sys.stdout.write\n"
        'w(\'{"type":"result","is_error":false,"total_cost_usd":0,"usage":{"input_tokens":-1000000000000}}\\n\')\n'
        f"w({_assistant('m1', {'input_tokens': 50_000, 'output_tokens': 10}).decode()!r})\n"
        "sys.stdout.flush()\n"
        "time.sleep(60)\n")
    batch = write_batch(
        "grace_period = 0.5\n[budget]\nmax_tokens = 1000\nmode = \"block\"\n"
        f'[[instances]]\nname = "liar"\nargv = [{json.dumps(sys.executable)}, {json.dumps(str(script))}]\n')
    run = run_batch(batch, timeout=90)
    assert run.code == 3, run.stderr.decode(errors="replace")
    doc = _strict_documents(run.doc["run_dir"])
    record = doc["instances"][0]
    assert record["status"] == "budget-stopped"
    assert record["tokens"]["input"] == 50_000 and record["tokens"]["total"] == 50_010
    assert record["cost_source"] == "stream" and record["cost_usd"] > 0
