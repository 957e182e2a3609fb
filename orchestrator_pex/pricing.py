"""Model prices in US dollars per million tokens, used only to *estimate* cost.

The Claude Code ``result`` event carries its own ``total_cost_usd``; these prices are used while an instance is
running, for an instance that ended without a usable result cost (``cost_source = "estimate"``), and to check that
the result's cost is not below what its streamed usage costs (``cost_source = "stream"``; see accounting.py).
:func:`estimate_cost` is finite and non-negative for validated (non-negative, bounded) token counts. Codex CLI and
Gemini CLI report no money: their cost is always this estimate. The table is versioned (:data:`PRICING_VERSION`,
recorded in every results document); a change of any price changes the version. OpenAI and Google charge no cache
write surcharge: their ``cache_write`` is the input price. Reasoning/thinking tokens are output tokens.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple


class Price(NamedTuple):
    input: float
    output: float
    cache_write: float  # 5-minute cache creation
    cache_read: float


#: The version of this table, recorded as ``pricing_version`` in results.
PRICING_VERSION = "2026-11-29"

# Most specific prefix first; matched against the model id the CLI reports.
_PRICES = (
    ("claude-opus-4-5", Price(5.0, 25.0, 6.25, 0.50)),
    ("claude-opus-4", Price(15.0, 75.0, 18.75, 1.50)),
    ("claude-opus", Price(5.0, 25.0, 6.25, 0.50)),
    ("claude-sonnet", Price(3.0, 15.0, 3.75, 0.30)),
    ("claude-3-7-sonnet", Price(3.0, 15.0, 3.75, 0.30)),
    ("claude-3-5-sonnet", Price(3.0, 15.0, 3.75, 0.30)),
    ("claude-haiku-4", Price(1.0, 5.0, 1.25, 0.10)),
    ("claude-3-5-haiku", Price(0.80, 4.0, 1.0, 0.08)),
    ("claude-haiku", Price(1.0, 5.0, 1.25, 0.10)),
    # OpenAI (Codex CLI)
    ("gpt-5-mini", Price(0.25, 2.0, 0.25, 0.025)),
    ("gpt-5-nano", Price(0.05, 0.40, 0.05, 0.005)),
    ("gpt-5", Price(1.25, 10.0, 1.25, 0.125)),
    ("codex-mini", Price(1.50, 6.0, 1.50, 0.375)),
    ("o4-mini", Price(1.10, 4.40, 1.10, 0.275)),
    ("gpt-4.1-mini", Price(0.40, 1.60, 0.40, 0.10)),
    ("gpt-4.1", Price(2.0, 8.0, 2.0, 0.50)),
    # Google (Gemini CLI); the pro tiers at their prices for prompts above 200k tokens (never understated)
    ("gemini-2.5-flash-lite", Price(0.10, 0.40, 0.10, 0.025)),
    ("gemini-2.5-flash", Price(0.30, 2.50, 0.30, 0.075)),
    ("gemini-2.5-pro", Price(2.50, 15.0, 2.50, 0.625)),
    ("gemini-3-pro", Price(4.0, 18.0, 4.0, 0.40)),
)
#: Used for a model the table does not know: the most expensive current tier, so an estimate never understates.
FALLBACK = Price(15.0, 75.0, 18.75, 1.50)


def price_for(model: str | None) -> Price:
    if model:
        for prefix, price in _PRICES:
            if model.startswith(prefix):
                return price
    return FALLBACK


def estimate_cost(model: str | None, tokens: Mapping[str, int]) -> float:
    """Dollar cost of ``tokens`` (keys ``input``, ``output``, ``cache_creation``, ``cache_read``) at ``model``'s
    price."""
    p = price_for(model)
    micro = (
        tokens.get("input", 0) * p.input
        + tokens.get("output", 0) * p.output
        + tokens.get("cache_creation", 0) * p.cache_write
        + tokens.get("cache_read", 0) * p.cache_read
    )
    return round(micro / 1_000_000, 6)


#: Model aliases the agent CLIs resolve themselves (Claude Code: ``--model sonnet``); known without a price entry.
ALIASES = ("default", "sonnet", "opus", "haiku", "opusplan", "sonnet[1m]", "opus[1m]")


def is_known(model: str) -> bool:
    """Is ``model`` in the price table (by prefix) or an alias? ``validate`` and ``run`` warn about other names."""
    return model in ALIASES or any(model.startswith(prefix) for prefix, _ in _PRICES)
