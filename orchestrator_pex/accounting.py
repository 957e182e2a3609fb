"""Accounting from Claude Code ``stream-json``: tokens, cost, tools, model, session, turns, result.

Rules the real CLI forces (see the transcripts of Claude Code 2.1.330):

* one API message arrives as several ``assistant`` events sharing ``message.id``, each repeating the usage of
  ``message_start``: usage is counted once per message id, tools once per ``tool_use`` block;
* the ``result`` event carries the authoritative totals and ``total_cost_usd``: once it arrives they replace the
  running estimate (``cost_source = "result"``); without it the cost is estimated from per-message usage and the
  pricing table (``cost_source = "estimate"``);
* ``is_error`` with ``api_error_status`` marks an API failure (401, 429, 529, 5xx).

Speed: only what accounting needs is parsed. ``assistant`` lines in the CLI's own key order are read with a few
anchored byte searches (a tool name, the usage object of a new message); ``user`` and ``stream_event`` lines are
skipped unparsed; any other layout falls back to :func:`json.loads`. Unescaped ``"type":"tool_use"`` can only be
JSON structure (quotes inside strings are escaped), which is what makes the byte searches sound.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional

from orchestrator_pex.pricing import estimate_cost

_STR = rb'([^"\\]*)"'  # ids, model and tool names: a string with an escape in it takes the slow path
# The CLI's own layout of an assistant event, up to the name of a first tool_use block if there is one.
_ASSISTANT_HEAD = re.compile(
    rb'\{"type":"assistant","message":\{"id":"' + _STR + rb',"type":"message","role":"assistant","model":"' + _STR
    + rb',"content":\[(?:\{"type":"tool_use","id":"[^"\\]*","name":"' + _STR + rb')?'
)
_TOOL_USE = b'"type":"tool_use"'
_USAGE_KEY = b'"usage":{'
_API_ERROR = b'"api_error_status"'
_USAGE_FLAT = re.compile(
    rb'"usage":\{"input_tokens":(\d+),"output_tokens":(\d+),"cache_creation_input_tokens":(\d+),'
    rb'"cache_read_input_tokens":(\d+)[,}]'
)
_USAGE_OBJ = re.compile(rb'"usage":(\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\})')
_RECENT_IDS = 16  # message ids remembered for de-duplication (events of one message are adjacent in practice)

TOKEN_KEYS = ("input", "output", "cache_creation", "cache_read")


class Accounting:
    """The accounting of one attempt of one instance, fed one stdout line at a time.

    Attributes are read directly by the runtime and the report (this is the hot path; no properties).
    """

    __slots__ = (
        "input", "output", "cache_creation", "cache_read", "tools", "model", "session_id", "num_turns",
        "result_text", "is_error", "api_error_status", "result_seen", "result_cost", "bad_lines", "api_retries",
        "messages", "_recent", "agent_version", "_model_raw", "_names",
    )

    def __init__(self) -> None:
        self.input = self.output = self.cache_creation = self.cache_read = 0
        self.tools: Dict[str, int] = {}
        self.model: Optional[str] = None
        self.session_id: Optional[str] = None
        self.num_turns: Optional[int] = None
        self.result_text: Optional[str] = None
        self.is_error = False
        self.api_error_status: Optional[int] = None
        self.result_seen = False
        self.result_cost: Optional[float] = None
        self.bad_lines = 0
        self.api_retries = 0
        self.messages = 0
        self._recent: list = []
        self._model_raw = b""  # the model bytes last decoded (decode once per change, not per line)
        self._names: Dict[bytes, str] = {}  # tool names decoded once
        self.agent_version: Optional[str] = None

    # -- reading ---------------------------------------------------------------------------------------------------

    def feed(self, line: bytes) -> bool:
        """Account one line (without its newline). Return False if the line was not usable JSON (it is skipped)."""
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(b'{"type":"assistant"'):
            head = _ASSISTANT_HEAD.match(line)
            if head is not None and line.endswith(b"}"):
                return self._fast_assistant(line, head)
        elif line.startswith(b'{"type":"user"') or line.startswith(b'{"type":"stream_event"'):
            if line.endswith(b"}"):
                return True
            self.bad_lines += 1
            return False
        if not line.strip():
            return True
        try:
            event = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self.bad_lines += 1
            return False
        if not isinstance(event, dict):
            self.bad_lines += 1
            return False
        self.handle(event)
        return True

    def _fast_assistant(self, line: bytes, head: "re.Match[bytes]") -> bool:
        message_id, model, tool = head.groups()
        if line.count(_TOOL_USE) != (tool is not None):  # a tool_use block elsewhere, or several: parse fully
            return self._slow(line)
        at = line.rfind(_USAGE_KEY)
        if line.find(_API_ERROR, at) >= 0 or model == b"<synthetic>":  # error events: rare, parse fully
            return self._slow(line)
        recent = self._recent
        if message_id not in recent:
            usage = _USAGE_FLAT.match(line, at)
            if usage is not None:
                i, o, cc, cr = usage.groups()
            else:
                obj = _USAGE_OBJ.match(line, at)
                if obj is None:
                    return self._slow(line)
                u = json.loads(obj.group(1))
                i, o, cc, cr = (u.get("input_tokens"), u.get("output_tokens"), u.get("cache_creation_input_tokens"),
                                u.get("cache_read_input_tokens"))
            recent.append(message_id)
            if len(recent) > _RECENT_IDS:
                del recent[0]
            self.messages += 1
            if not self.result_seen:
                self.input += int(i or 0)
                self.output += int(o or 0)
                self.cache_creation += int(cc or 0)
                self.cache_read += int(cr or 0)
            if model != self._model_raw:
                self._model_raw = model
                self.model = model.decode("utf-8", "replace")
        if tool is not None:
            names = self._names
            name = names.get(tool)
            if name is None:
                name = names[tool] = tool.decode("utf-8", "replace")
            self.tools[name] = self.tools.get(name, 0) + 1
        return True

    def _slow(self, line: bytes) -> bool:
        try:
            event = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self.bad_lines += 1
            return False
        self.handle(event)
        return True

    def _new_message(self, message_id: Any, usage: Dict[str, Any]) -> None:
        self._recent.append(message_id)
        if len(self._recent) > _RECENT_IDS:
            del self._recent[0]
        self.messages += 1
        if not self.result_seen:
            self.input += _int(usage.get("input_tokens"))
            self.output += _int(usage.get("output_tokens"))
            self.cache_creation += _int(usage.get("cache_creation_input_tokens"))
            self.cache_read += _int(usage.get("cache_read_input_tokens"))

    def handle(self, event: Dict[str, Any]) -> None:
        """Account one parsed event (any key order)."""
        kind = event.get("type")
        if kind == "assistant":
            message = event.get("message")
            if not isinstance(message, dict):
                return
            for block in message.get("content") or ():
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    tool = str(block.get("name"))
                    self.tools[tool] = self.tools.get(tool, 0) + 1
            if event.get("api_error_status") is not None:
                self.api_error_status = _int(event.get("api_error_status")) or None
            message_id = message.get("id")
            if isinstance(message_id, str) and message_id.encode() not in self._recent:
                usage = message.get("usage")
                self._new_message(message_id.encode(), usage if isinstance(usage, dict) else {})
                if isinstance(message.get("model"), str) and message["model"] != "<synthetic>":
                    self.model = message["model"]
        elif kind == "result":
            self._result(event)
        elif kind == "system":
            subtype = event.get("subtype")
            if subtype == "init":
                self.session_id = event.get("session_id") or self.session_id
                self.model = self.model or event.get("model")
                self.agent_version = event.get("claude_code_version")
            elif subtype == "api_retry":
                self.api_retries += 1

    def _result(self, event: Dict[str, Any]) -> None:
        self.result_seen = True
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.input = _int(usage.get("input_tokens"))
            self.output = _int(usage.get("output_tokens"))
            self.cache_creation = _int(usage.get("cache_creation_input_tokens"))
            self.cache_read = _int(usage.get("cache_read_input_tokens"))
        cost = event.get("total_cost_usd")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            self.result_cost = float(cost)
        models = event.get("modelUsage")
        if isinstance(models, dict) and models:
            # The model that did the most output work is "the model used".
            self.model = max(models, key=lambda m: _int((models[m] or {}).get("outputTokens")))
        self.session_id = event.get("session_id") or self.session_id
        if isinstance(event.get("num_turns"), int):
            self.num_turns = event["num_turns"]
        if isinstance(event.get("result"), str):
            self.result_text = event["result"]
        self.is_error = bool(event.get("is_error"))
        status = event.get("api_error_status")
        if status is not None:
            self.api_error_status = _int(status) or None
        elif not self.is_error:
            self.api_error_status = None

    # -- totals ----------------------------------------------------------------------------------------------------

    @property
    def total_tokens(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read

    def tokens(self) -> Dict[str, int]:
        return {"input": self.input, "output": self.output, "cache_creation": self.cache_creation,
                "cache_read": self.cache_read}

    @property
    def cost_source(self) -> str:
        return "result" if self.result_cost is not None else "estimate"

    @property
    def cost_usd(self) -> float:
        if self.result_cost is not None:
            return self.result_cost
        return estimate_cost(self.model, self.tokens())


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
