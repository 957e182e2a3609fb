"""Tool specs as Claude Code reads them: every ``allowed_tools``/``disallowed_tools`` entry must be ONE tool.

Claude Code takes ``--allowedTools``/``--disallowedTools`` values and splits each of them into rules: at a comma or
at whitespace, except inside a parenthesis (``Bash(git diff:*)`` is one rule; the CLI tracks "inside a
parenthesis" with a flag, not a depth, so a nested or stray parenthesis ends the protection early). The
orchestrator joins an instance's entries with commas into one value, so an entry the CLI would split — ``"Read,
Bash"``, ``"Read Bash"``, ``"Bash(a(b) c)"`` — would smuggle several rules past a policy that looked at it as one.

:func:`problem` therefore accepts exactly the entries the CLI keeps whole and that name their tool unambiguously::

    NAME            NAME has no whitespace, comma or parenthesis (e.g. Read, mcp__github__get_issue)
    NAME(PATTERN)   PATTERN has no parenthesis; commas and spaces inside it are fine (Bash(git diff:*))

and :func:`base` is the tool an accepted entry names (what ``forbidden_tools`` is compared with).
"""

from __future__ import annotations

import re
from typing import Optional

_SPEC = re.compile(r"[^\s,()]+(?:\([^()]*\))?")


def problem(spec: str) -> Optional[str]:
    """Why ``spec`` is not one tool as Claude Code's CLI splits it, or None if it is."""
    if not spec:
        return "expected a tool name, got an empty string"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in spec):
        return "a tool name cannot hold control characters"
    if _SPEC.fullmatch(spec):
        return None
    return ("expected one tool, NAME or NAME(PATTERN): Claude Code splits entries at commas and whitespace outside "
            "a parenthesis, and a pattern cannot hold parentheses")


def base(spec: str) -> str:
    """The tool an entry names: ``Bash`` for ``Bash(git:*)``."""
    return spec.split("(", 1)[0].strip()
