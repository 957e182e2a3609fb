"""Agent dialects: which coding-agent CLIs an instance can run, and what each one can honour.

One module per dialect holds that agent's headless argv builder and its stdout reader (:mod:`.claude`,
:mod:`.codex`, :mod:`.gemini`). This module is the registry: agent name -> :class:`Dialect`, plus what the batch
validator needs without importing a reader (the fields and permission modes each agent cannot honour).

Guarantees:

* every agent's reader presents the interface of :class:`orchestrator_pex.accounting.Accounting` that the runtime,
  scheduler, results and report use (``feed(line) -> bool``, ``tokens()``, ``total_tokens``, ``cost_usd``,
  ``cost_source``, ``tools``, ``model``, ``session_id``, ``num_turns``, ``result_text``, ``is_error``,
  ``api_error_status``, ``result_seen``, ``result_cost``), plus ``reasoning`` (``None`` when not reported),
  ``models`` (every model the agent reported using) and ``final_usage`` (the agent's own final usage object,
  verbatim, strict JSON, at most :data:`MAX_USAGE_BYTES` serialized, else ``None``);
* ``tokens()`` has the normalized schema of :data:`TOKEN_KEYS` for every agent: the four parts are disjoint, so
  their sum (``total_tokens``) never counts a token twice;
* a session name that is not a UUID maps to the same UUID everywhere (:func:`session_uuid`).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import attrs

AGENTS = ("claude", "codex", "gemini")
DEFAULT_AGENT = "claude"
#: disjoint parts of every reader's ``tokens()``; ``total`` is their sum
TOKEN_KEYS = ("input", "output", "cache_creation", "cache_read")
MAX_USAGE_BYTES = 16 * 1024

#: Fixed namespace of :func:`session_uuid` (= uuid5(NAMESPACE_URL, "https://orchestrator-pex/session-id")).
SESSION_NAMESPACE = uuid.UUID("611fec97-b734-5bfe-9d9b-068531cdd771")

#: Instance fields (after [defaults]) each agent cannot honour: setting one is a validation error for that agent.
UNSUPPORTED: Mapping[str, Tuple[str, ...]] = {
    "claude": (),
    "codex": ("allowed_tools", "disallowed_tools", "max_turns", "session_id", "append_system_prompt"),
    "gemini": ("disallowed_tools", "max_turns", "append_system_prompt"),
}
#: ``permission_mode`` values each agent has a counterpart for (see the per-agent tables in README.md).
PERMISSION_MODES: Mapping[str, Tuple[str, ...]] = {
    "claude": ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk"),
    "codex": ("default", "acceptEdits", "plan", "bypassPermissions"),
    "gemini": ("default", "acceptEdits", "plan", "bypassPermissions"),
}
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")  # fullmatch


def session_uuid(value: str) -> str:
    """``value`` itself if it is a UUID, else ``uuid5(SESSION_NAMESPACE, value)``: stable across runs and hosts."""
    if _UUID_RE.fullmatch(value):
        return value
    return str(uuid.uuid5(SESSION_NAMESPACE, value))


@attrs.frozen
class Dialect:
    """How to run one agent CLI headless and how to read what it prints."""

    name: str
    #: (executable argv prefix, instance with defaults applied) -> full argv
    argv: Callable[[Tuple[str, ...], Any], Tuple[str, ...]]
    #: (instance) -> environment additions the CLI needs headless (the instance's own env wins)
    headless_env: Callable[[Any], Dict[str, str]]
    #: (the instance's model, if set) -> a fresh reader for one attempt
    reader: Callable[[Optional[str]], Any]
    #: what to install, for the "executable not found" message
    install_hint: str
    #: what the CLI's own exit statuses mean, for a failed attempt's ``error`` when the stream says nothing
    exit_hints: Mapping[int, str] = attrs.field(factory=dict)


def dialect(name: str) -> Dialect:
    """The dialect of agent ``name`` (one of :data:`AGENTS`)."""
    if name == "claude":
        from orchestrator_pex.agents import claude as mod
    elif name == "codex":
        from orchestrator_pex.agents import codex as mod  # type: ignore[no-redef]  # one name, three modules
    elif name == "gemini":
        from orchestrator_pex.agents import gemini as mod  # type: ignore[no-redef]  # one name, three modules
    else:
        raise KeyError(name)
    return mod.DIALECT


def new_reader(agent: Optional[str], model: Optional[str] = None) -> Any:
    """A fresh reader for one attempt of ``agent``; Claude Code's for ``generic``, ``None`` or an unknown name."""
    if agent in ("codex", "gemini"):
        return dialect(agent).reader(model)
    from orchestrator_pex.agents.claude import ClaudeReader

    return ClaudeReader()


def verbatim(obj: Any) -> Optional[Any]:
    """``obj`` if it serializes as strict JSON (no NaN/Infinity) within :data:`MAX_USAGE_BYTES`, else ``None``."""
    if obj is None:
        return None
    try:
        size = len(json.dumps(obj, allow_nan=False, ensure_ascii=False))
    except (TypeError, ValueError):
        return None
    return obj if size <= MAX_USAGE_BYTES else None


def api_status_from_text(message: Optional[str]) -> Optional[int]:
    """The HTTP status an agent's error message names, or implies by its wording (None if neither).

    Used for Codex and Gemini CLI, which report API failures only as text (see tests/data/reference)."""
    if not message:
        return None
    found = _STATUS_RE.search(message)
    if found:
        status = int(found.group(1))
        if 400 <= status <= 599:
            return status
    lower = message.lower()
    for words, status in _STATUS_WORDS:
        if any(w in lower for w in words):
            return status
    return None


_STATUS_RE = re.compile(r'(?:\bstatus:?\s*|"code\\?"\s*:\s*|\bHTTP\s*)(\d{3})\b')
_STATUS_WORDS = (
    (("unauthorized", "unauthenticated", "api key not valid", "invalid api key", "incorrect api key"), 401),
    (("too many requests", "rate limit", "resource has been exhausted", "quota"), 429),
    (("overloaded", "high demand"), 503),
    (("internal error", "internal server error"), 500),
)
