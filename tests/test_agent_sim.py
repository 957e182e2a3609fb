"""agent-sim: the simulated Claude Code must look like the real 2.1.330 stream and keep exact totals.

Every scenario runs as a real subprocess through ``tests/support/fake_claude`` (the same script other tests use as
``claude``); infinite scenarios are killed after their first lines.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_pex import agent_sim
from orchestrator_pex.pricing import estimate_cost

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "support" / "fake_claude"
REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "claude-code-2.1.330"
STREAM = ["-p", "--output-format", "stream-json", "--verbose"]


def run(scenario: str, *args: str, prompt: str = "fix the failing tests", env: dict | None = None,
        timeout: float = 20) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, AGENT_SIM_SCENARIO=scenario, **(env or {}))
    argv = [sys.executable, str(FAKE), *STREAM, *args] + ([prompt] if prompt is not None else [])
    return subprocess.run(argv, capture_output=True, env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)


def events(stdout: bytes) -> list[dict]:
    """Parse stream-json lines, skipping lines that are not JSON objects (as the orchestrator must)."""
    out = []
    for line in stdout.split(b"\n"):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def stream_totals(evs: list[dict]) -> dict:
    """Input and cache tokens from assistant events, each message.id counted once."""
    seen: dict[str, dict] = {}
    for ev in evs:
        if ev.get("type") == "assistant":
            seen.setdefault(ev["message"]["id"], ev["message"]["usage"])
    return {
        "input": sum(u["input_tokens"] for u in seen.values()),
        "cache_creation": sum(u["cache_creation_input_tokens"] for u in seen.values()),
        "cache_read": sum(u["cache_read_input_tokens"] for u in seen.values()),
        "messages": len(seen),
    }


def check_totals(evs: list[dict]) -> dict:
    result = evs[-1]
    assert result["type"] == "result"
    totals = stream_totals(evs)
    usage = result["usage"]
    assert usage["input_tokens"] == totals["input"]
    assert usage["cache_creation_input_tokens"] == totals["cache_creation"]
    assert usage["cache_read_input_tokens"] == totals["cache_read"]
    assert result["num_turns"] == totals["messages"]
    tokens = {"input": usage["input_tokens"], "output": usage["output_tokens"],
              "cache_creation": usage["cache_creation_input_tokens"], "cache_read": usage["cache_read_input_tokens"]}
    model = evs[0]["model"]
    assert result["total_cost_usd"] == estimate_cost(model, tokens)
    mu = result["modelUsage"][model]
    assert (mu["inputTokens"], mu["outputTokens"], mu["cacheReadInputTokens"], mu["cacheCreationInputTokens"]) == (
        tokens["input"], tokens["output"], tokens["cache_read"], tokens["cache_creation"])
    return result


def reference(name: str) -> list[dict]:
    return [json.loads(line) for line in (REFERENCE / name).read_text(encoding="utf-8").splitlines() if line]




def keys(obj: dict) -> list[str]:
    return list(obj)


# -- command line -------------------------------------------------------------------------------------------------
def test_version():
    proc = subprocess.run([sys.executable, str(FAKE), "--version"], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0
    assert proc.stdout == "2.1.330 (agent-sim, orchestrator-pex demo agent)\n"


def test_version_through_the_cli_subcommand():
    proc = subprocess.run([sys.executable, "-m", "orchestrator_pex", "agent-sim", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("2.1.330 (agent-sim")


def test_import_is_stdlib_only():
    code = "import sys, orchestrator_pex.agent_sim; print(sorted({'trio', 'attrs', 'cattrs'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_stream_json_requires_verbose_like_the_real_cli():
    proc = subprocess.run([sys.executable, str(FAKE), "-p", "--output-format", "stream-json", "hi"],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "requires --verbose" in proc.stderr


def test_missing_prompt_is_an_error():
    proc = run("ok", prompt=None)
    assert proc.returncode == 1
    assert b"Input must be provided" in proc.stderr


def test_unknown_scenario():
    proc = run("no-such-scenario")
    assert proc.returncode == 2
    assert b"no-such-scenario" in proc.stderr


def test_parse_argv_accepts_claude_flags_and_tolerates_unknown_ones():
    opts = agent_sim.parse_argv([
        "-p", "--model", "claude-opus-4-5", "--permission-mode=acceptEdits", "--allowedTools", "Bash(git log:*),Read",
        "--allowedTools", "Edit Write", "--disallowedTools", "WebFetch", "--max-turns", "7", "--session-id", "abc",
        "--append-system-prompt", "be brief", "--some-new-flag", "--other=1", "the prompt",
    ])
    assert opts.print_mode and opts.model == "claude-opus-4-5" and opts.permission_mode == "acceptEdits"
    assert opts.allowed == ["Bash(git log:*)", "Read", "Edit", "Write"]
    assert opts.disallowed == ["WebFetch"]
    assert opts.max_turns == 7 and opts.session_id == "abc" and opts.prompt == "the prompt"


# -- successful runs ----------------------------------------------------------------------------------------------
def test_tool_use_matches_the_reference_transcript():
    proc = run("tool-use", "--allowedTools", "Bash")
    assert proc.returncode == 0, proc.stderr
    evs = events(proc.stdout)
    ref = reference("tool-use-allowed.stream.jsonl")
    assert [(e["type"], e.get("subtype")) for e in evs] == [(e["type"], e.get("subtype")) for e in ref]
    # The layout (key order) the orchestrator's fast parser relies on is the real one.
    for ours, theirs in zip(evs[1:], ref[1:]):
        assert keys(ours) == keys(theirs)
        if "message" in theirs:
            assert keys(ours["message"]) == keys(theirs["message"])
        if ours["type"] == "assistant":
            assert keys(ours["message"]["usage"]) == keys(theirs["message"]["usage"])
            assert ours["message"]["usage"] == theirs["message"]["usage"]
            assert [b["type"] for b in ours["message"]["content"]] == [b["type"] for b in theirs["message"]["content"]]
    assert [k for k in keys(evs[0]) if k in ref[0]] == [k for k in keys(ref[0]) if k in evs[0]]
    assert {"session_id", "model", "tools", "permissionMode", "claude_code_version", "cwd"} <= set(evs[0])
    # One message id per API message, shared by its blocks.
    ids = [e["message"]["id"] for e in evs if e["type"] == "assistant"]
    assert ids[0] == ids[1] != ids[2]
    tool_use = evs[2]["message"]["content"][0]
    assert evs[3]["message"]["content"][0]["tool_use_id"] == tool_use["id"]
    result = check_totals(evs)
    ref_result = ref[-1]
    assert keys(result) == keys(ref_result)
    assert keys(result["usage"]) == keys(ref_result["usage"])
    assert result["usage"] == ref_result["usage"]
    assert result["modelUsage"] == ref_result["modelUsage"]
    assert result["total_cost_usd"] == ref_result["total_cost_usd"] == 0.013185
    assert (result["num_turns"], result["is_error"], result["subtype"]) == (2, False, "success")
    assert result["session_id"] == evs[0]["session_id"]
    assert result["result"] == "Done: fix the failing tests"


def test_tool_use_totals_without_the_reference():
    result = check_totals(events(run("tool-use").stdout))
    assert (result["usage"]["input_tokens"], result["usage"]["cache_creation_input_tokens"],
            result["usage"]["cache_read_input_tokens"], result["usage"]["output_tokens"]) == (2400, 600, 10000, 49)
    assert result["total_cost_usd"] == 0.013185


def test_ok_echoes_the_prompt_and_honours_model_and_session_id():
    prompt = "p" * 100
    proc = run("ok", "--model", "claude-haiku-4-5", "--session-id", "sess-1", prompt=prompt)
    assert proc.returncode == 0
    evs = events(proc.stdout)
    assert [e["type"] for e in evs] == ["system", "assistant", "result"]
    assert evs[0]["model"] == evs[1]["message"]["model"] == "claude-haiku-4-5"
    assert {e["session_id"] for e in evs} == {"sess-1"}
    result = check_totals(evs)
    assert result["result"] == "Done: " + "p" * 60


def test_default_model():
    evs = events(run("ok").stdout)
    assert evs[0]["model"] == "claude-sonnet-4-5"


def test_resume_keeps_the_session_id():
    evs = events(run("ok", "--resume", "old-session").stdout)
    assert evs[-1]["session_id"] == "old-session"


def test_multi_tool_counts_every_tool_and_denies_without_permission():
    proc = run("multi-tool", env={"AGENT_SIM_TURNS": "6"})
    assert proc.returncode == 0
    evs = events(proc.stdout)
    result = check_totals(evs)
    assert result["num_turns"] == 6
    used = [b["name"] for e in evs if e["type"] == "assistant" for b in e["message"]["content"]
            if b["type"] == "tool_use"]
    assert used == [n for names in agent_sim.multi_tool_plan(6) for n in names]
    assert used == ["Read", "Grep", "Edit", "Bash", "Read", "Grep"]
    results = [e["message"]["content"][0] for e in evs if e["type"] == "user"]
    assert len(results) == len(used)
    # default permission mode, nothing allowed: Edit and the non-read-only Bash command are denied
    assert sorted(d["tool_name"] for d in result["permission_denials"]) == ["Bash", "Edit"]
    assert sum(r["is_error"] for r in results) == 2


def test_multi_tool_with_permissions_has_no_denials():
    proc = run("multi-tool", "--permission-mode", "acceptEdits", "--allowedTools", "Bash,Read")
    result = check_totals(events(proc.stdout))
    assert result["permission_denials"] == []


def test_dangerously_skip_permissions_allows_everything():
    evs = events(run("multi-tool", "--dangerously-skip-permissions").stdout)
    assert evs[0]["permissionMode"] == "bypassPermissions"
    assert evs[-1]["permission_denials"] == []


def test_disallowed_tool_is_not_offered_and_fails():
    evs = events(run("tool-use", "--disallowedTools", "Bash").stdout)
    assert "Bash" not in evs[0]["tools"]
    tool_result = [e for e in evs if e["type"] == "user"][0]["message"]["content"][0]
    assert tool_result["is_error"] and "No such tool available: Bash" in tool_result["content"]


def test_max_turns_stops_the_conversation():
    proc = run("multi-tool", "--max-turns", "2", env={"AGENT_SIM_TURNS": "5"})
    assert proc.returncode == 1
    evs = events(proc.stdout)
    result = check_totals(evs)
    assert (result["subtype"], result["is_error"], result["num_turns"]) == ("error_max_turns", True, 2)


def test_expensive_uses_many_tokens():
    env = {"AGENT_SIM_TURNS": "3", "AGENT_SIM_TOKENS": "250000", "AGENT_SIM_DELAY": "0"}
    result = check_totals(events(run("expensive", env=env).stdout))
    assert result["usage"]["input_tokens"] == 750000
    assert result["total_cost_usd"] > 2


def test_json_and_text_output_formats():
    base = [sys.executable, str(FAKE), "-p", "hello"]
    env = dict(os.environ, AGENT_SIM_SCENARIO="tool-use")
    proc = subprocess.run(base + ["--output-format", "json"], capture_output=True, env=env, timeout=20)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 1
    result = json.loads(lines[0])
    assert result["type"] == "result" and result["usage"]["input_tokens"] == 2400
    assert "model_usage_since_last_result" not in result
    proc = subprocess.run(base, capture_output=True, env=env, timeout=20)
    assert proc.stdout == b"Done: hello\n"


def test_json_output_has_the_reference_result_layout():
    proc = subprocess.run([sys.executable, str(FAKE), "-p", "--output-format", "json", "hello"], capture_output=True,
                          env=dict(os.environ, AGENT_SIM_SCENARIO="tool-use"), timeout=20)
    ref = json.loads((REFERENCE / "tool-use.result.json").read_text(encoding="utf-8"))
    ours = json.loads(proc.stdout)
    assert keys(ours) == keys(ref)
    assert (ours["usage"], ours["modelUsage"], ours["total_cost_usd"]) == (
        ref["usage"], ref["modelUsage"], ref["total_cost_usd"])


@pytest.mark.parametrize("allowed, transcript", [
    (["--allowedTools", "Bash"], "tool-use-allowed.stream.jsonl"),
    ([], "tool-use-default-permissions.stream.jsonl"),
])
def test_permission_decision_matches_the_reference(allowed, transcript):
    ours = [e for e in events(run("tool-use", *allowed).stdout) if e["type"] == "user"][0]
    theirs = [e for e in reference(transcript) if e["type"] == "user"][0]
    assert ours["tool_use_result"] == theirs["tool_use_result"]
    assert ours["tool_result_meta"][0]["permission_decision"] == theirs["tool_result_meta"][0]["permission_decision"]
    assert {k: v for k, v in ours["message"]["content"][0].items() if k != "tool_use_id"} == {
        k: v for k, v in theirs["message"]["content"][0].items() if k != "tool_use_id"}


def test_exit_override():
    assert run("ok", env={"AGENT_SIM_EXIT": "7"}).returncode == 7


# -- malformed output ---------------------------------------------------------------------------------------------
def test_garbage_interleaves_invalid_lines_but_ends_with_a_good_result():
    proc = run("garbage")
    assert proc.returncode == 0
    lines = proc.stdout.split(b"\n")
    undecodable = 0
    for line in lines:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable >= 2
    evs = events(proc.stdout)
    assert len(evs) < len([x for x in lines if x])
    result = check_totals(evs)
    assert result["usage"]["input_tokens"] == 2400


def test_huge_line():
    proc = run("huge-line", env={"AGENT_SIM_HUGE_BYTES": "3000000"})
    assert proc.returncode == 0
    lines = proc.stdout.split(b"\n")
    longest = max(lines, key=len)
    assert len(longest) + 1 == 3_000_000
    assert json.loads(longest)["type"] == "user"
    check_totals(events(proc.stdout))


def test_truncated_line_is_not_json_and_not_counted():
    proc = run("truncated")
    lines = [x for x in proc.stdout.split(b"\n") if x]
    assert len(events(proc.stdout)) == len(lines) - 1
    result = check_totals(events(proc.stdout))
    assert result["usage"]["input_tokens"] == 2400


def test_flood_lines_are_sized_distinct_and_summed():
    proc = run("flood", env={"AGENT_SIM_MESSAGES": "500", "AGENT_SIM_LINE_BYTES": "1500"})
    assert proc.returncode == 0
    lines = proc.stdout.split(b"\n")[:-1]
    assert len(lines) == 502
    assert {len(x) + 1 for x in lines[1:-1]} == {1500}
    evs = events(proc.stdout)
    assert len({e["message"]["id"] for e in evs if e["type"] == "assistant"}) == 500
    assert len({e["uuid"] for e in evs if e["type"] == "assistant"}) == 500
    result = check_totals(evs)
    assert result["num_turns"] == 500 and result["usage"]["output_tokens"] == 500


# -- failures -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [401, 429, 500, 529])
def test_api_errors(status):
    proc = run(f"api-{status}")
    assert proc.returncode == 1
    evs = events(proc.stdout)
    assert [(e["type"], e.get("subtype")) for e in evs] == [
        ("system", "init"), ("system", "api_retry"), ("assistant", None), ("result", "success")]
    assert evs[1]["error_status"] == status
    assert evs[2]["api_error_status"] == status and evs[2]["is_api_error_message"] is True
    result = evs[-1]
    assert result["is_error"] is True and result["api_error_status"] == status
    assert result["total_cost_usd"] == 0 and result["usage"]["input_tokens"] == 0
    assert result["result"] == evs[2]["message"]["content"][0]["text"]


@pytest.mark.parametrize("status", [401, 529])
def test_api_error_layout_matches_the_reference(status):
    evs = events(run(f"api-{status}").stdout)
    ref = reference(f"api-error-{status}.stream.jsonl")
    for ours, theirs in zip(evs[1:], ref[1:]):
        assert keys(ours) == keys(theirs)
        for field in ("message", "usage"):
            if field in theirs:
                assert keys(ours[field]) == keys(theirs[field])
    for field in ("error", "api_error_type"):
        assert evs[2][field] == ref[2][field]
    assert evs[1]["error"] == ref[1]["error"]


def test_api_retries_knob():
    evs = events(run("api-429", env={"AGENT_SIM_RETRIES": "3"}).stdout)
    assert [e["attempt"] for e in evs if e.get("subtype") == "api_retry"] == [1, 2, 3]


def test_crash_exits_3_without_result():
    proc = run("crash")
    assert proc.returncode == 3
    evs = events(proc.stdout)
    assert evs and all(e["type"] != "result" for e in evs)
    assert proc.stderr


def test_quiet_exit():
    proc = run("quiet-exit")
    assert (proc.returncode, proc.stdout) == (0, b"")


def test_flaky_fails_then_succeeds(tmp_path):
    env = {"AGENT_SIM_STATE_FILE": str(tmp_path / "attempts"), "AGENT_SIM_FAIL_TIMES": "2"}
    first, second, third = (run("flaky", env=env) for _ in range(3))
    assert (first.returncode, second.returncode, third.returncode) == (1, 1, 0)
    assert events(first.stdout)[-1]["api_error_status"] == 529
    assert events(third.stdout)[-1]["is_error"] is False


# -- infinite scenarios -------------------------------------------------------------------------------------------
def start(scenario: str, env: dict | None = None) -> subprocess.Popen:
    full_env = dict(os.environ, AGENT_SIM_SCENARIO=scenario, **(env or {}))
    return subprocess.Popen([sys.executable, str(FAKE), *STREAM, "wait"], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=full_env)


def first_line(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    assert line.endswith(b"\n")
    return json.loads(line)


def test_hang_dies_on_sigterm():
    proc = start("hang")
    try:
        assert first_line(proc)["subtype"] == "init"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_hang_ignore_term_survives_sigterm():
    proc = start("hang-ignore-term")
    try:
        assert first_line(proc)["subtype"] == "init"
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.3)
        proc.kill()
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_silent_writes_nothing():
    proc = start("silent")
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 0.3)
        assert ready == [] and proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("ignore_term", ["0", "1"])
def test_spawn_child_reports_a_grandchild_in_its_process_group(ignore_term):
    proc = start("spawn-child", env={"AGENT_SIM_CHILD_IGNORE_TERM": ignore_term})
    child = None
    try:
        assert first_line(proc)["subtype"] == "init"
        event = first_line(proc)
        assert (event["type"], event["subtype"]) == ("system", "agent_sim_child")
        child = event["pid"]
        assert os.getpgid(child) == os.getpgid(proc.pid)
        proc.kill()
        proc.wait()
        os.kill(child, 0)  # the grandchild outlives its parent: the orchestrator must clean up the group
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_slow_spaces_events_but_keeps_the_result():
    result = check_totals(events(run("slow", env={"AGENT_SIM_DELAY": "0.01"}).stdout))
    assert result["total_cost_usd"] == 0.013185
