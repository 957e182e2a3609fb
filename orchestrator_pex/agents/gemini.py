"""Gemini CLI: its headless argv (``gemini -p … --output-format stream-json``) and its reader.

Argv: ``gemini -p PROMPT --output-format stream-json [-m MODEL] [--approval-mode M] [--allowed-tools=T …]
[--session-id UUID] [--resume ID]`` (a prompt starting with ``-`` is passed as ``--prompt=PROMPT``).
``permission_mode`` maps to the approval mode: ``default`` -> ``default``, ``acceptEdits`` -> ``auto_edit``,
``plan`` -> ``plan``, ``bypassPermissions`` -> ``yolo``. ``session_id`` is passed as
:func:`orchestrator_pex.agents.session_uuid` of it (gemini 0.61.0 takes only a UUID there, like Claude Code);
``resume`` unchanged (``latest`` or an index, as the CLI documents).
Headless necessities: the orchestrator sets ``GEMINI_CLI_TRUST_WORKSPACE=true`` (unless the instance's ``env``
sets it), because an untrusted working directory makes the CLI exit; the *auth type* stays the operator's choice
(``security.auth.selectedType`` in ``$HOME/.gemini/settings.json``), since it decides which credentials are used —
without it the CLI exits 41, which the results explain.

Reading (checked against gemini 0.61.0, tests/data/reference/gemini-0.61.0): ``init`` has the session id and the
requested model (``auto`` = routed); ``message`` events with ``role: assistant`` are text deltas; ``tool_use`` names
a tool; the one ``result`` event carries ``status`` and ``stats``, the session's plain sums over every response,
overall and per model. There is no usage before ``result``. Fields overlap: ``input_tokens`` includes ``cached``
(``input`` = input_tokens - cached), ``output_tokens`` excludes thoughts, and ``total_tokens`` (the server's total)
also counts thoughts and tool-use prompt tokens, which stream-json does not break down. Normalized: input =
input_tokens - cached, cache_read = cached, cache_creation = 0, output = total_tokens - input_tokens (candidates +
thoughts + tool-use prompt: priced as output, so the estimate never understates), reasoning = None (not reported
separately); so total = total_tokens exactly. Cost is estimated per model from ``stats.models``; ``model`` is the
model with the most output, ``models`` all of them (the router model included). ``num_turns`` counts runs of
assistant messages. A ``result`` with ``status: "error"`` is an error; its message gives the HTTP status.

Speed: ``tool_use`` lines in the CLI's own key order are counted by an anchored match of their leading structure
(unescaped quotes can only be JSON structure) and ``tool_result`` lines skipped unparsed (the output of a tool is
not accounted), when the line has one ``"type"`` key, at most one ``"tool_name"`` key and no ``\\u`` escape, so that
:func:`json.loads` of it (if it is JSON) gives the same event; every other line goes through
:func:`orchestrator_pex.untrusted.json_object` (exactly :func:`json.loads`).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from orchestrator_pex import untrusted
from orchestrator_pex.agents import Dialect, api_status_from_text, session_uuid, verbatim
from orchestrator_pex.agents.reading import Reader

_TOOL_USE = re.compile(rb'\{"type":"tool_use","timestamp":"[^"\\]*","tool_name":"([^"\\]+)"')  # empty: not a tool
_APPROVAL = {"default": "default", "acceptEdits": "auto_edit", "plan": "plan", "bypassPermissions": "yolo"}
TRUST_ENV = "GEMINI_CLI_TRUST_WORKSPACE"
#: What the CLI's documented fatal exit statuses mean, for the results' ``error`` when nothing better is known.
EXIT_HINTS = {
    41: "Gemini CLI: authentication failed or no auth type selected (security.auth.selectedType in "
        "$HOME/.gemini/settings.json) (exit 41)",
    42: "Gemini CLI: bad input (exit 42)",
    52: "Gemini CLI: bad configuration (exit 52)",
    53: "Gemini CLI: turn limit reached (exit 53)",
    55: "Gemini CLI: the working directory is not trusted (GEMINI_CLI_TRUST_WORKSPACE=true) (exit 55)",
}


def gemini_argv(agent: Tuple[str, ...], inst: Any) -> Tuple[str, ...]:
    prompt = inst.prompt or ""
    argv = [*agent, *(("--prompt=" + prompt,) if prompt.startswith("-") else ("-p", prompt))]
    argv += ["--output-format", "stream-json"]
    if inst.model:
        argv += ["-m", inst.model]
    if inst.permission_mode:
        argv += ["--approval-mode", _APPROVAL[inst.permission_mode]]
    for tool in inst.allowed_tools or ():
        argv.append(f"--allowed-tools={tool}")
    if inst.session_id:
        argv += ["--session-id", session_uuid(inst.session_id)]
    if inst.resume:
        argv += ["--resume", inst.resume]
    return tuple(argv)


def _normalize(stats: Dict[str, Any]) -> Optional[Dict[str, int]]:
    """One stats object (overall or per model) as normalized tokens; None if its counts are not plausible."""
    total, prompt, output, cached = (untrusted.count(stats.get(k))
                                     for k in ("total_tokens", "input_tokens", "output_tokens", "cached"))
    if total is None or prompt is None or output is None:
        return None
    cached = min(cached or 0, prompt)
    return {"input": prompt - cached, "cache_read": cached, "cache_creation": 0,
            "output": max(output, total - prompt)}


class GeminiReader(Reader):
    """Accounting of one ``gemini --output-format stream-json`` run."""

    def __init__(self, model: Optional[str] = None) -> None:
        super().__init__(model)
        self._text: List[str] = []
        self._text_len = 0
        self._in_reply = False
        self._last_error: Optional[str] = None
        self._names: Dict[bytes, str] = {}

    def feed(self, line: bytes) -> bool:
        # Read without a parse only when json.loads must agree: one "type" key, at most one "tool_name" key (a later
        # duplicate would win in json.loads) and no \u escape (no disguised key).
        if (line.startswith(b'{"type":"tool_') and line.endswith(b"}") and line.count(b'"type"') == 1
                and line.count(b'"tool_name"') <= 1 and (b"\\" not in line or b"\\u" not in line)):
            if line.startswith(b'{"type":"tool_result"'):
                self._in_reply = False
                return True
            found = _TOOL_USE.match(line)
            if found is not None:
                self._in_reply = False
                raw = found.group(1)
                name = self._names.get(raw)
                if name is None:
                    name = self._names[raw] = untrusted.name(raw.decode("utf-8", "replace")) or "?"
                self.tools[name] = self.tools.get(name, 0) + 1
                return True
        return super().feed(line)

    def handle(self, event: Dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message":
            if event.get("role") != "assistant":
                self._in_reply = False
                return
            if not self._in_reply:
                self._in_reply = True
                self.num_turns = (self.num_turns or 0) + 1
                self._text, self._text_len = [], 0
            piece = untrusted.text(event.get("content"))
            if piece and self._text_len < untrusted.MAX_TEXT:
                if event.get("delta") is False:
                    self._text, self._text_len = [], 0
                self._text.append(piece)
                self._text_len += len(piece)
            return
        self._in_reply = False
        if kind == "tool_use":
            self.count_tool(event.get("tool_name"))
        elif kind == "result":
            self._result(event)
        elif kind == "init":
            self.session_id = untrusted.name(event.get("session_id")) or self.session_id
            model = untrusted.name(event.get("model"))
            if model and model != "auto" and not self.model:
                self.model = model
        elif kind == "error":
            self._last_error = untrusted.text(event.get("message")) or self._last_error

    def _result(self, event: Dict[str, Any]) -> None:
        self.result_seen = True
        self.messages += 1
        stats = event.get("stats")
        if isinstance(stats, dict):
            overall = _normalize(stats)
            if overall is not None:
                self.input, self.cache_read = overall["input"], overall["cache_read"]
                self.cache_creation, self.output = overall["cache_creation"], overall["output"]
            models = stats.get("models")
            if isinstance(models, dict):
                by_model = {}
                for raw_name, per in models.items():
                    name = untrusted.name(raw_name)
                    tokens = _normalize(per) if isinstance(per, dict) and name else None
                    if name and tokens is not None and sum(tokens.values()):
                        by_model[name] = tokens
                if by_model and overall is not None and sum(sum(t.values()) for t in by_model.values()) == \
                        sum(overall.values()):
                    self.by_model = by_model  # priced per model only when the breakdown adds up
                if by_model:
                    self.models = sorted(by_model)
                    self.model = max(by_model, key=lambda m: by_model[m]["output"])
            self.final_usage = verbatim(stats)
        if event.get("status") == "success":
            self.is_error = False
            self.api_error_status = None
            text = "".join(self._text)
            self.result_text = untrusted.text(text) if text else self.result_text
            return
        self.is_error = True
        error = event.get("error")
        message = untrusted.text(error.get("message")) if isinstance(error, dict) else None
        message = message or self._last_error or f"status {untrusted.name(event.get('status'))}"
        self.result_text = message
        self.api_error_status = api_status_from_text(message)


def _headless_env(inst: Any) -> Dict[str, str]:
    return {TRUST_ENV: "true"}


DIALECT = Dialect(
    name="gemini", argv=gemini_argv, headless_env=_headless_env, reader=GeminiReader,
    install_hint="install Gemini CLI (npm @google/gemini-cli), put `gemini` on PATH, or give its path with "
                 "--gemini PATH or `gemini =`",
    exit_hints=EXIT_HINTS,
)
