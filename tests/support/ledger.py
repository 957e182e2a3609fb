"""What an agent reader reports, as one dict: tests compare two readings of the same stream by it."""

from __future__ import annotations


def accounting_state(acct) -> dict:
    """Every figure a Claude Code :class:`~orchestrator_pex.accounting.Accounting` reports (callers add the counters
    their comparison needs, e.g. ``bad_lines`` or ``streamed()``)."""
    return {
        "tokens": acct.tokens(), "tools": dict(acct.tools), "model": acct.model, "session_id": acct.session_id,
        "num_turns": acct.num_turns, "result": acct.result_text, "is_error": acct.is_error,
        "api_error_status": acct.api_error_status, "result_seen": acct.result_seen, "cost": acct.cost_usd,
        "cost_source": acct.cost_source, "messages": acct.messages, "api_retries": acct.api_retries,
        "agent_version": acct.agent_version,
    }
