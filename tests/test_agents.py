"""Agent dialects: Codex and Gemini CLI readers against the real transcripts, the normalized token schema, argv per
agent, validation of fields an agent cannot honour, session-name UUIDs, log file names, and a mixed batch.

The reference transcripts (tests/data/reference, see its README) were produced by codex-cli 0.171.0 and gemini
0.61.0 against mocks with known usage; every expectation below is derived from what the CLI itself reported in its
final usage event (Codex ``turn.completed.usage``) or stats (Gemini ``result.stats``).
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pytest

from orchestrator_pex import agents
from orchestrator_pex.agents import api_status_from_text, session_uuid
from orchestrator_pex.agents.claude import ClaudeReader
from orchestrator_pex.agents.codex import CodexReader
from orchestrator_pex.agents.gemini import GeminiReader
from orchestrator_pex.config import apply_defaults, parse_batch
from orchestrator_pex.errors import ConfigError, UsageError
from orchestrator_pex.plan import make_plan, preflight_agents
from orchestrator_pex.pricing import estimate_cost
from orchestrator_pex.results import log_stem

REF = Path(__file__).parent / "data" / "reference"
CODEX = REF / "codex-0.171.0"
GEMINI = REF / "gemini-0.61.0"
CLAUDE = REF / "claude-code-2.1.330"


def read(reader, path: Path):
    for line in path.read_bytes().splitlines():
        assert reader.feed(line), line
    return reader


def last_event(path: Path, kind: str) -> dict:
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if e.get("type") == kind][-1]


# -- Codex -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["text.jsonl", "tool.jsonl"])
def test_codex_tokens_equal_what_codex_reported(name):
    r = read(CodexReader(), CODEX / name)
    usage = last_event(CODEX / name, "turn.completed")["usage"]
    # disjoint parts: input excludes cached and cache-write tokens, which codex includes in input_tokens
    assert r.input + r.cache_read + r.cache_creation == usage["input_tokens"]
    assert r.cache_read == usage["cached_input_tokens"]
    assert r.cache_creation == usage["cache_write_input_tokens"]
    assert r.output == usage["output_tokens"]  # reasoning is a part of output, not added again
    assert r.reasoning == usage["reasoning_output_tokens"]
    assert r.total_tokens == usage["input_tokens"] + usage["output_tokens"]
    assert r.final_usage == usage
    assert r.result_seen and not r.is_error and r.api_error_status is None
    assert r.session_id == last_event(CODEX / name, "thread.started")["thread_id"]
    assert r.num_turns == 1
    assert r.cost_source == "estimate" and r.result_cost is None


def test_codex_tool_transcript_details():
    r = read(CodexReader("gpt-5-codex"), CODEX / "tool.jsonl")
    assert r.tokens() == {"input": 700, "output": 42, "cache_creation": 200, "cache_read": 1200}
    assert r.tools == {"command_execution": 1}
    assert r.result_text == "The command printed tool-ran."
    assert r.model == "gpt-5-codex" and r.models == ["gpt-5-codex"]
    assert r.cost_usd == estimate_cost("gpt-5-codex", r.tokens()) > 0


@pytest.mark.parametrize("name, status", [("401-noretry.jsonl", 401), ("429-noretry.jsonl", 429),
                                          ("500-noretry.jsonl", 503)])
def test_codex_api_errors_are_typed(name, status):
    r = read(CodexReader(), CODEX / name)
    assert r.result_seen and r.is_error
    assert r.api_error_status == status
    assert r.result_text == last_event(CODEX / name, "turn.failed")["error"]["message"]
    assert r.total_tokens == 0


def test_codex_turn_completed_is_a_running_total_not_a_delta():
    r = CodexReader()
    first = {"input_tokens": 100, "cached_input_tokens": 10, "output_tokens": 5}
    second = {"input_tokens": 250, "cached_input_tokens": 40, "output_tokens": 12}
    for usage in (first, second):
        assert r.feed(json.dumps({"type": "turn.completed", "usage": usage}).encode())
    assert r.total_tokens == 262  # the last running total, not 105 + 262
    assert r.reasoning is None  # not reported: None, not 0


def test_codex_mcp_and_file_change_tools_and_unknown_events():
    r = CodexReader()
    lines = [
        {"type": "item.completed", "item": {"type": "mcp_tool_call", "server": "docs", "tool": "search"}},
        {"type": "item.completed", "item": {"type": "file_change", "changes": []}},
        {"type": "item.completed", "item": {"type": "reasoning", "text": "thinking"}},
        {"type": "something.new", "payload": 1},
    ]
    for event in lines:
        assert r.feed(json.dumps(event).encode())
    assert r.tools == {"mcp__docs__search": 1, "file_change": 1}
    assert not r.feed(b"not json") and r.bad_lines == 1


# -- Gemini ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["text.jsonl", "tool.jsonl", "text-pinned.jsonl", "tool-yolo.jsonl"])
def test_gemini_tokens_equal_what_gemini_reported(name):
    r = read(GeminiReader(), GEMINI / name)
    stats = last_event(GEMINI / name, "result")["stats"]
    assert r.total_tokens == stats["total_tokens"]  # the server's total, thoughts included, nothing twice
    assert r.input == stats["input"] == stats["input_tokens"] - stats["cached"]
    assert r.cache_read == stats["cached"]
    assert r.cache_creation == 0
    assert r.output == stats["total_tokens"] - stats["input_tokens"]
    assert r.output >= stats["output_tokens"]
    assert r.reasoning is None
    assert r.final_usage == stats
    assert r.models == sorted(stats["models"])
    assert r.session_id == last_event(GEMINI / name, "init")["session_id"]
    assert sum(r.tools.values()) == stats["tool_calls"]
    assert r.result_seen and not r.is_error


def test_gemini_routed_run_prices_each_model_and_names_the_main_one():
    r = read(GeminiReader(), GEMINI / "tool.jsonl")
    assert r.tokens() == {"input": 1000, "output": 62, "cache_creation": 0, "cache_read": 1200}
    assert r.model == "gemini-3.8-flash"  # the router model did less output
    assert set(r.by_model) == {"gemini-3.5-flash-lite", "gemini-3.8-flash"}
    assert r.cost_usd == round(sum(estimate_cost(m, t) for m, t in r.by_model.items()), 6)
    assert r.tools == {"list_directory": 1}
    assert r.result_text == "The command printed tool-ran."
    assert r.num_turns == 2


@pytest.mark.parametrize("name, status", [("401-noretry.jsonl", 401), ("429-noretry.jsonl", 429),
                                          ("500-noretry.jsonl", 500)])
def test_gemini_api_errors_are_typed(name, status):
    r = read(GeminiReader(), GEMINI / name)
    assert r.result_seen and r.is_error
    assert r.api_error_status == status
    assert r.result_text == last_event(GEMINI / name, "result")["error"]["message"]
    assert r.total_tokens == 0 and r.cost_usd == 0


def test_gemini_no_result_event_means_no_final_figures():
    r = GeminiReader()
    for line in (GEMINI / "tool.jsonl").read_bytes().splitlines()[:-1]:
        r.feed(line)
    assert not r.result_seen and r.total_tokens == 0 and r.tools == {"list_directory": 1}


# -- untrusted numbers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-5, 1.5, True, "100", 10**13, None])
def test_implausible_counts_never_lower_a_figure(bad):
    r = CodexReader()
    r.feed(b'{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":0,"output_tokens":5}}')
    r.feed(json.dumps({"type": "turn.completed", "usage": {"input_tokens": bad, "cached_input_tokens": 0,
                                                           "output_tokens": bad}}).encode())
    assert (r.input, r.output) == (100, 5)
    g = GeminiReader()
    g.feed(json.dumps({"type": "result", "status": "success",
                       "stats": {"total_tokens": bad, "input_tokens": 3, "output_tokens": 1, "cached": 0}}).encode())
    assert g.total_tokens == 0 and g.result_seen


def test_final_usage_is_strict_json_and_bounded():
    r = CodexReader()
    r.feed(b'{"type":"turn.completed","usage":{"input_tokens":1,"output_tokens":1,"weird":NaN}}')
    assert r.total_tokens == 2 and r.final_usage is None  # NaN cannot be written as strict JSON
    r.feed(json.dumps({"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1,
                                                           "pad": "x" * (agents.MAX_USAGE_BYTES + 1)}}).encode())
    assert r.final_usage is None
    json.dumps(r.final_usage, allow_nan=False)


def test_names_and_text_from_the_stream_are_bounded():
    g = GeminiReader()
    g.feed(json.dumps({"type": "tool_use", "tool_name": "t\x1b" + "n" * 500}).encode())
    (tool,) = g.tools
    assert len(tool) <= 200 and "\x1b" not in tool


@pytest.mark.parametrize("text, status", [
    ("unexpected status 401 Unauthorized: Incorrect API key", 401),
    ("exceeded retry limit, last status: 429 Too Many Requests", 429),
    ('[API Error: {"error":{"code":500,"message":"x"}}]', 500),
    ("[API Error: Resource has been exhausted (e.g. check quota).]", 429),
    ("the model is overloaded", 503),
    ("something else entirely", None),
    (None, None),
])
def test_api_status_from_text(text, status):
    assert api_status_from_text(text) == status


# -- Claude ----------------------------------------------------------------------------------------------------------


def test_claude_reader_keeps_final_usage_and_models_and_tolerates_new_events():
    r = read(ClaudeReader(), CLAUDE / "tool-use-allowed.stream.jsonl")
    result = last_event(CLAUDE / "tool-use-allowed.stream.jsonl", "result")
    assert r.final_usage == result["usage"]
    assert r.models == sorted(result["modelUsage"])
    assert r.reasoning is None
    assert r.cost_usd == result["total_cost_usd"]
    before = r.tokens()
    assert r.feed(b'{"type":"brand_new_event","subtype":"x","usage":{"input_tokens":999}}')
    assert r.tokens() == before


# -- session names, instance names -------------------------------------------------------------------------------


def test_session_uuid_is_a_documented_stable_uuid5():
    assert agents.SESSION_NAMESPACE == uuid.uuid5(uuid.NAMESPACE_URL, "https://orchestrator-pex/session-id")
    mapped = session_uuid("security_review_session")
    assert mapped == str(uuid.uuid5(agents.SESSION_NAMESPACE, "security_review_session"))
    assert uuid.UUID(mapped).version == 5
    real = "0d6f0b1e-3c1b-4a53-9b33-1c1e0f4d2a10"
    assert session_uuid(real) == real


def test_zen_session_name_resumes_the_same_session(tmp_path):
    first = parse_batch(json.dumps({"instances": [{"name": "a", "command": "p",
                                                   "session_id": "security_review_session"}]}).encode(),
                        str(tmp_path / "zen.json"))
    later = parse_batch(b'[[instances]]\nname = "b"\nprompt = "p"\nresume = "security_review_session"\n',
                        str(tmp_path / "later.toml"))
    a = make_plan(first, "claude").launches[0].argv
    b = make_plan(later, "claude").launches[0].argv
    assert a[a.index("--session-id") + 1] == b[b.index("--resume") + 1] == session_uuid("security_review_session")


@pytest.mark.parametrize("names", [
    ["review", "Review", "REVIEW"],
    ["a b", "a-b", "a_b", "a/b", "a\\b", "..", "."],
    ["日本語", "中文", "한국어", "Ελληνικά", "ÄÖÜ", "äöü"],
])
def test_log_stems_are_safe_and_collision_free_case_insensitively(names):
    stems = [log_stem(n) for n in names]
    assert len({s.lower() for s in stems}) == len(names)
    for stem in stems:
        assert "/" not in stem and "\\" not in stem and stem not in (".", "..") and stem.isascii()
        assert not stem.startswith(".")
    assert log_stem("review-1") == "review-1"  # plain names keep their log file names


def test_unicode_instance_names_are_accepted_and_unprintable_ones_refused(tmp_path):
    batch = parse_batch('[[instances]]\nname = "セキュリティ レビュー"\nprompt = "p"\n'.encode(), "b.toml")
    assert batch.instances[0].name == "セキュリティ レビュー"
    # control characters are refused by the input checks before any type is applied (their one-line message)
    with pytest.raises(ConfigError, match=r"instances\[0\]\.name: contains a control character \(U\+0007\)"):
        parse_batch(b'[[instances]]\nname = "a\\u0007b"\nprompt = "p"\n', "b.toml")
    with pytest.raises(ConfigError, match=r"instances\[0\]\.name: expected a name of 1 to 200 printable"):
        parse_batch(b'[[instances]]\nname = "a\\u2028b"\nprompt = "p"\n', "b.toml")


# -- configuration and argv ------------------------------------------------------------------------------------------


def test_agent_resolution_order(tmp_path):
    batch = parse_batch(b'agent = "gemini"\n[defaults]\n[[instances]]\nname = "a"\nprompt = "p"\n'
                        b'[[instances]]\nname = "b"\nprompt = "p"\nagent = "codex"\n'
                        b'[[instances]]\nname = "c"\nargv = ["/bin/true"]\n', "b.toml")
    assert [i.agent for i in apply_defaults(batch)][:2] == ["gemini", "codex"]
    plain = parse_batch(b'[[instances]]\nname = "a"\nprompt = "p"\n', "b.toml")
    assert apply_defaults(plain)[0].agent == "claude"  # every existing batch means what it meant
    with_defaults = parse_batch(b'agent = "gemini"\n[defaults]\nagent = "codex"\n[[instances]]\nname = "a"\n'
                                b'prompt = "p"\n', "b.toml")
    assert apply_defaults(with_defaults)[0].agent == "codex"


@pytest.mark.parametrize("text, message", [
    ('[[instances]]\nname = "a"\nprompt = "p"\nagent = "codex"\nmax_turns = 3\n',
     'b.toml: instances[0].max_turns: agent "codex" has no counterpart for max_turns'),
    ('[defaults]\nallowed_tools = ["Bash"]\n[[instances]]\nname = "a"\nprompt = "p"\nagent = "codex"\n',
     'b.toml: defaults.allowed_tools: agent "codex" has no counterpart for allowed_tools'),
    ('[[instances]]\nname = "a"\nprompt = "p"\nagent = "gemini"\nmax_turns = 2\n',
     'b.toml: instances[0].max_turns: agent "gemini" has no counterpart for max_turns'),
    ('[[instances]]\nname = "a"\nprompt = "p"\nagent = "gemini"\npermission_mode = "dontAsk"\n',
     'b.toml: instances[0].permission_mode: agent "gemini" supports "default", "acceptEdits", "plan", '
     '"bypassPermissions", got "dontAsk"'),
    ('[[instances]]\nname = "a"\nprompt = "p"\nagent = "codex"\npermission_mode = "dontAsk"\n',
     'b.toml: instances[0].permission_mode: agent "codex" supports'),
    ('[[instances]]\nname = "a"\nprompt = "p"\nagent = "aider"\n',
     'b.toml: instances[0].agent: expected one of "claude", "codex", "gemini", got "aider"'),
    ('[[instances]]\nname = "a"\nargv = ["/bin/true"]\nagent = "codex"\n',
     "b.toml: instances[0].agent: an argv instance runs its own program"),
])
def test_fields_an_agent_cannot_honour_are_one_line_errors(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_batch(text.encode(), "b.toml")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_unsupported_field_is_exit_2_with_one_line_on_the_command_line(cli, write_batch):
    # codex = "@agent-sim": validate checks the agent too; the unsupported field stays the only problem
    path = write_batch('codex = "@agent-sim"\n[[instances]]\nname = "a"\nprompt = "p"\nagent = "codex"\n'
                       'max_turns = 3\n')
    proc = cli("validate", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and 'instances[0].max_turns: agent "codex"' in lines[0], lines


def plan_of(text: str):
    return make_plan(parse_batch(text.encode(), "/srv/jobs/batch.toml"), codex="/opt/codex", gemini="/opt/gemini")


def test_codex_argv_exact():
    plan = plan_of('[[instances]]\nname = "a"\nagent = "codex"\nprompt = "fix it"\nmodel = "gpt-5-codex"\n'
                   'permission_mode = "acceptEdits"\nresume = "01a2287f-eebf-7421-a27e-c0112078a87f"\n'
                   'env = { OPENAI_BASE_URL = "http://127.0.0.1:9/v1" }\n')
    (launch,) = plan.launches
    assert launch.kind == "codex"
    assert launch.argv == (
        "/opt/codex", "exec", "--json", "--skip-git-repo-check", "-m", "gpt-5-codex", "--sandbox", "workspace-write",
        "-c", 'model_provider="orchestrator"', "-c", 'model_providers.orchestrator.name="orchestrator"',
        "-c", 'model_providers.orchestrator.base_url="http://127.0.0.1:9/v1"',
        "-c", 'model_providers.orchestrator.env_key="OPENAI_API_KEY"',
        "-c", 'model_providers.orchestrator.wire_api="responses"',
        "resume", "01a2287f-eebf-7421-a27e-c0112078a87f", "--", "fix it",
    )
    bypass = plan_of('[[instances]]\nname = "a"\nagent = "codex"\nprompt = "-x"\npermission_mode = '
                     '"bypassPermissions"\n').launches[0]
    assert bypass.argv == ("/opt/codex", "exec", "--json", "--skip-git-repo-check",
                           "--dangerously-bypass-approvals-and-sandbox", "--", "-x")


def test_gemini_argv_and_headless_env_exact():
    plan = plan_of('[[instances]]\nname = "a"\nagent = "gemini"\nprompt = "look"\nmodel = "gemini-2.5-flash"\n'
                   'permission_mode = "bypassPermissions"\nallowed_tools = ["list_directory", "read_file"]\n'
                   'session_id = "nightly review"\n'
                   '[[instances]]\nname = "b"\nagent = "gemini"\nprompt = "--odd"\n'
                   'env = { GEMINI_CLI_TRUST_WORKSPACE = "false" }\n')
    a, b = plan.launches
    assert a.argv == ("/opt/gemini", "-p", "look", "--output-format", "stream-json", "-m", "gemini-2.5-flash",
                      "--approval-mode", "yolo", "--allowed-tools=list_directory", "--allowed-tools=read_file",
                      "--session-id", session_uuid("nightly review"))
    assert a.env_add == {"GEMINI_CLI_TRUST_WORKSPACE": "true"}
    assert b.argv == ("/opt/gemini", "--prompt=--odd", "--output-format", "stream-json")
    assert b.env_add == {"GEMINI_CLI_TRUST_WORKSPACE": "false"}  # the instance's own env wins


def test_codex_home_must_exist_before_anything_starts(tmp_path):
    plan = make_plan(parse_batch(f'[[instances]]\nname = "a"\nagent = "codex"\nprompt = "p"\n'
                                 f'env = {{ CODEX_HOME = "{tmp_path}/nope" }}\n'.encode(), str(tmp_path / "b.toml")),
                     codex="@agent-sim")
    with pytest.raises(UsageError, match=r"instances\[0\]\.env\.CODEX_HOME: no such directory"):
        preflight_agents(plan)
    (tmp_path / "nope").mkdir()
    assert preflight_agents(plan) == {"codex": "codex-cli 0.171.0 (agent-sim, orchestrator-pex demo agent)"}


# -- a mixed batch, one ledger -------------------------------------------------------------------------------------

MIXED = """
claude = "@agent-sim"
codex = "@agent-sim"
gemini = "@agent-sim"
[retry]
backoff = 0.01
[[instances]]
name = "claude-1"
prompt = "p"
session_id = "security_review_session"
[[instances]]
name = "codex-1"
agent = "codex"
prompt = "p"
model = "gpt-5-codex"
[[instances]]
name = "Gemini 一"
agent = "gemini"
prompt = "p"
[[instances]]
name = "codex-429"
agent = "codex"
prompt = "p"
retries = 1
env = { AGENT_SIM_SCENARIO = "api-429" }
"""


def test_mixed_batch_one_ledger(run_batch, write_batch):
    res = run_batch(write_batch(MIXED))
    assert res.code == 1, res.stderr
    doc = res.doc
    assert set(doc["agent_versions"]) == {"claude", "codex", "gemini"}
    assert doc["pricing_version"]
    by = {r["name"]: r for r in doc["instances"]}
    assert {n: r["agent"] for n, r in by.items()} == {"claude-1": "claude", "codex-1": "codex",
                                                       "Gemini 一": "gemini", "codex-429": "codex"}
    assert by["claude-1"]["cost_source"] == "result"
    assert by["claude-1"]["session_name"] == "security_review_session"
    assert by["claude-1"]["session_id"] == session_uuid("security_review_session")
    assert by["codex-1"]["tokens"] == {"input": 700, "output": 42, "cache_creation": 200, "cache_read": 1200,
                                       "total": 2142}
    assert by["codex-1"]["reasoning_tokens"] == 8 and by["codex-1"]["cost_source"] == "estimate"
    assert by["Gemini 一"]["tokens"]["total"] == by["Gemini 一"]["agent_usage"]["total_tokens"] == 2262
    assert by["Gemini 一"]["stdout_log"].endswith(".stdout") and "~" in Path(by["Gemini 一"]["stdout_log"]).name
    assert Path(by["Gemini 一"]["stdout_log"]).exists()
    assert by["codex-429"]["status"] == "api-error" and by["codex-429"]["api_error_status"] == 429
    assert by["codex-429"]["attempts"] == 2  # transient: retried like Claude's
    for key in ("input", "output", "cache_creation", "cache_read", "total"):
        assert doc["totals"]["tokens"][key] == sum(r["tokens"][key] for r in doc["instances"])
    assert math.isclose(doc["totals"]["cost_usd"], sum(r["cost_usd"] for r in doc["instances"]), abs_tol=1e-6)


def test_batch_budget_counts_every_agent(run_batch, write_batch):
    # one at a time: Claude's 13 049 tokens, then Codex's 2 142 cross the batch's 15 000
    text = "concurrency = 1\n" + MIXED.replace("[retry]", "[budget]\nmax_tokens = 15000\n[retry]")
    res = run_batch(write_batch(text))
    assert res.code == 3, res.stderr
    statuses = res.statuses()
    assert statuses["claude-1"] == "succeeded"
    assert statuses["codex-1"] in ("budget-stopped", "succeeded")  # crossed by its final event
    assert statuses["Gemini 一"] == statuses["codex-429"] == "not-started"
    assert res.doc["totals"]["tokens"]["total"] > 15000


# -- fast paths agree with full parsing -------------------------------------------------------------------------------


def _summary(r):
    return (r.tokens(), r.tools, r.num_turns, r.result_text, r.session_id, r.is_error, r.api_error_status, r.models)


@pytest.mark.parametrize("cls, path", [(CodexReader, CODEX / "tool.jsonl"), (GeminiReader, GEMINI / "tool.jsonl"),
                                       (GeminiReader, GEMINI / "tool-yolo.jsonl")])
def test_fast_paths_agree_with_json_parsing_in_any_key_order(cls, path):
    native = read(cls(), path)
    resorted = cls()
    for line in path.read_bytes().splitlines():
        assert resorted.feed(json.dumps(json.loads(line), sort_keys=True).encode())  # no fast path matches
    assert _summary(native) == _summary(resorted)


def test_fast_path_tool_names_with_escapes_and_bad_lines():
    g = GeminiReader()
    assert g.feed(b'{"type":"tool_use","timestamp":"t","tool_name":"we\\"ird","tool_id":"x","parameters":{}}')
    assert g.tools == {'we"ird': 1}
    c = CodexReader()
    assert c.feed(b'{"type":"item.completed","item":{"id":"i","type":"command_execution","command":"x"}}')
    assert not c.feed(b'{"type":"item.completed","item":{"id":"i","type":"command_exec')
    assert c.tools == {"command_execution": 1} and c.bad_lines == 1


# -- outcomes, dry run, command-line overrides -----------------------------------------------------------------------


def test_gemini_exit_41_without_a_result_explains_the_auth_setting():
    from orchestrator_pex.runtime import Attempt
    from orchestrator_pex.scheduler import classify

    (launch,) = plan_of('[[instances]]\nname = "a"\nagent = "gemini"\nprompt = "p"\n').launches
    attempt = Attempt(1, GeminiReader())
    attempt.exit_code, attempt.error = 41, "exit status 41: auth"
    assert classify(launch, attempt) == "failed"
    assert "security.auth.selectedType" in attempt.error and "exit status 41" in attempt.error
    quiet = Attempt(1, CodexReader())
    quiet.exit_code = 0
    (codex,) = plan_of('[[instances]]\nname = "a"\nagent = "codex"\nprompt = "p"\n').launches
    assert classify(codex, quiet) == "failed" and "without a result event" in quiet.error


def test_dry_run_shows_agents_overrides_and_session_mapping(cli, write_batch):
    path = write_batch('[[instances]]\nname = "review"\nprompt = "p"\nsession_id = "security_review_session"\n'
                       '[[instances]]\nname = "c"\nagent = "codex"\nprompt = "p"\n'
                       '[[instances]]\nname = "g"\nagent = "gemini"\nprompt = "p"\n')
    proc = cli("run", str(path), "--dry-run", "--claude", "/opt/c/claude", "--codex", "/opt/x/codex",
               "--gemini", "/opt/g/gemini")
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert "[review] (claude)" in out and "[c] (codex)" in out and "[g] (gemini)" in out
    assert "argv: /opt/x/codex exec --json" in out and "argv: /opt/g/gemini -p p" in out
    assert f'session_id: "security_review_session" -> {session_uuid("security_review_session")}' in out
    assert "env:  GEMINI_CLI_TRUST_WORKSPACE=true" in out


# -- spend recovery reads each agent's log with its own reader ---------------------------------------------------


@pytest.mark.parametrize("agent, path, total", [("codex", CODEX / "tool.jsonl", 2142),
                                                ("gemini", GEMINI / "tool.jsonl", 2262)])
def test_recovery_reads_an_unfinished_attempt_with_its_agents_reader(tmp_path, agent, path, total):
    from orchestrator_pex import recovery

    name = f"Résumé {agent}"
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    (logs / f"{log_stem(name)}.stdout").write_bytes(path.read_bytes())
    record, problems = recovery.recover(str(tmp_path), name, [{"stdout_offset": 0, "agent": agent}], None)
    assert problems == [] and record is not None
    assert record["tokens"]["total"] == total and record["agent"] == agent
    without_agent, _ = recovery.recover(str(tmp_path), name, [{"stdout_offset": 0}], None)
    assert without_agent["tokens"]["total"] == 0  # an old journal: Claude's reader finds no usage in it


def test_policy_forbidden_tools_refuse_agents_that_cannot_withhold_them():
    from orchestrator_pex.plan import forbid_tools

    plan = plan_of('[[instances]]\nname = "a"\nprompt = "p"\n'
                   '[[instances]]\nname = "b"\nagent = "gemini"\nprompt = "p"\n')
    with pytest.raises(UsageError, match=r"instances\[1\]\.agent: the site policy forbids tools \(Bash\), which gem"):
        forbid_tools(plan, ["Bash"])
    assert forbid_tools(plan, []) is plan
    claude_only = plan_of('[[instances]]\nname = "a"\nprompt = "p"\n')
    (launch,) = forbid_tools(claude_only, ["Bash"]).launches
    assert launch.argv[-2:] == ("--disallowedTools", "Bash")
