"""agent-sim: a simulated Claude Code that emits realistic ``--output-format stream-json`` output.

It is the product's demo agent (``claude = "@agent-sim"``, run as ``orchestrator-pex agent-sim <claude argv>``; no
Claude account needed) and the fast, scriptable fake ``claude`` of the test suite (``tests/support/fake_claude``).

Command line: the subset of Claude Code's own argv the orchestrator uses -- ``-p/--print``, the prompt (first
positional; read from stdin when absent and stdin is not a terminal), ``--output-format stream-json|json|text``,
``--verbose``, ``--model M``, ``--permission-mode P``, ``--allowedTools X`` / ``--disallowedTools X`` (comma or
space separated, repeatable), ``--max-turns N``, ``--session-id ID``, ``--resume ID``, ``--append-system-prompt S``,
``--dangerously-skip-permissions``; other value-taking Claude flags are skipped with their value, unknown flags are
tolerated (``--flag=value`` or a bare ``--flag``); several positionals are joined into one prompt. ``--version`` prints
``2.1.330 (agent-sim, orchestrator-pex demo agent)``. As with the real CLI, ``stream-json`` with ``--print``
requires ``--verbose`` (error on stderr, exit 1).

Output layout follows the real CLI 2.1.330 byte for byte in structure (see the reference transcripts): a
``system``/``init`` event first; per API message one ``assistant`` event per content block, all sharing
``message.id`` and repeating the message_start usage (``output_tokens`` 1); a ``user`` event per tool result; a
final ``result`` event (note: in the real CLI ``"type":"result"`` is *not* the first key) whose ``usage``,
``modelUsage`` and ``total_cost_usd`` are the authoritative totals: each API message's usage counted once, output
tokens being the message's final count (which the stream never shows). Costs use
:func:`orchestrator_pex.pricing.estimate_cost`. JSON is compact, one event per line, flushed per line.
``--output-format json`` prints only the result object; ``text`` prints only the result text.

Permissions are simulated like ``claude -p``: read-only tools (Read, Grep, Glob) always run; Edit/Write need
``acceptEdits``/``bypassPermissions`` or an allowedTools entry; Bash needs an allowedTools entry (``Bash`` or
``Bash(...)``) or ``bypassPermissions`` unless the command is read-only (``echo``, ``ls``, ``cat``, ``git status``
...). A denied call gets an error tool_result and a ``permission_denials`` entry; a disallowed tool gets "No such
tool available". With ``--max-turns N`` a conversation stops after N API messages with a result of subtype
``error_max_turns`` (is_error true, exit 1).

Scenario: env ``AGENT_SIM_SCENARIO`` (default ``tool-use``):

``ok``                one text answer.
``tool-use``          like the reference: text + Bash tool_use, its tool_result, final text. Usage per message:
                      input 1200, cache creation 300, cache read 5000, output 40 then 9 (sonnet-4-5: $0.013185).
``multi-tool``        ``AGENT_SIM_TURNS`` API messages (default 5): message 0 = text + parallel Read and Grep,
                      then one tool per message cycling Edit, Bash, Read, Grep; the last message is the final text.
``slow``              ``tool-use`` with ``AGENT_SIM_DELAY`` seconds (default 0.2) before every event after init.
``hang``              init event, then sleeps forever (SIGTERM kills it normally).
``hang-ignore-term``  ignores SIGTERM (installed before any output), init event, then sleeps forever.
``silent``            no output at all, sleeps forever.
``quiet-exit``        no output, exit 0.
``crash``             init, one API message with a tool call and its result, a line on stderr, exit 3, no result.
``garbage``           ``tool-use`` with lines of invalid UTF-8 bytes and non-JSON text interleaved; normal result.
``huge-line``         ``tool-use`` whose tool_result line is ~``AGENT_SIM_HUGE_BYTES`` bytes (default 50 000 000),
                      written in 1 MiB chunks with the newline only at the end; normal result.
``truncated``         init, then a JSON line cut mid-way (message never completed, not counted), then ``tool-use``.
``api-401`` ``api-429`` ``api-529`` ``api-500``
                      like the reference api-error transcripts: ``AGENT_SIM_RETRIES`` (default 1) ``api_retry``
                      system events, a synthetic assistant error event with ``api_error_status``, a result with
                      ``is_error`` true, zero usage and cost; exit 1.
``expensive``         ``AGENT_SIM_TURNS`` messages (default 10) of ``AGENT_SIM_TOKENS`` input tokens each (default
                      100 000; output 500 each), ``AGENT_SIM_DELAY`` (default 0.1) before each event; each but the last
                      runs Bash (``echo``).
``flood``             benchmark: ``AGENT_SIM_MESSAGES`` (default 20000) API messages, each ONE assistant event with a
                      Bash tool_use padded to ~``AGENT_SIM_LINE_BYTES`` bytes (default 1250); usage per message
                      input 5, cache creation 0, cache read 1000, output 1 (so the stream sums equal the result
                      totals exactly); lines are pre-built and written in ~1 MiB chunks.
``spawn-child``       starts a python grandchild (same process group; inherits stdout) that sleeps forever, prints
                      ``{"type":"system","subtype":"agent_sim_child","pid":N,...}`` after init, then hangs.
                      ``AGENT_SIM_CHILD_IGNORE_TERM=1`` makes the grandchild ignore SIGTERM.
``flaky``             ``api-529`` on the first ``AGENT_SIM_FAIL_TIMES`` attempts (default 1), then ``tool-use``;
                      attempts are counted in the file ``AGENT_SIM_STATE_FILE`` (required).

``AGENT_SIM_EXIT`` overrides the exit status of any scenario that exits. ``AGENT_SIM_DELAY`` applies to every
finite scenario (default 0 unless stated). The final text and result echo the prompt: ``Done: <first 60 chars>``.
Only the standard library and :mod:`orchestrator_pex.pricing` are imported (it is started once per instance).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from orchestrator_pex.pricing import estimate_cost

VERSION = "2.1.330"
VERSION_LINE = f"{VERSION} (agent-sim, orchestrator-pex demo agent)"
DEFAULT_MODEL = "claude-sonnet-4-5"

TOOLS = [
    "Task", "Bash", "Glob", "Grep", "Edit", "EnterWorktree", "ExitWorktree", "ListAgents", "Monitor", "NotebookEdit",
    "Read", "Skill", "TaskCreate", "TaskGet", "TaskList", "TaskStop", "TaskUpdate", "ToolSearch", "WebFetch",
    "WebSearch", "Write",
]
_READ_ONLY_TOOLS = {"Read", "Grep", "Glob", "LS", "TaskList", "TaskGet", "ToolSearch"}
_EDIT_TOOLS = {"Edit", "Write", "NotebookEdit", "MultiEdit"}
_READ_ONLY_COMMANDS = {"echo", "ls", "cat", "pwd", "head", "tail", "wc", "grep", "true", "date", "whoami"}
_SLASH_COMMANDS = ["debug", "code-review", "simplify", "batch", "doctor", "loop", "agents", "clear", "compact",
                   "config", "context", "init", "mcp", "model", "review", "security-review", "usage"]

# Flags taking a value; everything else starting with "-" is a switch.
_VALUE_FLAGS = {
    "--output-format", "--input-format", "--model", "--permission-mode", "--allowedTools", "--allowed-tools",
    "--disallowedTools", "--disallowed-tools", "--max-turns", "--session-id", "--resume", "-r",
    "--append-system-prompt", "--system-prompt", "--fallback-model", "--add-dir", "--mcp-config", "--settings",
    "--permission-prompt-tool", "--agents", "--agent", "--setting-sources", "--max-budget-usd", "--betas",
    "--plugin-dir", "--json-schema", "--tools", "--debug-file", "--max-thinking-tokens",
}

SCENARIOS = (
    "ok", "tool-use", "multi-tool", "slow", "hang", "hang-ignore-term", "silent", "quiet-exit", "crash", "garbage",
    "huge-line", "truncated", "api-401", "api-429", "api-529", "api-500", "expensive", "flood", "spawn-child", "flaky",
)

_API_ERRORS = {
    # status: (retry "error", assistant "error", api_error_type, text)
    401: ("authentication_failed", "authentication_failed", "authentication_error",
          "Failed to authenticate. API Error: 401 authentication_error"),
    429: ("rate_limit", "rate_limit", "rate_limit_error",
          "API Error: 429 rate_limit_error. You have hit your rate limit — try again later."),
    500: ("server_error", "server_error", "api_error",
          "API Error: 500 api_error. This is a server-side issue, usually temporary — try again in a moment."),
    529: ("overloaded", "server_error", "overloaded_error",
          "API Error: 529 overloaded_error. This is a server-side issue, usually temporary — try again in a moment."),
}


class UsageError(Exception):
    """Bad command line, reported like the real CLI: one line on stderr, exit 1."""


class Options:
    """Parsed Claude Code argv."""

    def __init__(self) -> None:
        self.print_mode = False
        self.prompt: str | None = None
        self.output_format = "text"
        self.verbose = False
        self.model = DEFAULT_MODEL
        self.permission_mode = "default"
        self.allowed: list[str] = []
        self.disallowed: list[str] = []
        self.max_turns: int | None = None
        self.session_id: str | None = None
        self.resume: str | None = None
        self.version = False
        self.help = False


def split_tools(value: str) -> list[str]:
    """Split an allowedTools value on commas/whitespace, keeping ``Bash(git log:*)`` patterns whole."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if depth == 0 and (ch == "," or ch.isspace()):
            if cur:
                out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def parse_argv(argv: list[str]) -> Options:
    opts = Options()
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        if name in ("-p", "--print"):
            opts.print_mode = True
            continue
        if name in ("-v", "--version"):
            opts.version = True
            continue
        if name in ("-h", "--help"):
            opts.help = True
            continue
        if name == "--verbose":
            opts.verbose = True
            continue
        if name == "--dangerously-skip-permissions":
            opts.permission_mode = "bypassPermissions"
            continue
        if name not in _VALUE_FLAGS:
            continue  # unknown switch (or --unknown=value): tolerated
        if eq:
            value = inline
        elif i < len(argv):
            value = argv[i]
            i += 1
        else:
            raise UsageError(f"error: option '{name} <value>' argument missing")
        if name == "--output-format":
            if value not in ("stream-json", "json", "text"):
                raise UsageError(f"error: option '--output-format <format>' argument '{value}' is invalid. "
                                 "Allowed choices are text, json, stream-json.")
            opts.output_format = value
        elif name == "--model":
            opts.model = value
        elif name == "--permission-mode":
            opts.permission_mode = value
        elif name in ("--allowedTools", "--allowed-tools"):
            opts.allowed.extend(split_tools(value))
        elif name in ("--disallowedTools", "--disallowed-tools"):
            opts.disallowed.extend(split_tools(value))
        elif name == "--max-turns":
            try:
                opts.max_turns = int(value)
            except ValueError:
                raise UsageError(f"error: option '--max-turns <turns>' argument '{value}' is invalid.") from None
        elif name == "--session-id":
            opts.session_id = value
        elif name in ("--resume", "-r"):
            opts.resume = value
    if positionals:
        opts.prompt = " ".join(positionals)
    return opts


def _uuid4() -> str:
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _api_id(prefix: str) -> str:
    """An Anthropic-style id such as ``msg_01XkJ...`` (24 base62 characters after the prefix)."""
    return prefix + "_01" + "".join(_B62[b % 62] for b in os.urandom(22))


def _timestamp() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return default


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, ""))
    except ValueError:
        return default


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


class Msg:
    """One simulated API message: content blocks plus its usage (``out`` = final output tokens)."""

    def __init__(self, blocks: list[tuple], inp: int, cc: int, cr: int, out: int) -> None:
        self.blocks = blocks  # ("text", str) | ("tool", name, input_dict, result_spec)
        self.inp, self.cc, self.cr, self.out = inp, cc, cr, out


class Sim:
    """Emits events for one run and keeps the authoritative totals."""

    def __init__(self, opts: Options, delay: float = 0.0) -> None:
        self.opts = opts
        self.stream = opts.output_format == "stream-json"
        self.delay = delay
        self.out = sys.stdout.buffer
        self.t0 = time.monotonic()
        self.session_id = opts.session_id or opts.resume or _uuid4()
        self.model = opts.model
        self.prompt = opts.prompt or ""
        self.tokens = {"input": 0, "cache_creation": 0, "cache_read": 0, "output": 0}
        self.num_turns = 0
        self.denials: list[dict] = []
        self.events = 0

    # -- low level -----------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def emit(self, event: dict) -> None:
        """Write one stream-json event after the configured delay (json/text mode: only the delay)."""
        if self.delay and self.events:
            time.sleep(self.delay)
        self.events += 1
        if self.stream:
            self.write(_dumps(event))

    def raw(self, data: bytes) -> None:
        if self.stream:
            self.write(data)

    @property
    def done_text(self) -> str:
        return "Done: " + self.prompt[:60]

    # -- events --------------------------------------------------------------------------------------------------
    def tools(self) -> list[str]:
        return [t for t in TOOLS if t not in self.opts.disallowed]

    def init(self) -> None:
        cwd = os.getcwd()
        home = os.environ.get("HOME", "/root")
        self.emit({
            "type": "system", "subtype": "init", "cwd": cwd, "session_id": self.session_id, "tools": self.tools(),
            "mcp_servers": [], "model": self.model, "permissionMode": self.opts.permission_mode,
            "slash_commands": _SLASH_COMMANDS, "terminal_slash_commands": ["doctor"], "apiKeySource": "none",
            "claude_code_version": VERSION, "output_style": "default",
            "agents": ["claude", "Explore", "general-purpose", "Plan"], "skills": [], "plugins": [],
            "capabilities": [], "analytics_disabled": True, "product_feedback_disabled": True,
            "served_by_anthropic": False, "uuid": _uuid4(),
            "memory_paths": {"auto": f"{home}/.claude/projects/{cwd.replace('/', '-')}/memory/"},
            "original_cwd": cwd, "additional_directories": [],
            "messaging_socket_path": f"/run/user/{os.getuid()}/cc-socks/{os.getpid()}.sock",
            "fast_mode_state": "off", "fast_mode_disabled_reason": "sdk_opt_in_required",
            "per_turn_effort_active": False, "ultrathink_available": False, "ultrathink_typed_raises": False,
            "view_mode": "default",
        })

    def system(self, subtype: str, **fields: object) -> None:
        event: dict = {"type": "system", "subtype": subtype}
        event.update(fields)
        event["session_id"] = self.session_id
        event["uuid"] = _uuid4()
        self.emit(event)

    def assistant_event(self, msg_id: str, block: dict, usage: dict) -> dict:
        return {
            "type": "assistant",
            "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": self.model, "content": [block],
                "stop_reason": None, "stop_sequence": None, "usage": usage, "context_management": None,
            },
            "parent_tool_use_id": None, "session_id": self.session_id, "uuid": _uuid4(), "timestamp": _timestamp(),
        }

    def count(self, inp: int, cc: int, cr: int, out: int) -> None:
        self.num_turns += 1
        self.tokens["input"] += inp
        self.tokens["cache_creation"] += cc
        self.tokens["cache_read"] += cr
        self.tokens["output"] += out

    def message(self, msg: Msg) -> list[tuple[str, str, dict, object]]:
        """Emit one API message (one assistant event per block); return its tool calls (id, name, input, spec)."""
        msg_id = _api_id("msg")
        usage = {"input_tokens": msg.inp, "output_tokens": 1, "cache_creation_input_tokens": msg.cc,
                 "cache_read_input_tokens": msg.cr}
        self.count(msg.inp, msg.cc, msg.cr, msg.out)
        calls = []
        for block in msg.blocks:
            if block[0] == "text":
                content = {"type": "text", "text": block[1]}
            else:
                _, name, tool_input, spec = block
                tool_id = _api_id("toolu")
                content = {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}
                calls.append((tool_id, name, tool_input, spec))
            self.emit(self.assistant_event(msg_id, content, usage))
        return calls

    def permission(self, name: str, tool_input: dict) -> dict | None:
        """The simulated permission decision for a tool call, or None when denied."""
        mode = self.opts.permission_mode
        allowed = self.opts.allowed
        if any(a == name or a.startswith(name + "(") for a in allowed):
            return {"decision": "accept", "source": "config", "reason_type": "rule"}
        if mode == "bypassPermissions":
            return {"decision": "accept", "source": "mode", "reason_type": "mode"}
        if name in _READ_ONLY_TOOLS:
            return {"decision": "accept", "source": "tool", "reason_type": "readOnly"}
        if name in _EDIT_TOOLS and mode == "acceptEdits":
            return {"decision": "accept", "source": "mode", "reason_type": "mode"}
        if name == "Bash" and mode != "plan":
            words = str(tool_input.get("command", "")).split()
            if words and words[0] in _READ_ONLY_COMMANDS:
                return {"decision": "accept", "source": "config", "reason_type": "subcommandResults"}
        return None

    def tool_result(self, tool_id: str, name: str, tool_input: dict, spec: object) -> None:
        """Emit the ``user`` event carrying the result of one tool call."""
        decision = None
        if name in self.opts.disallowed or name not in TOOLS:
            text = f"<tool_use_error>Error: No such tool available: {name}</tool_use_error>"
            is_error, result = True, f"Error: No such tool available: {name}"
        else:
            decision = self.permission(name, tool_input)
            if decision is None:
                text = f"Claude requested permissions to use {name}, but you haven't granted it yet."
                is_error, result = True, "Error: " + text
                self.denials.append({"tool_name": name, "tool_use_id": tool_id, "tool_input": tool_input})
                decision = {"decision": "deny", "source": "mode", "reason_type": "mode"}
            else:
                text, result = spec if isinstance(spec, tuple) else (str(spec), {})
                is_error = False
        self.emit({
            "type": "user",
            "message": {"role": "user", "content": [
                {"tool_use_id": tool_id, "type": "tool_result", "content": text, "is_error": is_error}]},
            "parent_tool_use_id": None, "session_id": self.session_id, "uuid": _uuid4(), "timestamp": _timestamp(),
            "tool_use_result": result,
            "tool_result_meta": [{"id": tool_id, "permission_decision": decision}],
        })

    def conversation(self, msgs: list[Msg]) -> int:
        """Run ``msgs`` (tool results after each message), honour --max-turns, then emit the result."""
        for n, msg in enumerate(msgs):
            if self.opts.max_turns is not None and n >= self.opts.max_turns:
                return self.result(is_error=True, subtype="error_max_turns", terminal_reason="max_turns",
                                   errors=[f"Reached maximum number of turns ({self.opts.max_turns})"])
            for call in self.message(msg):
                self.tool_result(*call)
        return self.result()

    # -- result --------------------------------------------------------------------------------------------------
    def model_usage(self, cost: float) -> dict:
        if not self.num_turns:
            return {}
        t = self.tokens
        return {self.model: {
            "inputTokens": t["input"], "outputTokens": t["output"], "cacheReadInputTokens": t["cache_read"],
            "cacheCreationInputTokens": t["cache_creation"], "webSearchRequests": 0, "costUSD": cost,
            "contextWindow": 200000, "maxOutputTokens": 32000, "thinkingTokens": 0,
            "cacheCreationEphemeral5mInputTokens": 0, "cacheCreationEphemeral1hInputTokens": 0,
            "canonicalModel": self.model, "provider": "firstParty", "costBasis": "list",
        }}

    def finish(self, event: dict, text: str, status: int) -> int:
        """Emit the final result in the chosen output format; return ``status``."""
        if self.stream:
            self.emit(event)
        elif self.opts.output_format == "json":
            event = {k: v for k, v in event.items() if k != "model_usage_since_last_result"}
            self.write(_dumps(event))
        else:
            self.write((text + "\n").encode("utf-8"))
        return status

    def result(self, *, is_error: bool = False, subtype: str = "success", terminal_reason: str = "completed",
               errors: list[str] | None = None) -> int:
        t = self.tokens
        cost = estimate_cost(self.model, t) if self.num_turns else 0
        model_usage = self.model_usage(cost)
        duration = int((time.monotonic() - self.t0) * 1000) + 300
        event: dict = {
            "duration_api_ms": max(1, duration - 300), "stop_reason": "end_turn", "session_id": self.session_id,
            "total_cost_usd": cost,
            "usage": {
                "input_tokens": t["input"], "cache_creation_input_tokens": t["cache_creation"],
                "cache_read_input_tokens": t["cache_read"], "output_tokens": t["output"],
                "output_tokens_details": {"thinking_tokens": 0},
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0}, "service_tier": "standard",
                "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
                "inference_geo": "", "iterations": [], "speed": "standard", "fallback_credit": None,
            },
            "modelUsage": model_usage, "permission_denials": self.denials, "terminal_reason": terminal_reason,
            "fast_mode_state": "off", "fast_mode_disabled_reason": "sdk_opt_in_required",
            "subagent_stats": _subagent_stats(), "safety_stops": 0, "is_error": is_error,
            "num_turns": self.num_turns, "subtype": subtype, "api_error_status": None,
        }
        if errors is None:
            event["result"] = self.done_text
        else:
            event["errors"] = errors
        event.update({
            "ttft_ms": 110, "type": "result", "duration_ms": duration, "uuid": _uuid4(), "ttft_stream_ms": 109,
            "time_to_request_ms": 100, "first_content_frame_ms": 110, "queued_turn_count": 0, "result_index": 0,
            "model_usage_since_last_result": model_usage,
        })
        text = self.done_text if errors is None else "Error: " + "; ".join(errors)
        return self.finish(event, text, 1 if is_error else 0)

    def api_error(self, status: int, retries: int) -> int:
        """The reference api-error transcript: api_retry events, synthetic assistant error, error result."""
        retry_error, error, error_type, text = _API_ERRORS[status]
        for attempt in range(1, retries + 1):
            self.system("api_retry", attempt=attempt, max_retries=retries,
                        retry_delay_ms=500 + os.urandom(1)[0] % 150, error_status=status, error=retry_error)
        zero_usage = {
            "output_tokens_details": None, "input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
            "service_tier": None, "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            "inference_geo": None, "iterations": None, "speed": None, "fallback_credit": None,
        }
        self.emit({
            "type": "assistant",
            "message": {
                "diagnostics": None, "id": _uuid4(), "container": None, "model": "<synthetic>", "role": "assistant",
                "stop_details": None, "stop_reason": "stop_sequence", "stop_sequence": "", "type": "message",
                "usage": zero_usage, "content": [{"type": "text", "text": text}], "context_management": None,
            },
            "parent_tool_use_id": None, "session_id": self.session_id, "uuid": _uuid4(), "timestamp": _timestamp(),
            "error": error, "is_api_error_message": True, "api_error_status": status, "api_error_type": error_type,
        })
        duration = int((time.monotonic() - self.t0) * 1000) + 600
        event = {
            "duration_api_ms": 0, "stop_reason": "stop_sequence", "session_id": self.session_id, "total_cost_usd": 0,
            "usage": {
                "output_tokens_details": {"thinking_tokens": 0}, "input_tokens": 0, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": 0,
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0}, "service_tier": "standard",
                "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
                "inference_geo": "", "iterations": [], "speed": "standard", "fallback_credit": None,
            },
            "modelUsage": {}, "permission_denials": [], "terminal_reason": "api_error", "fast_mode_state": "off",
            "fast_mode_disabled_reason": "sdk_opt_in_required", "subagent_stats": _subagent_stats(),
            "safety_stops": 0, "is_error": True, "num_turns": 1, "subtype": "success", "api_error_status": status,
            "api_error_type": error_type, "result": text, "type": "result", "duration_ms": duration,
            "uuid": _uuid4(), "queued_turn_count": 0, "result_index": 0, "model_usage_since_last_result": {},
        }
        return self.finish(event, text, 1)


def _subagent_stats() -> dict:
    return {
        "spawned": 0, "requested": {"background": 0, "foreground": 0, "unset": 0}, "started_in_background": 0,
        "max_depth": 0, "spawned_by_subagents": 0, "completed": 0, "failed": 0,
        "killed": {"parent": 0, "user": 0, "system": 0},
        "refused": {"depth_limit": 0, "concurrency_limit": 0, "budget": 0}, "by_type": {},
    }


# -- tool call fixtures -------------------------------------------------------------------------------------------
def _bash(command: str, stdout: str, description: str) -> tuple:
    result = {"stdout": stdout, "stderr": "", "interrupted": False, "isImage": False, "noOutputExpected": False}
    return ("tool", "Bash", {"command": command, "description": description}, (stdout, result))


def _read(path: str) -> tuple:
    content = "def add(a, b):\n    return a - b\n"
    text = "".join(f"{i:>6}\t{line}\n" for i, line in enumerate(content.splitlines(), 1))
    result = {"type": "text", "file": {"filePath": path, "content": content, "numLines": 2, "startLine": 1,
                                       "totalLines": 2}}
    return ("tool", "Read", {"file_path": path}, (text, result))


def _grep(pattern: str) -> tuple:
    files = ["src/calc.py", "tests/test_calc.py"]
    result = {"mode": "files_with_matches", "filenames": files, "numFiles": len(files)}
    return ("tool", "Grep", {"pattern": pattern, "output_mode": "files_with_matches"},
            ("Found 2 files\n" + "\n".join(files), result))


def _edit(path: str) -> tuple:
    old, new = "return a - b", "return a + b"
    result = {"filePath": path, "oldString": old, "newString": new, "originalFile": f"def add(a, b):\n    {old}\n",
              "structuredPatch": [{"oldStart": 1, "oldLines": 2, "newStart": 1, "newLines": 2,
                                   "lines": [" def add(a, b):", f"-    {old}", f"+    {new}"]}],
              "userModified": False, "replaceAll": False}
    return ("tool", "Edit", {"file_path": path, "old_string": old, "new_string": new},
            (f"The file {path} has been updated successfully.", result))


def tool_use_msgs(prompt_text: str) -> list[Msg]:
    """The reference tool-use conversation (usage 1200/300/5000, output 40 then 9)."""
    return [
        Msg([("text", "Let me run it."), _bash("echo tool-ran", "tool-ran", "Echo")], 1200, 300, 5000, 40),
        Msg([("text", prompt_text)], 1200, 300, 5000, 9),
    ]


def multi_tool_plan(turns: int) -> list[list[str]]:
    """Tool names called by each API message of the multi-tool scenario (the last message calls none)."""
    cycle = ["Edit", "Bash", "Read", "Grep"]
    plan = []
    for k in range(max(1, turns) - 1):
        plan.append(["Read", "Grep"] if k == 0 else [cycle[(k - 1) % 4]])
    plan.append([])
    return plan


def multi_tool_msgs(turns: int, prompt_text: str) -> list[Msg]:
    fixtures = {"Read": lambda: _read("src/calc.py"), "Grep": lambda: _grep("def add"),
                "Edit": lambda: _edit("src/calc.py"),
                "Bash": lambda: _bash("python -m pytest -q", "1 passed in 0.01s", "Run the tests")}
    msgs = []
    for k, names in enumerate(multi_tool_plan(turns)):
        usage = (1000 + 200 * k, 400 if k == 0 else 150, 5000 + 1000 * k)
        if names:
            blocks = [("text", "Looking at the code." if k == 0 else "Next step.")]
            blocks += [fixtures[n]() for n in names]
            msgs.append(Msg(blocks, *usage, 30 + 10 * k))
        else:
            msgs.append(Msg([("text", prompt_text)], *usage, 12))
    return msgs


# -- scenarios ----------------------------------------------------------------------------------------------------
def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def _flood(sim: Sim) -> int:
    n = _env_int("AGENT_SIM_MESSAGES", 20000)
    line_bytes = _env_int("AGENT_SIM_LINE_BYTES", 1250)
    usage = '{"input_tokens":5,"output_tokens":1,"cache_creation_input_tokens":0,"cache_read_input_tokens":1000}'
    stamp = _timestamp()
    head = '{"type":"assistant","message":{"id":"msg_01FLOOD'
    mid1 = ('","type":"message","role":"assistant","model":' + json.dumps(sim.model)
            + ',"content":[{"type":"tool_use","id":"toolu_01FLOOD')
    mid2 = '","name":"Bash","input":{"command":"echo '
    tail1 = ('","description":"flood"}}],"stop_reason":null,"stop_sequence":null,"usage":' + usage
             + ',"context_management":null},"parent_tool_use_id":null,"session_id":"' + sim.session_id
             + '","uuid":"00000000-0000-4000-8000-')
    tail2 = '","timestamp":"' + stamp + '"}\n'
    fixed = len(head) + len(mid1) + len(mid2) + len(tail1) + len(tail2) + 3 * 12
    pad = "x" * max(0, line_bytes - fixed)
    if sim.stream:
        chunk: list[str] = []
        size = 0
        for i in range(n):
            num = f"{i:012d}"
            line = head + num + mid1 + num + mid2 + pad + tail1 + num + tail2
            chunk.append(line)
            size += len(line)
            if size >= 1 << 20:
                sim.write("".join(chunk).encode())
                chunk, size = [], 0
        if chunk:
            sim.write("".join(chunk).encode())
        sim.events += n
    sim.num_turns = n
    sim.tokens = {"input": 5 * n, "cache_creation": 0, "cache_read": 1000 * n, "output": n}
    return sim.result()


def _huge_line(sim: Sim) -> int:
    total = _env_int("AGENT_SIM_HUGE_BYTES", 50_000_000)
    calls = sim.message(Msg([("text", "Let me look at the build log."),
                             ("tool", "Bash", {"command": "cat build.log", "description": "Show the build log"},
                              None)], 1200, 300, 5000, 40))
    tool_id = calls[0][0]
    head = ('{"type":"user","message":{"role":"user","content":[{"tool_use_id":"' + tool_id
            + '","type":"tool_result","content":"').encode()
    tail = ('","is_error":false}]},"parent_tool_use_id":null,"session_id":"' + sim.session_id + '","uuid":"'
            + _uuid4() + '","timestamp":"' + _timestamp() + '"}\n').encode()
    unit = b"2026-11-24T05:00:00Z INFO build step ok: compiled module without warnings\\n"
    chunk = unit * ((1 << 20) // len(unit))
    remaining = max(0, total - len(head) - len(tail))
    sim.raw(head)
    while remaining > 0:
        if remaining >= len(chunk):
            piece = chunk
        else:  # the last piece: whole units, then dots up to the exact size
            piece = unit * (remaining // len(unit))
            piece += b"." * (remaining - len(piece))
        sim.raw(piece)
        remaining -= len(piece)
    sim.raw(tail)
    sim.message(Msg([("text", sim.done_text)], 1200, 300, 5000, 9))
    return sim.result()


def _garbage(sim: Sim) -> int:
    junk = [
        b"\xff\xfe\x80 binary noise \xc3\x28\xa0\xa1 not utf-8 \xf0\x28\x8c\xbc\n",
        b"npm WARN deprecated something@1.0.0: this line is not JSON\n",
        b"{\"type\":\"assistant\",\"message\":{oops this is not json\n",
        os.urandom(64).replace(b"\n", b"\xff") + b"\xff\n",
        b"\n",
        b"[1] 12345 Segmentation fault (not really)\n",
    ]
    noise = iter(junk * 4)
    sim.raw(next(noise))
    for msg in tool_use_msgs(sim.done_text):
        for call in sim.message(msg):
            sim.raw(next(noise))
            sim.tool_result(*call)
        sim.raw(next(noise))
    sim.raw(next(noise))
    return sim.result()


def _truncated(sim: Sim) -> int:
    cut = sim.assistant_event(_api_id("msg"), {"type": "text", "text": "This message will never be finished."},
                              {"input_tokens": 999, "output_tokens": 1, "cache_creation_input_tokens": 0,
                               "cache_read_input_tokens": 0})
    line = _dumps(cut)
    sim.raw(line[: line.index(b'"content"') + 20] + b"\n")
    return sim.conversation(tool_use_msgs(sim.done_text))


def _spawn_child(sim: Sim) -> int:
    import subprocess

    code = "import time\nwhile True: time.sleep(3600)\n"
    if os.environ.get("AGENT_SIM_CHILD_IGNORE_TERM") == "1":
        code = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + code
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
    sim.system("agent_sim_child", pid=child.pid)
    _sleep_forever()
    return 0


def _flaky(sim: Sim) -> int:
    path = os.environ.get("AGENT_SIM_STATE_FILE")
    if not path:
        sys.stderr.write("agent-sim: scenario flaky needs AGENT_SIM_STATE_FILE\n")
        return 2
    try:
        with open(path, encoding="utf-8") as f:
            attempts = int(f.read().strip() or 0)
    except (OSError, ValueError):
        attempts = 0
    attempts += 1
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{attempts}\n")
    if attempts <= _env_int("AGENT_SIM_FAIL_TIMES", 1):
        return sim.api_error(529, _env_int("AGENT_SIM_RETRIES", 1))
    return sim.conversation(tool_use_msgs(sim.done_text))


def _expensive(sim: Sim) -> int:
    turns = max(1, _env_int("AGENT_SIM_TURNS", 10))
    tokens = _env_int("AGENT_SIM_TOKENS", 100_000)
    msgs = [Msg([("text", f"Step {k + 1}."), _bash(f"echo step {k + 1}", f"step {k + 1}", "Step")],
                tokens, 0, 0, 500) for k in range(turns - 1)]
    msgs.append(Msg([("text", sim.done_text)], tokens, 0, 0, 500))
    return sim.conversation(msgs)


def run_scenario(name: str, opts: Options) -> int:
    """Run scenario ``name`` and return the exit status (before AGENT_SIM_EXIT)."""
    if name == "quiet-exit":
        return 0
    if name == "silent":
        _sleep_forever()
    if name == "hang-ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    default_delay = {"slow": 0.2, "expensive": 0.1}.get(name, 0.0)
    sim = Sim(opts, delay=_env_float("AGENT_SIM_DELAY", default_delay))
    sim.init()
    if name in ("hang", "hang-ignore-term"):
        _sleep_forever()
    if name == "ok":
        return sim.conversation([Msg([("text", sim.done_text)], 800, 0, 4000, 20)])
    if name in ("tool-use", "slow"):
        return sim.conversation(tool_use_msgs(sim.done_text))
    if name == "multi-tool":
        return sim.conversation(multi_tool_msgs(_env_int("AGENT_SIM_TURNS", 5), sim.done_text))
    if name == "crash":
        for call in sim.message(tool_use_msgs(sim.done_text)[0]):
            sim.tool_result(*call)
        sys.stderr.write("agent-sim: simulated crash (uncaught exception in the agent loop)\n")
        sys.stderr.flush()
        return 3
    if name.startswith("api-"):
        return sim.api_error(int(name[4:]), _env_int("AGENT_SIM_RETRIES", 1))
    return {
        "garbage": _garbage, "huge-line": _huge_line, "truncated": _truncated, "expensive": _expensive,
        "flood": _flood, "spawn-child": _spawn_child, "flaky": _flaky,
    }[name](sim)


_HELP = """Usage: claude [options] [prompt]

agent-sim: a simulated Claude Code for demos and tests (orchestrator-pex). No API calls are made.
Scenario from AGENT_SIM_SCENARIO: {scenarios}.
"""


def _read_stdin_prompt() -> str | None:
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return None
        data = sys.stdin.buffer.read()
    except (OSError, ValueError):
        return None
    text = data.decode("utf-8", "replace").strip()
    return text or None


def version_line(dialect: str = "claude") -> str:
    """What ``--version`` prints in ``dialect`` (``claude``, ``codex``, ``gemini``)."""
    if dialect == "claude":
        return VERSION_LINE
    from orchestrator_pex.agent_sim_dialects import VERSIONS

    return VERSIONS[dialect]


def main(argv: list[str]) -> int:
    """Entry point: parse Claude Code's argv (or, after ``--dialect codex|gemini``, that CLI's), run the scenario."""
    if argv[:1] == ["--dialect"] and len(argv) > 1 and argv[1] in ("codex", "gemini"):
        from orchestrator_pex import agent_sim_dialects

        return agent_sim_dialects.main(argv[1], list(argv[2:]))
    try:
        opts = parse_argv(list(argv))
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    if opts.version:
        sys.stdout.write(VERSION_LINE + "\n")
        return 0
    scenario = os.environ.get("AGENT_SIM_SCENARIO", "tool-use") or "tool-use"
    if opts.help:
        sys.stdout.write(_HELP.format(scenarios=", ".join(SCENARIOS)))
        return 0
    if scenario not in SCENARIOS:
        sys.stderr.write(f"agent-sim: unknown AGENT_SIM_SCENARIO {scenario!r}; known: {', '.join(SCENARIOS)}\n")
        return 2
    if opts.print_mode and opts.output_format == "stream-json" and not opts.verbose:
        sys.stderr.write("Error: When using --print, --output-format=stream-json requires --verbose\n")
        return 1
    if opts.prompt is None:
        opts.prompt = _read_stdin_prompt()
        if opts.prompt is None:
            sys.stderr.write("Error: Input must be provided either through stdin or as a prompt argument "
                             "when using --print\n")
            return 1
    # Arguments may carry undecodable bytes (surrogateescape); keep the JSON valid UTF-8.
    opts.prompt = opts.prompt.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        status = run_scenario(scenario, opts)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        try:  # nobody reads any more: do not let the interpreter complain while flushing at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 1
    override = os.environ.get("AGENT_SIM_EXIT")
    if override:  # set and not empty
        try:
            return int(override)
        except ValueError:
            pass
    return status
