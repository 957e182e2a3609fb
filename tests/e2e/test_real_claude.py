"""The orchestrator driving the real Claude Code CLI 2.1.330 (from npm) against the mock Anthropic API.

The oracle for accounting is the CLI itself: every record's tokens, cost, turns, session, model and tools must equal
what the CLI printed in its own stream (``result`` events, summed over attempts; ``system/init`` model; tool_use
blocks by id) in the instance's stdout log. Absolute values pin the mock + CLI behaviour from the reference
transcripts (tests/data/reference/claude-code-2.1.330, a copy of ../shared/reference), so a changed CLI or mock shows
up as a failure too.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

# tokens (input, output, cache_creation, cache_read) and cost the mock + CLI 2.1.330 produce
TOOL_RUN = {"input": 2400, "output": 49, "cache_creation": 600, "cache_read": 10000, "total": 13049}
TEXT_RUN = {"input": 1200, "output": 9, "cache_creation": 300, "cache_read": 5000, "total": 6509}
THREE_TOOLS_RUN = {"input": 4800, "output": 129, "cache_creation": 1200, "cache_read": 20000, "total": 26129}
ZERO = {"input": 0, "output": 0, "cache_creation": 0, "cache_read": 0, "total": 0}


@pytest.fixture(scope="module")
def main_run(e2e, claude_bin, mock_api, run_orchestrator, tmp_path_factory):
    """One batch mixing tool use, plain text, several tool rounds, three models, a 529 and a timeout."""
    c = e2e
    work = tmp_path_factory.mktemp("main")
    homes = work / "homes"

    def inst(name, prompt, **kw):
        home = homes / name
        home.mkdir(parents=True)
        env = dict(kw.pop("env", {}), HOME=str(home))
        return {"name": name, "prompt": prompt, "env": env, **kw}

    batch = c.write_batch(
        work / "real.toml",
        {"claude": claude_bin},
        {"permission_mode": "acceptEdits", "allowed_tools": ["Bash"], "timeout": 120,
         "env": c.cli_base_env(mock_api.base_url)},
        [
            inst("tool-use", "run echo", model="claude-sonnet-4-5"),
            inst("plain-text", "say hello [mock:text]", model="claude-sonnet-4-5"),
            inst("three-tools", "run echo three times [mock:tools=3]", model="claude-sonnet-4-5"),
            inst("haiku-text", "say hello [mock:text]", model="claude-haiku-4-5"),
            inst("default-model", "run echo"),
            inst("overloaded", "anything [mock:529]", model="claude-sonnet-4-5", retries=1),
            inst("hangs-after-tool", "run echo [mock:hang_after=1]", model="claude-sonnet-4-5", timeout=30),
        ],
    )
    # [retry] backoff small: the orchestrator's own retry of the 529 should not slow the suite down.
    with open(batch, "a", encoding="utf-8") as f:
        f.write("[retry]\nbackoff = 0.2\nbackoff_max = 1\n")
    mock_api.reset()
    run = run_orchestrator(batch)
    assert run.doc is not None, run.explain()
    run.homes = homes
    run.mock_counts, run.mock_records = mock_api.counts, mock_api.records  # snapshot: later tests reset the mock
    return run


def _check_against_cli(run, name):
    """The record of ``name`` equals what the CLI reported in its own stdout log; return (record, report)."""
    c = run.e2e
    record = run.records[name]
    assert record["stdout_log"], (name, record)
    report = c.cli_report(c.read_events(run.log_path(record)))
    assert report["results"] == record["attempts"], (name, report, record)
    assert record["tokens"] == report["tokens"], (name, record["tokens"], report["tokens"])
    assert record["cost_usd"] == pytest.approx(report["cost_usd"], abs=1e-9), (name, record, report)
    assert record["cost_source"] == "result", (name, record)
    assert record["num_turns"] == report["num_turns"], (name, record, report)
    assert record["session_id"] == report["session_id"] and record["session_id"], (name, record, report)
    assert record["model"] == report["model"], (name, record, report)
    assert record["tools"] == report["tools"], (name, record, report)
    assert record["api_error_status"] == report["api_error_status"], (name, record, report)
    assert record["result"] == report["result"], (name, record, report)
    return record, report


def test_run_exit_status_and_document(main_run):
    r = main_run
    assert r.code == 1, r.explain()  # the 529 and the timeout did not succeed
    assert r.doc["status"] == "failed"
    assert list(r.records) == ["tool-use", "plain-text", "three-tools", "haiku-text", "default-model",
                               "overloaded", "hangs-after-tool"]
    assert (r.run_dir / "results.json").is_file()


@pytest.mark.parametrize(
    "name,model,tokens,cost,turns,tools",
    [
        ("tool-use", "claude-sonnet-4-5", TOOL_RUN, 0.013185, 2, {"Bash": 1}),
        ("plain-text", "claude-sonnet-4-5", TEXT_RUN, 0.00636, 1, {}),
        ("three-tools", "claude-sonnet-4-5", THREE_TOOLS_RUN, None, 4, {"Bash": 3}),
        ("haiku-text", "claude-haiku-4-5", TEXT_RUN, None, 1, {}),
        ("default-model", "claude-opus-5-5", TOOL_RUN, None, 2, {"Bash": 1}),
    ],
)
def test_succeeded_instance_matches_cli_result(main_run, name, model, tokens, cost, turns, tools):
    record, report = _check_against_cli(main_run, name)
    assert record["status"] == "succeeded", record
    assert record["exit_code"] == 0 and record["attempts"] == 1 and record["error"] is None, record
    assert record["model"] == model and report["model_usage"] == [model], (record, report)
    assert record["tokens"] == tokens
    assert record["num_turns"] == turns
    assert record["tools"] == tools
    assert record["result"] == "All done."
    assert record["cost_usd"] > 0
    if cost is not None:
        assert record["cost_usd"] == pytest.approx(cost, abs=1e-9)


def test_api_error_529_retried_then_reported(main_run):
    record, report = _check_against_cli(main_run, "overloaded")
    assert record["status"] == "api-error", record
    assert record["api_error_status"] == 529
    assert record["exit_code"] == 1
    assert record["attempts"] == 2  # retries = 1: the orchestrator retried the transient error once
    assert record["tokens"] == ZERO and record["cost_usd"] == 0
    assert "529" in (record["error"] or ""), record
    # each attempt: the CLI's first request plus its own single retry (CLAUDE_CODE_MAX_RETRIES=1)
    assert main_run.mock_counts.get("mode:529") == 4, main_run.mock_counts


def test_timeout_after_tool_use_is_estimated(main_run):
    """Killed while waiting for the second answer: no result event, so the numbers come from the stream."""
    c = main_run.e2e
    record = main_run.records["hangs-after-tool"]
    report = c.cli_report(c.read_events(main_run.log_path(record)))
    assert record["status"] == "timed-out", record
    assert report["results"] == 0
    assert record["cost_source"] == "estimate", record
    # one API message seen (two assistant events repeating its usage): counted once
    assert record["tokens"]["input"] == 1200 and record["tokens"]["cache_creation"] == 300, record
    assert record["tokens"]["cache_read"] == 5000, record
    assert record["tools"] == {"Bash": 1} == report["tools"]
    assert record["cost_usd"] > 0
    assert record["session_id"] and record["model"] == "claude-sonnet-4-5", record


def test_totals_are_sums(main_run):
    recs = main_run.records.values()
    totals = main_run.doc["totals"]
    for key in ("input", "output", "cache_creation", "cache_read", "total"):
        assert totals["tokens"][key] == sum(r["tokens"][key] for r in recs), key
    assert totals["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in recs), abs=1e-6)
    assert totals["tools"] == {"Bash": 1 + 3 + 1 + 1}
    assert totals["by_status"]["succeeded"] == 5 and totals["by_status"]["api-error"] == 1
    assert totals["by_status"]["timed-out"] == 1


def test_each_instance_used_its_own_home(main_run):
    """The CLI kept its session transcript in the HOME the batch's env table gave it (env reaches the process)."""
    for name, record in main_run.records.items():
        transcripts = list((main_run.homes / name / ".claude" / "projects").glob(f"*/{record['session_id']}.jsonl"))
        assert len(transcripts) == 1, (name, record["session_id"], sorted(main_run.homes.glob(f"{name}/**/*")))


def test_api_key_never_in_results_or_logs(main_run, api_key):
    assert all(r.get("has_api_key") for r in main_run.mock_records if r["kind"] == "messages")
    for path in [main_run.run_dir / "results.json", *sorted((main_run.run_dir / "logs").iterdir())]:
        assert api_key not in path.read_text(encoding="utf-8", errors="replace"), path
    assert api_key not in main_run.stdout and api_key not in main_run.stderr


def test_401_stops_further_launches(e2e, claude_bin, mock_api, run_orchestrator, tmp_path_factory):
    """concurrency 1: the instance after the 401 cannot have started before it ended; later ones never start."""
    c = e2e
    work = tmp_path_factory.mktemp("auth")
    env = dict(c.cli_base_env(mock_api.base_url), HOME=str(work / "home"))
    (work / "home").mkdir()
    batch = c.write_batch(
        work / "auth.toml",
        {"claude": claude_bin, "concurrency": 1},
        {"permission_mode": "acceptEdits", "allowed_tools": ["Bash"], "model": "claude-sonnet-4-5",
         "timeout": 120, "env": env},
        [
            {"name": "before", "prompt": "say hello [mock:text]"},
            {"name": "auth-fail", "prompt": "hello [mock:401]"},
            {"name": "after-1", "prompt": "say hello [mock:text]"},
            {"name": "after-2", "prompt": "run echo"},
        ],
    )
    mock_api.reset()
    run = run_orchestrator(batch)
    assert run.doc is not None, run.explain()
    assert run.code == 1, run.explain()
    recs = run.records
    assert {n: r["status"] for n, r in recs.items()} == {
        "before": "succeeded", "auth-fail": "api-error", "after-1": "not-started", "after-2": "not-started"}
    record, report = _check_against_cli(run, "auth-fail")
    assert record["api_error_status"] == 401 and report["is_error"] is True
    assert record["attempts"] == 1  # 401 is not transient: the orchestrator does not retry it
    assert record["tokens"] == ZERO and record["cost_usd"] == 0
    _check_against_cli(run, "before")
    for name in ("after-1", "after-2"):
        r = recs[name]
        assert r["attempts"] == 0 and r["tokens"] == ZERO and r["stdout_log"] is None, r
        assert "401" in (r["error"] or ""), r
    # the mock saw: before (1 request) + auth-fail (first try + the CLI's one retry); nothing from after-*
    assert mock_api.counts.get("mode:text") == 1 and mock_api.counts.get("mode:401") == 2, mock_api.counts
    assert mock_api.counts.get("messages") == 3, mock_api.counts
