"""Claude Code: its headless argv (``claude -p … --output-format stream-json --verbose``) and its reader.

The reader is :class:`orchestrator_pex.accounting.Accounting` (Claude's stream reader, kept where it is for now),
extended only to keep what the common agent interface adds: the ``result`` event's ``usage`` verbatim
(``final_usage``), the models of its ``modelUsage`` (``models``) and ``reasoning`` (Claude Code reports none:
``None``). Token mapping: ``input_tokens`` -> input, ``output_tokens`` -> output, ``cache_creation_input_tokens``
-> cache_creation, ``cache_read_input_tokens`` -> cache_read (Anthropic's four counts are already disjoint). Cost is
Claude's own ``total_cost_usd`` (``cost_source = "result"``).

A ``session_id`` or ``resume`` that is not a UUID (zen's ``"security_review_session"``) is passed as
:func:`orchestrator_pex.agents.session_uuid` of it: Claude Code accepts only UUIDs, and the same name always gives
the same UUID, so a later batch resuming the name finds the session.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from orchestrator_pex import untrusted
from orchestrator_pex.accounting import Accounting
from orchestrator_pex.agents import Dialect, session_uuid, verbatim


class ClaudeReader(Accounting):
    """:class:`Accounting` plus ``final_usage``, ``models`` and ``reasoning`` (always None for Claude Code)."""

    __slots__ = ("final_usage", "models", "reasoning")

    def __init__(self) -> None:
        super().__init__()
        self.final_usage: Optional[Dict[str, Any]] = None
        self.models: List[str] = []
        self.reasoning: Optional[int] = None

    def _result(self, event: Dict[str, Any]) -> None:
        super()._result(event)
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.final_usage = verbatim(usage)
        models = event.get("modelUsage")
        if isinstance(models, dict):
            self.models = sorted(n for n in (untrusted.name(m) for m in models) if n)


def claude_argv(agent: Tuple[str, ...], inst: Any, forbidden: Sequence[str] = ()) -> Tuple[str, ...]:
    """Claude Code's headless argv for ``inst``. The prompt goes right after ``-p`` unless it looks like an option.
    ``forbidden`` (the site policy's ``forbidden_tools``) is added to the instance's ``--disallowedTools``."""
    prompt = inst.prompt or ""
    argv = [*agent, "-p"]
    if not prompt.startswith("-"):
        argv.append(prompt)
    argv += ["--output-format", "stream-json", "--verbose"]
    if inst.model:
        argv += ["--model", inst.model]
    if inst.permission_mode:
        argv += ["--permission-mode", inst.permission_mode]
    if inst.max_turns:
        argv += ["--max-turns", str(inst.max_turns)]
    if inst.session_id:
        argv += ["--session-id", session_uuid(inst.session_id)]
    if inst.resume:
        argv += ["--resume", session_uuid(inst.resume)]
    if inst.append_system_prompt:
        argv += ["--append-system-prompt", inst.append_system_prompt]
    if inst.allowed_tools:
        argv += ["--allowedTools", ",".join(inst.allowed_tools)]
    disallowed = list(dict.fromkeys([*(inst.disallowed_tools or ()), *forbidden]))  # the policy's merged in
    if disallowed:
        argv += ["--disallowedTools", ",".join(disallowed)]
    if prompt.startswith("-"):
        argv += ["--", prompt]
    return tuple(argv)


DIALECT = Dialect(
    name="claude", argv=claude_argv, headless_env=lambda inst: {}, reader=lambda model: ClaudeReader(),
    install_hint="install Claude Code, put `claude` on PATH, or give its path with --claude PATH or `claude =`",
)
