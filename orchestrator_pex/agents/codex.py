"""Codex CLI: its headless argv (``codex exec --json``) and its reader of the JSONL it prints.

Argv: ``codex exec --json --skip-git-repo-check [-m MODEL] [sandbox flags] [gateway -c …] [resume ID] [--] PROMPT``
(stdin is /dev/null, as for every instance). ``permission_mode`` maps to Codex's sandbox: ``plan`` ->
``--sandbox read-only``, ``acceptEdits`` -> ``--sandbox workspace-write``, ``bypassPermissions`` ->
``--dangerously-bypass-approvals-and-sandbox``, ``default`` -> nothing (Codex's own default). ``exec`` never asks
for approval. Gateway: Codex ignores ``OPENAI_BASE_URL``; when the instance's ``env`` sets it, the argv configures
a model provider ``orchestrator`` with that ``base_url``, ``env_key = "OPENAI_API_KEY"`` and
``wire_api = "responses"``.

Reading (checked against codex-cli 0.171.0, tests/data/reference/codex-0.171.0): ``thread.started.thread_id`` is the
session id; ``turn.completed.usage`` is the thread's *running total* (codex-rs exec fills it from
``total_token_usage``), so each one replaces the figures, never adds to them. After ``exec resume`` the running
total includes the thread's earlier sessions (checked with 0.171.0): recorded as reported (overstated, never
understated). Its fields overlap: ``input_tokens``
includes ``cached_input_tokens`` and ``cache_write_input_tokens``; ``output_tokens`` includes
``reasoning_output_tokens``. Normalized: input = input_tokens - cached - cache_write, cache_read = cached,
cache_creation = cache_write, output = output_tokens, reasoning = reasoning_output_tokens (a part of output); so
total = input_tokens + output_tokens, each token once. The usage object is kept verbatim (``final_usage``).
``turn.failed`` and ``error`` carry only text: the HTTP status is read from it
(:func:`orchestrator_pex.agents.api_status_from_text`). Tools are counted per completed item: ``command_execution``,
``file_change``, ``web_search``, and ``mcp__SERVER__TOOL`` for MCP calls. ``num_turns`` counts ``turn.started``.
Codex reports no model and no money: ``model`` is the instance's ``model`` (if set) and the cost is an estimate.

Speed: ``item.*`` lines in the CLI's own key order are read without parsing — a completed tool item by an anchored
match of its leading structure (unescaped quotes can only be JSON structure), ``item.started``/``item.updated``
skipped — when the line has exactly the two ``"type"`` keys and the one ``"item"`` key of that structure and no
``\\u`` escape, so that :func:`json.loads` of it (if it is JSON) gives the same event; every other line goes through
:func:`orchestrator_pex.untrusted.json_object` (exactly :func:`json.loads`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional, Tuple

from orchestrator_pex import untrusted
from orchestrator_pex.agents import Dialect, api_status_from_text, verbatim
from orchestrator_pex.agents.reading import Reader, keep

PROVIDER = "orchestrator"
_SANDBOX = {
    "plan": ("--sandbox", "read-only"),
    "acceptEdits": ("--sandbox", "workspace-write"),
    "bypassPermissions": ("--dangerously-bypass-approvals-and-sandbox",),
    "default": (),
}
_TOOL_ITEMS = ("command_execution", "file_change", "web_search")
_ITEM_TOOL = re.compile(
    rb'\{"type":"item\.completed","item":\{"id":"[^"\\]*","type":"(command_execution|file_change|web_search)"'
)
_SKIP = (b'{"type":"item.started"', b'{"type":"item.updated"')
_USAGE_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens",
                 "reasoning_output_tokens")


def codex_argv(agent: Tuple[str, ...], inst: Any) -> Tuple[str, ...]:
    argv = [*agent, "exec", "--json", "--skip-git-repo-check"]
    if inst.model:
        argv += ["-m", inst.model]
    if inst.permission_mode:
        argv += _SANDBOX[inst.permission_mode]
    base_url = (inst.env or {}).get("OPENAI_BASE_URL")
    if base_url:
        table = f"model_providers.{PROVIDER}"
        argv += ["-c", f"model_provider={json.dumps(PROVIDER)}",
                 "-c", f"{table}.name={json.dumps(PROVIDER)}",
                 "-c", f"{table}.base_url={json.dumps(base_url)}",
                 "-c", f'{table}.env_key="OPENAI_API_KEY"',
                 "-c", f'{table}.wire_api="responses"']
    if inst.resume:
        argv += ["resume", inst.resume]
    argv += ["--", inst.prompt or ""]
    return tuple(argv)


class CodexReader(Reader):
    """Accounting of one ``codex exec --json`` run."""

    def __init__(self, model: Optional[str] = None) -> None:
        super().__init__(model)
        self.models = [model] if model else []
        self._usage: Dict[str, int] = {k: 0 for k in _USAGE_FIELDS}
        self._last_error: Optional[str] = None

    def feed(self, line: bytes) -> bool:
        # Read without a parse only when json.loads must agree: exactly the two "type" keys and the one "item" key of
        # the matched structure (a later duplicate would win in json.loads) and no \u escape (no disguised key).
        if (line.startswith(b'{"type":"item.') and line.endswith(b"}") and line.count(b'"type"') == 2
                and line.count(b'"item"') == 1 and (b"\\" not in line or b"\\u" not in line)):
            found = _ITEM_TOOL.match(line)
            if found is not None:
                tool = found.group(1).decode()
                self.tools[tool] = self.tools.get(tool, 0) + 1
                return True
            if line.startswith(_SKIP):
                return True
        return super().feed(line)

    def handle(self, event: Dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "item.completed":
            item = event.get("item")
            if not isinstance(item, dict):
                return
            what = item.get("type")
            if what == "agent_message":
                self.result_text = untrusted.text(item.get("text")) or self.result_text
            elif what in _TOOL_ITEMS:
                self.count_tool(what)
            elif what == "mcp_tool_call":
                self.count_tool(f"mcp__{untrusted.name(item.get('server'))}__{untrusted.name(item.get('tool'))}")
        elif kind == "turn.completed":
            self.messages += 1
            self.result_seen = True
            self.is_error = False
            self.api_error_status = None
            usage = event.get("usage")
            if isinstance(usage, dict):
                self._take_usage(usage)
        elif kind == "turn.started":
            self.num_turns = (self.num_turns or 0) + 1
        elif kind == "thread.started":
            self.session_id = untrusted.name(event.get("thread_id")) or self.session_id
        elif kind == "turn.failed":
            error = event.get("error")
            message = untrusted.text(error.get("message")) if isinstance(error, dict) else None
            message = message or self._last_error or "turn failed"
            self.result_seen = True
            self.is_error = True
            self.result_text = message
            self.api_error_status = api_status_from_text(message) or api_status_from_text(self._last_error)
        elif kind == "error":
            message = untrusted.text(event.get("message"))
            if message:
                self._last_error = message
                if "reconnecting" in message.lower() or "retrying" in message.lower():
                    self.api_retries += 1

    def _take_usage(self, usage: Dict[str, Any]) -> None:
        raw = self._usage
        for key in _USAGE_FIELDS:
            raw[key] = keep(raw[key], usage.get(key))
        cached, written = raw["cached_input_tokens"], raw["cache_write_input_tokens"]
        self.input = max(0, raw["input_tokens"] - cached - written)
        self.cache_read = cached
        self.cache_creation = written
        self.output = raw["output_tokens"]
        if untrusted.count(usage.get("reasoning_output_tokens")) is not None or self.reasoning is not None:
            self.reasoning = raw["reasoning_output_tokens"]
        self.final_usage = verbatim(usage)


DIALECT = Dialect(
    name="codex", argv=codex_argv, headless_env=lambda inst: {}, reader=CodexReader,
    install_hint="install Codex CLI (npm @openai/codex), put `codex` on PATH, or give its path with --codex PATH "
                 "or `codex =`",
)
