"""One ``run`` of the real Claude Code, Codex CLI and Gemini CLI (3 agents × 3 instances) against their mocks.

One ledger: every record equals what its own CLI reported (Claude's ``result`` usage and ``total_cost_usd``, Codex's
final ``turn.completed`` usage, Gemini's ``result.stats``, in the orchestrator's disjoint schema), the batch totals
are the sum of the records, and the API key given to all three never appears in the results or the logs.
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mixed_run(e2e, claude_bin, codex_bin, gemini_bin, mock_api, mock_openai_api, mock_gemini_api,
              run_orchestrator, tmp_path_factory):
    c = e2e
    work = tmp_path_factory.mktemp("mixed")
    homes = work / "homes"

    def claude(name, prompt, **kw):
        home = homes / name
        home.mkdir(parents=True)
        return {"name": name, "prompt": prompt, "model": "claude-sonnet-4-5", "permission_mode": "acceptEdits",
                "allowed_tools": ["Bash"], "env": {**c.cli_base_env(mock_api.base_url), "HOME": str(home)}, **kw}

    instances = []
    for i, prompt in enumerate(("run echo", "say hello [mock:text]", "run echo twice [mock:tools=2]")):
        instances.append(claude(f"claude-{i}", prompt, session_id=f"mixed review {i}"))
        instances.append(c.codex_instance(homes / f"codex-{i}", mock_openai_api.base_url, f"codex-{i}",
                                          ("Run `echo tool-ran`.", "say hello [mock:text]", "Run `echo tool-ran`.")[i],
                                          model="gpt-5-codex"))
        instances.append(c.gemini_instance(homes / f"gemini-{i}", mock_gemini_api.base_url, f"Gemini — {i}",
                                           ("Run `echo tool-ran`.", "say hello [mock:text]", "list files")[i],
                                           **({"model": "gemini-2.5-flash"} if i else {})))
    batch = c.write_batch(work / "mixed.toml", {"claude": claude_bin, "codex": codex_bin, "gemini": gemini_bin},
                          {"timeout": 120}, instances)
    run = run_orchestrator(batch)
    assert run.doc is not None, run.explain()
    return run


def test_every_record_equals_what_its_own_cli_reported(e2e, mixed_run):
    records = mixed_run.records
    assert len(records) == 9 and mixed_run.code == 0, mixed_run.explain()
    for name, record in records.items():
        assert record["status"] == "succeeded", (name, record["error"])
        events = e2e.read_events(mixed_run.log_path(record))
        if record["agent"] == "claude":
            said = e2e.cli_report(events)
            assert record["tokens"] == said["tokens"]
            assert math.isclose(record["cost_usd"], said["cost_usd"], abs_tol=1e-6)
            assert record["cost_source"] == "result"
            assert record["session_name"] is not None and record["session_id"] == said["session_id"]
        elif record["agent"] == "codex":
            said = e2e.codex_report(events)
            assert record["tokens"] == e2e.normalized_codex(said["usage"])
            assert record["agent_usage"] == said["usage"]
        else:
            said = e2e.gemini_report(events)
            assert record["tokens"] == e2e.normalized_gemini(said["stats"])
            assert record["tokens"]["total"] == said["stats"]["total_tokens"]
        assert record["tokens"]["total"] > 0
    assert sorted({r["agent"] for r in records.values()}) == ["claude", "codex", "gemini"]


def test_one_ledger_and_no_key_anywhere(mixed_run, api_key):
    doc = mixed_run.doc
    for key in ("input", "output", "cache_creation", "cache_read", "total"):
        assert doc["totals"]["tokens"][key] == sum(r["tokens"][key] for r in doc["instances"])
    assert math.isclose(doc["totals"]["cost_usd"], sum(r["cost_usd"] for r in doc["instances"]), abs_tol=1e-6)
    assert set(doc["agent_versions"]) == {"claude", "codex", "gemini"}
    assert doc["pricing_version"]
    for path in mixed_run.run_dir.rglob("*"):
        if path.is_file():
            assert api_key.encode() not in path.read_bytes(), path
