"""The orchestrator driving the real Codex CLI 0.171.0 (from npm) against the mock OpenAI Responses API.

The oracle is Codex itself: each record's tokens must equal, in the orchestrator's disjoint schema, the usage
Codex printed in its own final ``turn.completed`` event (and ``agent_usage`` must be that object verbatim); thread
id, tools and failures likewise. Absolute values pin the mock + CLI behaviour of tests/data/reference/codex-0.171.0.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

TOOL = {"input": 700, "output": 42, "cache_creation": 200, "cache_read": 1200, "total": 2142}
TEXT = {"input": 800, "output": 40, "cache_creation": 100, "cache_read": 300, "total": 1240}


@pytest.fixture(scope="module")
def codex_run(e2e, codex_bin, mock_openai_api, run_orchestrator, tmp_path_factory):
    return e2e.run_agent_batch(
        run_orchestrator, mock_openai_api, e2e.codex_instance, tmp_path_factory.mktemp("codex"), "codex", codex_bin,
        {"timeout": 120, "model": "gpt-5-codex"},
        [
            ("tool", "Run the shell command `echo tool-ran` and tell me what it printed.", {}),
            ("text", "say hello [mock:text]", {}),
            ("rate-limited", "anything [mock:429]", {"retries": 1}),
            ("unauthorized", "anything [mock:401]", {"retries": 1}),  # last: a 401 stops further launches
        ],
    )


def test_codex_numbers_equal_what_codex_reported(e2e, codex_run):
    records = codex_run.records
    for name, expected in (("tool", TOOL), ("text", TEXT)):
        record = records[name]
        assert record["status"] == "succeeded", codex_run.explain()
        assert record["agent"] == "codex"
        said = e2e.codex_report(e2e.read_events(codex_run.log_path(record)))
        assert record["tokens"] == e2e.normalized_codex(said["usage"]) == expected
        assert record["agent_usage"] == said["usage"]
        assert record["reasoning_tokens"] == said["usage"]["reasoning_output_tokens"]
        assert record["session_id"] == said["thread_id"]
        assert record["tools"] == said["tools"]
        assert record["cost_source"] == "estimate" and record["cost_usd"] > 0
        assert record["model"] == "gpt-5-codex"
    assert records["tool"]["tools"] == {"command_execution": 1}
    assert records["tool"]["result"] == "The command printed tool-ran."


def test_codex_api_errors_are_typed_and_retried(e2e, codex_run):
    records = codex_run.records
    limited = records["rate-limited"]
    assert limited["status"] == "api-error" and limited["api_error_status"] == 429
    assert limited["attempts"] == 2  # transient: the orchestrator retried once
    said = e2e.codex_report(e2e.read_events(codex_run.log_path(limited)))
    assert said["attempts_seen"] == 2 and "429" in said["failure"]
    denied = records["unauthorized"]
    assert denied["status"] == "api-error" and denied["api_error_status"] == 401
    assert denied["attempts"] == 1  # never retried
    assert codex_run.code == 1
    posts = [r for r in codex_run.mock_records if r.get("method") == "POST"]
    assert {r["path"] for r in posts} == {"/v1/responses"}
    assert all(r["has_api_key"] for r in posts)


def test_codex_ledger_and_versions(codex_run):
    doc = codex_run.doc
    assert doc["agent_versions"] == {"codex": "codex-cli 0.171.0"}
    assert doc["totals"]["tokens"]["total"] == TOOL["total"] + TEXT["total"]
