"""A dependency chain with the real Claude Code CLI 2.1.330 against the mock API: the second instance resumes the
first one's session through ``resume = "{{first.session_id}}"`` and gets the first one's result in its prompt.

Oracle: the mock chooses its answer from markers anywhere in the conversation's user text. The first prompt carries
``[mock:text]`` (answer with text, no tool); the second prompt has no marker, so on its own it would get a Bash
tool call. If the second instance continued the first one's conversation, the marker is in it: no tool runs, and the
CLI's transcript of the second session holds the first prompt."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e


def test_second_instance_resumes_first_session(e2e, claude_bin, mock_api, run_orchestrator, tmp_path):
    home = tmp_path / "home"  # one HOME: the CLI finds the session it resumes under ~/.claude/projects
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    batch = e2e.write_batch(
        tmp_path / "chain.toml",
        {"claude": claude_bin},
        {"permission_mode": "acceptEdits", "allowed_tools": ["Bash"], "timeout": 120, "cwd": str(work),
         "model": "claude-sonnet-4-5", "env": {**e2e.cli_base_env(mock_api.base_url), "HOME": str(home)}},
        [
            {"name": "first", "prompt": "remember the word PELICAN-7 [mock:text]"},
            {"name": "second", "needs": ["first"], "resume": "{{first.session_id}}",
             "prompt": "you said {{first.result}}; now run echo"},
            {"name": "fresh", "prompt": "now run echo"},  # control: the same prompt without the session
        ],
    )
    mock_api.reset()
    run = run_orchestrator(batch)
    assert run.code == 0, run.explain()
    first, second, fresh = (run.records[n] for n in ("first", "second", "fresh"))
    assert all(r["status"] == "succeeded" for r in (first, second, fresh)), run.explain()
    assert first["session_id"] and first["result"] == "All done."
    assert fresh["tools"] == {"Bash": 1}  # the control: without the first conversation the mock asks for a tool
    assert second["tools"] == {}, second  # the [mock:text] marker came with the resumed conversation
    transcripts = list((home / ".claude" / "projects").glob(f"*/{second['session_id']}.jsonl"))
    assert transcripts, list((home / ".claude" / "projects").rglob("*.jsonl"))
    text = transcripts[0].read_text(encoding="utf-8")
    assert "PELICAN-7" in text and "you said All done.; now run echo" in text
    # the orchestrator's own events: second started after first finished
    events = [json.loads(line) for line in (run.run_dir / "journal.jsonl").read_text().splitlines()]
    order = [(e["event"], e.get("name")) for e in events if e["event"] in ("instance_started", "instance_finished")]
    assert order.index(("instance_finished", "first")) < order.index(("instance_started", "second"))
