"""agent-sim's Codex CLI and Gemini CLI dialects: ``orchestrator-pex agent-sim --dialect codex|gemini ARGV…``.

The simulated agent speaks the dialect the orchestrator's plan gives it (``codex =`` / ``gemini =`` set to
``@agent-sim`` make the plan put ``--dialect NAME`` first), so the demo and ``init`` show a mixed batch without any
account. Output follows the real transcripts in tests/data/reference (codex-cli 0.171.0 ``exec --json``, gemini
0.61.0 ``--output-format stream-json``) event for event, with the same usage numbers as the mocks used there.

Argv understood: Codex — ``exec``, ``--json``, ``-m/--model M``, ``resume ID``, other flags skipped (``-c``,
``--sandbox`` take a value), the prompt is the last positional; Gemini — ``-p/--prompt P`` (or ``--prompt=P``),
``-m/--model M``, ``--output-format F``, other flags skipped. ``--version`` prints :data:`VERSIONS`.

Scenarios (env ``AGENT_SIM_SCENARIO``, default ``tool-use``): ``ok`` (one text answer), ``tool-use`` (a shell or
directory tool round trip), ``slow`` (``tool-use`` with ``AGENT_SIM_DELAY`` seconds, default 0.2, between events),
``hang`` (first event, then sleeps), ``quiet-exit`` (nothing, exit 0), ``crash`` (first events, exit 3, no final
event), ``api-401`` ``api-429`` ``api-500`` ``api-529`` (the reference error transcripts; Codex exits 1, Gemini
exits the HTTP status & 255), ``flood`` (benchmark: ``AGENT_SIM_MESSAGES`` tool events, default 20000, each line
padded to about ``AGENT_SIM_LINE_BYTES``, default 1250, written in ~1 MiB chunks, then the final usage event).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Dict, List, Optional, Tuple

VERSIONS = {"codex": "codex-cli 0.171.0 (agent-sim, orchestrator-pex demo agent)",
            "gemini": "0.61.0 (agent-sim, orchestrator-pex demo agent)"}
SCENARIOS = ("ok", "tool-use", "slow", "hang", "quiet-exit", "crash", "api-401", "api-429", "api-500", "api-529",
             "flood")
_API_ERRORS = {
    "codex": {401: "unexpected status 401 Unauthorized: Incorrect API key provided (agent-sim)",
              429: "exceeded retry limit, last status: 429 Too Many Requests",
              500: "exceeded retry limit, last status: 500 Internal Server Error",
              529: "We\u2019re currently experiencing high demand, which may cause temporary errors."},
    "gemini": {401: '[API Error: {"error":{"code":401,"message":"API key not valid. (agent-sim)",'
                    '"status":"UNAUTHENTICATED"}}]',
               429: "[API Error: Resource has been exhausted (e.g. check quota). (agent-sim)]",
               500: '[API Error: {"error":{"code":500,"message":"An internal error has occurred. (agent-sim)",'
                    '"status":"INTERNAL"}}]',
               529: '[API Error: {"error":{"code":503,"message":"The model is overloaded. (agent-sim)",'
                    '"status":"UNAVAILABLE"}}]'},
}


class _Out:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.first = True

    def emit(self, event: dict) -> None:
        if self.delay and not self.first:
            time.sleep(self.delay)
        self.first = False
        sys.stdout.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def _parse(dialect: str, argv: List[str]) -> Tuple[bool, Optional[str], Optional[str]]:
    """(--version given, prompt, model)."""
    version, prompt, model = False, None, None
    positionals: List[str] = []
    takes_value = {"-c", "--config", "--sandbox", "-s", "--output-format", "-o", "--approval-mode", "--resume", "-r",
                   "-C", "--cd", "--profile", "-p" if dialect == "codex" else "", "--allowed-tools"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positionals.extend(argv[i + 1:])
            break
        if arg in ("--version", "-V", "-v"):
            version = True
        elif arg in ("-m", "--model") and i + 1 < len(argv):
            model = argv[i + 1]
            i += 1
        elif dialect == "gemini" and arg in ("-p", "--prompt") and i + 1 < len(argv):
            prompt = argv[i + 1]
            i += 1
        elif dialect == "gemini" and arg.startswith("--prompt="):
            prompt = arg[len("--prompt="):]
        elif arg in takes_value and i + 1 < len(argv):
            i += 1
        elif not arg.startswith("-"):
            positionals.append(arg)
        i += 1
    if dialect == "codex":
        rest = [p for p in positionals if p != "exec"]
        if rest[:1] == ["resume"]:
            rest = rest[2:]
        prompt = rest[-1] if rest else None
    return version, prompt, model


def main(dialect: str, argv: List[str]) -> int:
    version, prompt, model = _parse(dialect, argv)
    if version:
        sys.stdout.write(VERSIONS[dialect] + "\n")
        return 0
    scenario = os.environ.get("AGENT_SIM_SCENARIO", "tool-use") or "tool-use"
    if scenario not in SCENARIOS:
        sys.stderr.write(f"agent-sim: unknown AGENT_SIM_SCENARIO {scenario!r} for {dialect}; "
                         f"known: {', '.join(SCENARIOS)}\n")
        return 2
    if prompt is None:
        sys.stderr.write(f"agent-sim ({dialect}): no prompt given\n")
        return 2
    try:
        delay = float(os.environ.get("AGENT_SIM_DELAY", "0.2")) if scenario == "slow" else 0.0
    except ValueError:
        delay = 0.2
    out = _Out(delay)
    try:
        if scenario == "flood":
            return _flood(dialect, prompt)
        if dialect == "codex":
            return _codex(out, scenario, prompt)
        return _gemini(out, scenario, prompt, model)
    except BrokenPipeError:
        return 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return default


def _flood(dialect: str, prompt: str) -> int:
    """Many tool events, then the final usage event: the ingest benchmark's stream for ``dialect``."""
    messages, size = _env_int("AGENT_SIM_MESSAGES", 20000), _env_int("AGENT_SIM_LINE_BYTES", 1250)
    dumps = json.dumps
    if dialect == "codex":
        first = {"type": "thread.started", "thread_id": str(uuid.uuid4())}
        pad = "x" * max(0, size - 200)
        lines = (dumps({"type": "item.completed", "item": {"id": f"item_{i}", "type": "command_execution",
                                                          "command": "/bin/bash -lc 'echo x'",
                                                          "aggregated_output": pad, "exit_code": 0,
                                                          "status": "completed"}}, separators=(",", ":"))
                 for i in range(messages))
        last = {"type": "turn.completed", "usage": {"input_tokens": 5 * messages, "cached_input_tokens": 0,
                                                    "output_tokens": messages}}
    else:
        first = {"type": "init", "timestamp": "2026-11-29T18:10:56.227Z", "session_id": str(uuid.uuid4()),
                 "model": "gemini-2.5-flash"}
        pad = "x" * max(0, size - 220)
        lines = (dumps({"type": "tool_use", "timestamp": "2026-11-29T18:10:56.288Z", "tool_name": "run_shell_command",
                        "tool_id": f"run_shell_command_{i}", "parameters": {"command": "echo x", "description": pad}},
                       separators=(",", ":"))
                 for i in range(messages))
        stats = {"total_tokens": 6 * messages, "input_tokens": 5 * messages, "output_tokens": messages, "cached": 0,
                 "input": 5 * messages}
        last = {"type": "result", "timestamp": "2026-11-29T18:10:59.730Z", "status": "success",
                "stats": {**stats, "duration_ms": 1, "tool_calls": messages, "models": {"gemini-2.5-flash": stats}}}
    write = sys.stdout.buffer.write
    write((dumps(first) + "\n").encode())
    chunk: List[str] = []
    size_now = 0
    for line in lines:
        chunk.append(line)
        size_now += len(line) + 1
        if size_now >= 1 << 20:
            write(("\n".join(chunk) + "\n").encode())
            chunk, size_now = [], 0
    if chunk:
        write(("\n".join(chunk) + "\n").encode())
    write((dumps(last) + "\n").encode())
    sys.stdout.buffer.flush()
    return 0


def _hang() -> int:
    while True:
        time.sleep(3600)


def _codex(out: _Out, scenario: str, prompt: str) -> int:
    if scenario == "quiet-exit":
        return 0
    out.emit({"type": "thread.started", "thread_id": str(uuid.uuid4())})
    if scenario == "hang":
        return _hang()
    out.emit({"type": "turn.started"})
    if scenario.startswith("api-"):
        message = _API_ERRORS["codex"][int(scenario[4:])]
        out.emit({"type": "error", "message": message})
        out.emit({"type": "turn.failed", "error": {"message": message}})
        return 1
    if scenario == "ok":
        out.emit({"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": "All done."}})
        usage = {"input_tokens": 1200, "cached_input_tokens": 300, "cache_write_input_tokens": 100,
                 "output_tokens": 40, "reasoning_output_tokens": 10}
    else:
        command = {"id": "item_0", "type": "command_execution", "command": "/bin/bash -lc 'echo tool-ran'",
                   "aggregated_output": "", "exit_code": None, "status": "in_progress"}
        out.emit({"type": "item.started", "item": command})
        if scenario == "crash":
            sys.stderr.write("agent-sim: simulated crash\n")
            return 3
        out.emit({"type": "item.completed", "item": {**command, "aggregated_output": "tool-ran\n", "exit_code": 0,
                                                     "status": "completed"}})
        out.emit({"type": "item.completed", "item": {"id": "item_1", "type": "agent_message",
                                                     "text": "The command printed tool-ran."}})
        usage = {"input_tokens": 2100, "cached_input_tokens": 1200, "cache_write_input_tokens": 200,
                 "output_tokens": 42, "reasoning_output_tokens": 8}
    out.emit({"type": "turn.completed", "usage": usage})
    return 0


def _stats(models: Dict[str, Tuple[int, int, int, int]], tool_calls: int) -> dict:
    """Gemini stats from per-model (total, input_tokens, output_tokens, cached)."""
    per = {m: {"total_tokens": t, "input_tokens": i, "output_tokens": o, "cached": c, "input": i - c}
           for m, (t, i, o, c) in models.items()}
    overall = {k: sum(p[k] for p in per.values()) for k in ("total_tokens", "input_tokens", "output_tokens",
                                                            "cached", "input")}
    return {**overall, "duration_ms": 50, "tool_calls": tool_calls, "models": per}


def _gemini(out: _Out, scenario: str, prompt: str, model: Optional[str]) -> int:
    if scenario == "quiet-exit":
        return 0
    stamp = "2026-11-29T18:10:56.227Z"
    out.emit({"type": "init", "timestamp": stamp, "session_id": str(uuid.uuid4()), "model": model or "auto"})
    if scenario == "hang":
        return _hang()
    out.emit({"type": "message", "timestamp": stamp, "role": "user", "content": prompt})
    if scenario.startswith("api-"):
        status = int(scenario[4:])
        used = model or "gemini-2.5-flash"
        zero = {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0, "cached": 0, "input": 0}
        out.emit({"type": "result", "timestamp": stamp, "status": "error",
                  "error": {"type": "unknown", "message": _API_ERRORS["gemini"][status]},
                  "stats": {**zero, "duration_ms": 0, "tool_calls": 0, "models": {used: zero}}})
        return status & 255
    main = model or "gemini-2.5-flash"
    models: Dict[str, Tuple[int, int, int, int]] = {} if model else {"gemini-2.5-flash-lite": (105, 100, 5, 0)}
    if scenario == "ok":
        for piece in ("All ", "done."):
            out.emit({"type": "message", "timestamp": stamp, "role": "assistant", "content": piece, "delta": True})
        models[main] = (1250, 1200, 40, 300)
        tool_calls = 0
    else:
        out.emit({"type": "message", "timestamp": stamp, "role": "assistant", "content": "Running it.",
                  "delta": True})
        tool_id = "list_directory__list_directory_1795975856261_0"
        out.emit({"type": "tool_use", "timestamp": stamp, "tool_name": "list_directory", "tool_id": tool_id,
                  "parameters": {"dir_path": "."}})
        if scenario == "crash":
            sys.stderr.write("agent-sim: simulated crash\n")
            return 3
        out.emit({"type": "tool_result", "timestamp": stamp, "tool_id": tool_id, "status": "success",
                  "output": "Directory is empty."})
        for piece in ("The command ", "printed tool-ran."):
            out.emit({"type": "message", "timestamp": stamp, "role": "assistant", "content": piece, "delta": True})
        models[main] = (2157, 2100, 42, 1200)
        tool_calls = 1
    out.emit({"type": "result", "timestamp": stamp, "status": "success", "stats": _stats(models, tool_calls)})
    return 0
