"""Model prices in US dollars per million tokens, used only to *estimate* cost.

The Claude Code ``result`` event carries its own ``total_cost_usd``; these prices are used while an instance is
running, for an instance that ended without a usable result cost (``cost_source = "estimate"``), and to check that
the result's cost is not below what its streamed usage costs (``cost_source = "stream"``; see accounting.py).
:func:`estimate_cost` is finite and non-negative for validated (non-negative, bounded) token counts.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple


class Price(NamedTuple):
    input: float
    output: float
    cache_write: float  # 5-minute cache creation
    cache_read: float


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
    """Dollar cost of ``tokens`` (keys ``input``, ``output``, ``cache_creation``, ``cache_read``) at ``model``'s price."""
    p = price_for(model)
    micro = (
        tokens.get("input", 0) * p.input
        + tokens.get("output", 0) * p.output
        + tokens.get("cache_creation", 0) * p.cache_write
        + tokens.get("cache_read", 0) * p.cache_read
    )
    return round(micro / 1_000_000, 6)
