"""The common base of the Codex and Gemini CLI readers: one line of JSON at a time into the normalized ledger.

A reader holds the accounting of one attempt. ``feed(line)`` parses one stdout line (bad JSON and non-objects are
counted in ``bad_lines`` and skipped; the raw log keeps them); subclasses implement ``handle(event)``. Every number
taken from an event goes through :mod:`orchestrator_pex.untrusted`: a value that is not a plausible count leaves the
current figure unchanged (never lowers it). Cost is an estimate from :mod:`orchestrator_pex.pricing`, priced per
model when the agent reports a per-model breakdown (``by_model``), else at ``model``'s price.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from orchestrator_pex import untrusted
from orchestrator_pex.pricing import estimate_cost

MAX_RESULT_TEXT = untrusted.MAX_TEXT


class Reader:
    """Normalized accounting of one attempt of a non-Claude agent (attributes read directly, like Accounting)."""

    def __init__(self, model: Optional[str] = None) -> None:
        self.input = self.output = self.cache_creation = self.cache_read = 0
        self.reasoning: Optional[int] = None
        self.tools: Dict[str, int] = {}
        self.model: Optional[str] = model
        self.models: List[str] = []
        self.by_model: Dict[str, Dict[str, int]] = {}
        self.session_id: Optional[str] = None
        self.num_turns: Optional[int] = None
        self.result_text: Optional[str] = None
        self.is_error = False
        self.api_error_status: Optional[int] = None
        self.result_seen = False
        self.result_cost: Optional[float] = None  # these agents report no money
        self.final_usage: Optional[Any] = None
        self.bad_lines = 0
        self.api_retries = 0
        self.messages = 0
        self.agent_version: Optional[str] = None

    def feed(self, line: bytes) -> bool:
        """Account one line (without its newline). Return False if the line was not usable JSON (it is skipped)."""
        if not line.strip():
            return True
        event = untrusted.json_object(line)
        if event is None:
            self.bad_lines += 1
            return False
        self.handle(event)
        return True

    def handle(self, event: Dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def count_tool(self, value: Any) -> None:
        tool = untrusted.name(value)
        if tool:
            self.tools[tool] = self.tools.get(tool, 0) + 1

    # -- totals ----------------------------------------------------------------------------------------------------

    @property
    def total_tokens(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read

    def tokens(self) -> Dict[str, int]:
        return {"input": self.input, "output": self.output, "cache_creation": self.cache_creation,
                "cache_read": self.cache_read}

    @property
    def cost_source(self) -> str:
        return "estimate"

    @property
    def cost_usd(self) -> float:
        if self.by_model:
            return round(sum(estimate_cost(m, t) for m, t in self.by_model.items()), 6)
        return estimate_cost(self.model, self.tokens())


def keep(current: int, value: Any) -> int:
    """``value`` if it is a plausible count, else ``current`` (an implausible value never lowers a figure)."""
    checked = untrusted.count(value)
    return current if checked is None else checked
