"""Accounting of Claude Code stream-json, against the real 2.1.330 transcripts and the simulated agent.

The real transcripts are the ground truth: their ``result`` events carry the totals the CLI itself computed. The
same events in any other key order or spacing must give exactly the same accounting (the reader does not depend on
the layout; tests/test_ingest_differential.py compares it with ``json.loads`` on hostile lines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_pex import accounting
from orchestrator_pex.accounting import Accounting
from orchestrator_pex.pricing import estimate_cost
from tests.support.ledger import accounting_state

REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "claude-code-2.1.330"
TRANSCRIPTS = sorted(REFERENCE.glob("*.jsonl"))
ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "support" / "fake_claude"

assert TRANSCRIPTS, f"reference transcripts missing under {REFERENCE}"


def lines_of(path: Path) -> list:
    return [line for line in path.read_bytes().split(b"\n") if line]


def account(lines) -> Accounting:
    acct = Accounting()
    for line in lines:
        acct.feed(line)
    return acct


def state(acct: Accounting) -> dict:
    """Everything accounting reports, for comparing two runs."""
    return {**accounting_state(acct), "bad_lines": acct.bad_lines}


def reserialised(lines, **dumps_kwargs) -> list:
    """The same events, re-serialised (other key order / spacing): forces the slow path."""
    return [json.dumps(json.loads(line), **dumps_kwargs).encode() for line in lines]


def events(path: Path) -> list:
    return [json.loads(line) for line in lines_of(path)]


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.name for p in TRANSCRIPTS])
def test_reference_transcript_totals(path):
    evs = events(path)
    init = evs[0]
    result = evs[-1]
    acct = account(lines_of(path))
    assert acct.bad_lines == 0
    assert acct.result_seen
    assert acct.session_id == init["session_id"] == result["session_id"]
    assert acct.num_turns == result["num_turns"]
    assert acct.result_text == result["result"]
    assert acct.cost_source == "result"
    if path.name.startswith("tool-use"):
        assert acct.tokens() == {"input": 2400, "output": 49, "cache_creation": 600, "cache_read": 10000}
        assert acct.total_tokens == 13049
        assert acct.cost_usd == pytest.approx(0.013185)
        assert acct.tools == {"Bash": 1}
        assert acct.model == "claude-sonnet-4-5"
        assert acct.num_turns == 2
        assert acct.is_error is False and acct.api_error_status is None
        assert acct.messages == 2  # four assistant events, two message ids
    else:
        status = int(path.name.split("-")[2].split(".")[0])  # api-error-401.stream.jsonl -> 401
        assert acct.api_error_status == status
        assert acct.is_error is True
        assert acct.total_tokens == 0 and acct.cost_usd == 0.0
        assert acct.tools == {}
        assert acct.model == init["model"]  # never "<synthetic>"
        assert acct.api_retries == 1


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.name for p in TRANSCRIPTS])
@pytest.mark.parametrize("layout", [{"sort_keys": True}, {"indent": None, "separators": (" , ", " : ")},
                                    {"sort_keys": True, "ensure_ascii": False, "separators": (",", ":")}],
                         ids=["sorted", "spaced", "sorted-compact"])
def test_fast_and_slow_paths_agree_on_reference(path, layout):
    original = lines_of(path)
    assert state(account(reserialised(original, **layout))) == state(account(original))


def test_unaccounted_lines_are_not_parsed_in_any_layout(monkeypatch):
    """``user`` lines name no accounted event type: they are skipped without a parse, in every layout; the lines
    that are parsed are the same in every layout (so is the cost of reading them)."""
    parsed = []
    real = accounting.untrusted.json_object

    def counting(line):
        parsed.append(line)
        return real(line)

    monkeypatch.setattr(accounting.untrusted, "json_object", counting)
    lines = lines_of(REFERENCE / "tool-use-allowed.stream.jsonl")
    for layout in ({}, {"sort_keys": True, "separators": (", ", ": ")}):
        parsed.clear()
        account(reserialised(lines, **layout) if layout else lines)
        kinds = [json.loads(line)["type"] for line in parsed]
        assert kinds == ["system", "assistant", "assistant", "assistant", "result"], layout


def test_usage_counted_once_per_message_id_without_result():
    lines = [line for line in lines_of(REFERENCE / "tool-use-allowed.stream.jsonl") if b'"type":"result"' not in line]
    acct = account(lines)
    # two messages (msg_1 with two events, msg_2 with one), each 1200/300/5000 and the message_start output of 1
    assert acct.tokens() == {"input": 2400, "output": 2, "cache_creation": 600, "cache_read": 10000}
    assert acct.messages == 2
    assert acct.tools == {"Bash": 1}
    assert not acct.result_seen


def test_repeated_message_events_do_not_double_count():
    lines = lines_of(REFERENCE / "tool-use-default-permissions.stream.jsonl")
    first_text = next(line for line in lines if line.startswith(b'{"type":"assistant"'))
    doubled = [lines[0], first_text, first_text, first_text] + lines[1:-1]
    acct = account(doubled)
    assert acct.tokens()["input"] == 2400
    assert acct.messages == 2


def test_estimate_when_no_result():
    lines = [line for line in lines_of(REFERENCE / "tool-use-allowed.stream.jsonl") if b'"type":"result"' not in line]
    acct = account(lines)
    assert acct.cost_source == "estimate"
    assert acct.result_cost is None
    assert acct.cost_usd == estimate_cost("claude-sonnet-4-5", acct.tokens())
    assert acct.cost_usd > 0


def test_result_replaces_running_estimate():
    lines = lines_of(REFERENCE / "tool-use-allowed.stream.jsonl")
    acct = account(lines[:-1])
    before = acct.tokens()
    acct.feed(lines[-1])
    assert before["output"] == 2 and acct.tokens()["output"] == 49  # the stream never shows final output counts
    assert acct.cost_source == "result" and acct.cost_usd == pytest.approx(0.013185)


def test_bad_lines_are_skipped_and_accounting_goes_on():
    lines = lines_of(REFERENCE / "tool-use-allowed.stream.jsonl")
    noise = [b"\xff\xfe not utf-8 \xc3\x28", b"npm WARN this is not json", b'{"type":"assistant","message":{oops',
             lines[1][: len(lines[1]) // 2], b"[1, 2, 3]", b'"just a string"', b'{"type":"user","message":{"rol']
    acct = Accounting()
    verdicts = [acct.feed(noise[0])]
    for i, line in enumerate(lines):
        verdicts.append(acct.feed(line))
        if i + 1 < len(noise):
            verdicts.append(acct.feed(noise[i + 1]))
    assert verdicts.count(False) == len(noise)
    assert acct.bad_lines == len(noise)
    assert acct.tokens() == {"input": 2400, "output": 49, "cache_creation": 600, "cache_read": 10000}
    assert acct.tools == {"Bash": 1}
    assert acct.num_turns == 2


def test_blank_lines_are_not_bad_lines():
    lines = lines_of(REFERENCE / "tool-use-allowed.stream.jsonl")
    acct = Accounting()
    assert acct.feed(b"") and acct.feed(b"   ")
    for line in lines:
        assert acct.feed(line) and acct.feed(b"")
    assert acct.bad_lines == 0
    assert acct.total_tokens == 13049 and acct.tools == {"Bash": 1}


def test_crlf_line_endings_are_accepted():
    lines = lines_of(REFERENCE / "tool-use-allowed.stream.jsonl")
    acct = Accounting()
    verdicts = [acct.feed(line + b"\r") for line in lines]
    assert acct.total_tokens == 13049 and acct.tools == {"Bash": 1}  # (holds today)
    assert all(verdicts) and acct.bad_lines == 0


def test_tool_input_that_looks_like_usage_is_not_usage():
    """A tool input holding a ``usage`` object (structure, not a string) must not be taken for the message usage."""
    ev = json.loads(lines_of(REFERENCE / "tool-use-allowed.stream.jsonl")[2])
    ev["message"]["content"][0]["input"] = {"usage": {"input_tokens": 999999, "output_tokens": 5}, "x": [{"y": 1}]}
    fast = json.dumps(ev, separators=(",", ":")).encode()
    a, b = account([fast]), account(reserialised([fast], sort_keys=True))
    assert state(a) == state(b)
    assert a.tokens()["input"] == 1200 and a.tools == {"Bash": 1}


def test_parallel_tool_calls_in_one_event_are_each_counted():
    ev = json.loads(lines_of(REFERENCE / "tool-use-allowed.stream.jsonl")[2])
    call = ev["message"]["content"][0]
    ev["message"]["content"] = [call, dict(call, id="toolu_2", name="Read"), dict(call, id="toolu_3", name="Read")]
    fast = json.dumps(ev, separators=(",", ":")).encode()
    assert account([fast]).tools == {"Bash": 1, "Read": 2}
    assert state(account([fast])) == state(account(reserialised([fast], sort_keys=True)))


def test_fast_and_slow_paths_agree_on_synthetic_error_event():
    lines = lines_of(REFERENCE / "api-error-529.stream.jsonl")
    ev = json.loads(lines[2])
    msg = ev["message"]
    head = {k: msg[k] for k in ("id", "type", "role", "model", "content")}
    ev = {"type": "assistant", "message": {**head, **msg}, **{k: v for k, v in ev.items() if k != "message"}}
    fast = json.dumps(ev, separators=(",", ":")).encode()
    crashed = [lines[0], lines[1], fast]  # the agent died before its result event
    assert state(account(crashed)) == state(account(reserialised(crashed, sort_keys=True)))


# -- streams from the simulated agent --------------------------------------------------------------------------------


def sim_stdout(scenario: str, **env: str) -> bytes:
    full = dict(os.environ, AGENT_SIM_SCENARIO=scenario, **env)
    argv = [sys.executable, str(FAKE), "-p", "do it", "--output-format", "stream-json", "--verbose",
            "--allowedTools", "Bash,Edit"]
    return subprocess.run(argv, env=full, capture_output=True, timeout=60, stdin=subprocess.DEVNULL).stdout


@pytest.mark.parametrize("scenario, env", [("multi-tool", {"AGENT_SIM_TURNS": "9"}), ("tool-use", {}),
                                           ("flood", {"AGENT_SIM_MESSAGES": "300"}), ("api-529", {})])
def test_fast_and_slow_paths_agree_on_sim_streams(scenario, env):
    lines = [line for line in sim_stdout(scenario, **env).split(b"\n") if line]
    fast = account(lines)
    assert fast.result_seen and fast.bad_lines == 0
    slow = account(reserialised(lines, sort_keys=True, separators=(", ", ": ")))
    assert state(slow) == state(fast)
    if scenario == "multi-tool":
        assert sum(fast.tools.values()) >= 9  # message 0 has two parallel tools


def test_stream_sums_equal_result_totals_on_flood():
    """With one event per message (flood), usage summed per message id equals the result's totals exactly."""
    lines = [line for line in sim_stdout("flood", AGENT_SIM_MESSAGES="500").split(b"\n") if line]
    result = json.loads(lines[-1])
    running = account(lines[:-1])
    assert running.tokens() == {"input": result["usage"]["input_tokens"], "output": result["usage"]["output_tokens"],
                                "cache_creation": result["usage"]["cache_creation_input_tokens"],
                                "cache_read": result["usage"]["cache_read_input_tokens"]}
    assert running.tools == {"Bash": 500}


def test_garbage_stream_counts_skipped_lines_and_keeps_totals():
    lines = sim_stdout("garbage").split(b"\n")
    acct = account(lines)
    assert acct.bad_lines >= 3
    assert acct.tokens() == {"input": 2400, "output": 49, "cache_creation": 600, "cache_read": 10000}
    assert acct.tools == {"Bash": 1} and acct.num_turns == 2


def _fresh_cost(acct: Accounting) -> float:
    """``acct.cost_usd`` computed from scratch (the cached figures forgotten)."""
    acct._costed = ()
    acct._priced = ()
    return acct.cost_usd


def test_cached_cost_follows_every_change():
    """The cost is computed again only when something it depends on changed (it is asked after every chunk):
    after every line of every reference transcript, and of a sequence where a result's figure comes to equal the
    streamed one (the reported figure stays, whether the result is trusted changes), the cached answer is the fresh
    one."""
    usage = lambda n: {"input_tokens": n, "output_tokens": n, "cache_creation_input_tokens": 0,  # noqa: E731
                       "cache_read_input_tokens": 0}
    crossing = [json.dumps(e).encode() for e in (
        {"type": "assistant", "message": {"id": "m1", "model": "claude-sonnet-4-5", "usage": usage(10**6)}},
        {"type": "result", "total_cost_usd": 10.0, "usage": usage(5 * 10**5)},  # hides tokens: the estimate, 18
        {"type": "result", "total_cost_usd": 10.0, "usage": usage(10**6)},  # all of them: its own 10 (>= half)
        {"type": "assistant", "message": {"id": "m2", "model": "claude-opus-4-1", "usage": usage(10)}},
        {"type": "result", "total_cost_usd": 30.0, "usage": usage(2 * 10**6)},
    )]
    seen = set()
    for lines in [*(lines_of(t) for t in TRANSCRIPTS), crossing]:
        acct = Accounting()
        for line in lines:
            acct.feed(line)
            cached = acct.cost_usd
            assert cached == acct.cost_usd  # asked twice: the same answer from the cache
            seen.add((cached, acct.cost_source))
            assert cached == _fresh_cost(acct), line[:120]
    assert len(seen) > 3  # the figures did change along the way
    assert {(18.0, "stream"), (10.0, "result")} <= seen
