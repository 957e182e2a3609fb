"""Claude Code drift: the pinned release and the newest one on the npm registry at the time of the work.

Each version runs headless against the mock Anthropic API (tool round trip, plain text, 529 overload); the
orchestrator's Claude reader must reproduce exactly what that CLI reported in its own ``result`` event (usage,
``total_cost_usd``, turns, error status), whatever new event types or fields the version prints. NEWEST is the
registry's latest when this test was written (`npm view @anthropic-ai/claude-code version` on 2026-11-29); update
it when checking a newer release.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from orchestrator_pex.agents.claude import ClaudeReader

pytestmark = pytest.mark.e2e

PINNED = "2.1.330"
NEWEST = "2.1.332"


@pytest.fixture(scope="module", params=[PINNED, NEWEST])
def claude_version(request, e2e):
    if shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npm is not installed: Claude Code cannot be installed (CI=true: no skipping)")
        pytest.skip("npm is not installed: cannot install Claude Code for the drift check")
    proc = subprocess.run([str(e2e.INSTALL_CLAUDE)], env={**os.environ, "CLAUDE_CODE_VERSION": request.param},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return request.param, proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("prompt", ["run echo", "say hello [mock:text]", "anything [mock:529]"])
def test_reader_matches_the_cli_result(e2e, claude_version, mock_api, tmp_path, prompt):
    version, path = claude_version
    home = tmp_path / "home"
    home.mkdir()
    env = {**e2e.clean_env(e2e.cli_base_env(mock_api.base_url)), "HOME": str(home), "ANTHROPIC_API_KEY": "mock"}
    proc = subprocess.run([path, "-p", prompt, "--output-format", "stream-json", "--verbose", "--allowedTools",
                           "Bash", "--model", "claude-sonnet-4-5"], env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=180)
    lines = proc.stdout.splitlines()
    reader = ClaudeReader()
    for line in lines:
        assert reader.feed(line), line[:200]
    results = [json.loads(line) for line in lines if b'"type":"result"' in line]
    assert results, (version, proc.stderr[-2000:])
    result = results[-1]
    usage = result["usage"]
    assert reader.tokens() == {"input": usage["input_tokens"], "output": usage["output_tokens"],
                               "cache_creation": usage["cache_creation_input_tokens"],
                               "cache_read": usage["cache_read_input_tokens"]}, version
    assert reader.cost_usd == result["total_cost_usd"] and reader.cost_source == "result"
    assert reader.num_turns == result["num_turns"]
    assert reader.is_error == result["is_error"]
    assert reader.api_error_status == result.get("api_error_status")
    assert reader.final_usage == usage
    if "529" in prompt:
        assert reader.api_error_status == 529 and proc.returncode == 1
    else:
        assert not reader.is_error and reader.total_tokens > 0
