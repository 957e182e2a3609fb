"""The common base of the Codex and Gemini CLI readers: one line of JSON at a time into the normalized ledger.

A reader holds the accounting of one attempt. ``feed(line)`` parses one stdout line (bad JSON and non-objects are
counted in ``bad_lines`` and skipped; the raw log keeps them); subclasses implement ``handle(event)``. Every number
taken from an event goes through :mod:`orchestrator_pex.untrusted`: a value that is not a plausible count leaves the
current figure unchanged (never lowers it). Cost is an estimate from :mod:`orchestrator_pex.pricing`, priced per
model when the agent reports a per-model breakdown (``by_model``), else at ``model``'s price; the totals and the
plain estimate come from :class:`orchestrator_pex.accounting.Ledger`, the same code as Claude Code's accounting.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from orchestrator_pex import untrusted
from orchestrator_pex.accounting import Ledger
from orchestrator_pex.pricing import estimate_cost

MAX_RESULT_TEXT = untrusted.MAX_TEXT


class Reader(Ledger):
    """Normalized accounting of one attempt of a non-Claude agent (attributes read directly, like Accounting); its
    totals and estimate are :class:`~orchestrator_pex.accounting.Ledger`'s, shared with Claude Code's."""

    def __init__(self, model: Optional[str] = None) -> None:
        super().__init__(model)  # what every reader reports (result_cost stays None: these agents report no money)
        self.reasoning: Optional[int] = None
        self.models: List[str] = []
        self.by_model: Dict[str, Dict[str, int]] = {}
        self.final_usage: Optional[Any] = None

    def feed(self, line: bytes) -> bool:
        """Account one line (without its newline). Return False if the line was not usable JSON (it is skipped)."""
        if not line or line.isspace():  # blank (``not line.strip()`` without copying the line)
            return True
        return self.handle_json(line)

    def count_tool(self, value: Any) -> None:
        tool = untrusted.name(value)
        if tool:
            self.tools[tool] = self.tools.get(tool, 0) + 1

    # -- totals (total_tokens, tokens(), cost_source "estimate": accounting.Ledger) ---------------------------------

    @property
    def cost_usd(self) -> float:
        """Estimated: per model when the agent reported a per-model breakdown, else at ``model``'s price."""
        if self.by_model:
            return round(sum(estimate_cost(m, t) for m, t in self.by_model.items()), 6)
        return self.estimate()


def keep(current: int, value: Any) -> int:
    """``value`` if it is a plausible count, else ``current`` (an implausible value never lowers a figure)."""
    checked = untrusted.count(value)
    return current if checked is None else checked
