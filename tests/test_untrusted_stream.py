"""Agent output is untrusted: the reader and the accounting against hostile lines (issue 9, "agent output").

Each test checks the documented behaviour of :mod:`orchestrator_pex.accounting` (module docstring), not only that
nothing raised: what is counted, what is skipped, which figure wins and what ``cost_source`` says.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import pytest

from orchestrator_pex import strictjson, untrusted
from orchestrator_pex.accounting import MAX_TOOL_NAMES, OTHER_TOOLS, Accounting, fold_tools
from orchestrator_pex.pricing import estimate_cost
from orchestrator_pex.results import build_document, instance_record
from orchestrator_pex.runtime import Attempt

REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "claude-code-2.1.330"
TOOL_USE = REFERENCE / "tool-use-allowed.stream.jsonl"


def lines_of(path: Path) -> list:
    return [line for line in path.read_bytes().split(b"\n") if line]


def feed_all(lines) -> Accounting:
    acct = Accounting()
    for line in lines:
        acct.feed(line)
    return acct


def assistant(mid: str, usage: dict, tool: str | None = None, model: str = "claude-sonnet-4-5") -> bytes:
    content = [{"type": "tool_use", "id": "t", "name": tool, "input": {}}] if tool is not None else []
    return json.dumps({"type": "assistant", "message": {"id": mid, "type": "message", "role": "assistant",
                       "model": model, "content": content, "usage": usage}}, separators=(",", ":")).encode()


def usage(i=0, o=0, cc=0, cr=0) -> dict:
    return {"input_tokens": i, "output_tokens": o, "cache_creation_input_tokens": cc, "cache_read_input_tokens": cr}


def result(**fields) -> bytes:
    event = {"type": "result", "subtype": "success", "is_error": False, "session_id": "s", "num_turns": 1,
             "result": "done"}
    event.update(fields)
    return json.dumps(event).encode()


def strict_numbers(acct: Accounting) -> None:
    for value in (*acct.tokens().values(), acct.total_tokens):
        assert isinstance(value, int) and 0 <= value
    assert math.isfinite(acct.cost_usd) and acct.cost_usd >= 0
    assert all(isinstance(n, int) and n > 0 for n in acct.tools.values())


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_line_is_skipped_and_reading_goes_on(depth):
    good = lines_of(TOOL_USE)
    nested = b"[" * depth + b"]" * depth
    nested_obj = b'{"type":"result","usage":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    acct = feed_all([good[0], nested, nested_obj, *good[1:]])
    assert acct.bad_lines == 2
    assert acct.tokens() == {"input": 2400, "output": 49, "cache_creation": 600, "cache_read": 10000}
    assert acct.cost_usd == pytest.approx(0.013185) and acct.cost_source == "result"


class _Broken(Accounting):
    __slots__ = ()

    def handle(self, event):
        raise RuntimeError("any bug in handling one event")


def test_any_exception_while_handling_a_line_is_contained():
    acct = _Broken()
    assert acct.feed(result(total_cost_usd=1.0)) is False
    assert acct.bad_lines == 1
    assert acct.feed(b"") is True and acct.bad_lines == 1


@pytest.mark.parametrize("line", [
    b'{"type":"result","modelUsage":{"m":5}}', b'{"type":"result","modelUsage":[1]}',
    b'{"type":"assistant","message":{"content":7}}', b'{"type":"assistant","message":[]}',
    b'{"type":"assistant","message":{"id":"x","type":"message","role":"assistant","model":"m",'
    b'"content":[],"usage":{"input_tokens":' + b"9" * 5000 + b"}}}",
    b"\xff\xfe{", b'"just a string"', b"[1,2]", b"1e999999", b"-" * 100_000,
    b'{"type":"system","subtype":"init","session_id":{"a":1},"model":[1]}',
    b'{"type":"assistant","message":{"id":"x","content":[{"type":"tool_use","name":{"a":[]}}],"usage":7}}',
], ids=lambda b: repr(b[:40]))
def test_malformed_events_never_raise_and_never_count(line):
    acct = Accounting()
    acct.feed(line)
    strict_numbers(acct)
    assert acct.total_tokens == 0
    assert acct.session_id is None
    assert acct.result_cost is None


HOSTILE_NUMBERS = [-1, -10**12, 10**13, 10**400, float("nan"), float("inf"), float("-inf"), "100", True, None,
                   [1], {"n": 1}, 1e7, -0.5]


@pytest.mark.parametrize("bad", HOSTILE_NUMBERS, ids=repr)
def test_hostile_numbers_in_result_never_lower_or_poison(bad):
    stream = [assistant("m1", usage(100, 10, 0, 0))]
    line = (b'{"type":"result","is_error":false,"usage":{"input_tokens":BAD,"output_tokens":BAD,'
            b'"cache_creation_input_tokens":BAD,"cache_read_input_tokens":BAD},"total_cost_usd":BAD}')
    token = {float("nan"): b"NaN", float("inf"): b"Infinity", float("-inf"): b"-Infinity"}.get(bad) \
        if isinstance(bad, float) else None
    line = line.replace(b"BAD", token or json.dumps(bad).encode())
    acct = feed_all([*stream, line])
    assert acct.result_seen and acct.bad_lines == 0
    assert acct.tokens() == {"input": 100, "output": 10, "cache_creation": 0, "cache_read": 0}
    assert acct.result_cost is None and acct.cost_source == "estimate"
    assert acct.cost_usd == estimate_cost("claude-sonnet-4-5", acct.tokens())
    strict_numbers(acct)


@pytest.mark.parametrize("bad", HOSTILE_NUMBERS, ids=repr)
def test_hostile_numbers_in_assistant_usage_count_as_absent(bad):
    raw = json.dumps({"type": "assistant", "message": {"id": "m2", "model": "claude-sonnet-4-5", "content": [],
                                                       "usage": {"input_tokens": "X", "output_tokens": 5}}})
    token = {float("nan"): "NaN", float("inf"): "Infinity", float("-inf"): "-Infinity"}.get(bad) \
        if isinstance(bad, float) else None
    raw = raw.replace('"X"', token or json.dumps(bad))
    acct = feed_all([assistant("m1", usage(7, 1)), raw.encode()])
    assert acct.input == 7 and acct.output == 6
    strict_numbers(acct)


def test_fractional_token_count_is_absent_but_fractional_cost_is_money():
    acct = feed_all([assistant("m1", usage(100, 10)),
                     result(usage={"input_tokens": 1.5, "output_tokens": 20}, total_cost_usd=1.5)])
    assert acct.tokens() == {"input": 100, "output": 20, "cache_creation": 0, "cache_read": 0}
    assert acct.cost_usd == 1.5 and acct.cost_source == "result"


def test_fast_path_huge_counts_are_refused():
    acct = feed_all([assistant("m1", usage(10**13, 1, 2, 3)), assistant("m2", usage(5, 0, 0, 0))])
    assert acct.tokens() == {"input": 5, "output": 1, "cache_creation": 2, "cache_read": 3}


def test_early_result_never_hides_later_streamed_usage():
    acct = feed_all([
        assistant("m1", usage(1000, 10, 0, 0)),
        result(usage=usage(1000, 10, 0, 0), total_cost_usd=0.0031),
        assistant("m2", usage(500_000, 20_000, 0, 0)),  # after the result: still counted
    ])
    assert acct.tokens() == {"input": 501_000, "output": 20_010, "cache_creation": 0, "cache_read": 0}
    streamed = estimate_cost("claude-sonnet-4-5", acct.tokens())
    assert acct.cost_usd == streamed > 0.0031
    assert acct.cost_source == "stream"


def test_lying_result_lower_than_stream_uses_the_larger_per_kind():
    acct = feed_all([assistant("m1", usage(1000, 1, 50, 9000)), assistant("m2", usage(1000, 1, 50, 9000)),
                     result(usage=usage(5, 400, 0, 99_999), total_cost_usd=0.0)])
    assert acct.tokens() == {"input": 2000, "output": 400, "cache_creation": 100, "cache_read": 99_999}
    assert acct.cost_source == "stream"
    assert acct.cost_usd == estimate_cost("claude-sonnet-4-5",
                                          {"input": 2000, "output": 2, "cache_creation": 100, "cache_read": 18000})


def test_honest_result_is_the_source_and_reference_numbers_exact():
    acct = feed_all(lines_of(TOOL_USE))
    assert acct.tokens() == {"input": 2400, "output": 49, "cache_creation": 600, "cache_read": 10000}
    assert acct.cost_usd == pytest.approx(0.013185)
    assert acct.cost_source == "result"


def test_tool_names_are_cut_and_capped_memory_bounded():
    tracemalloc.start()
    try:
        acct = Accounting()
        for n in range(20_000):
            name = f"T{n:05d}" + "x" * 2048
            acct.feed(assistant(f"m{n}", usage(1, 1), tool=name))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(acct.tools) == MAX_TOOL_NAMES
    assert acct.tools[OTHER_TOOLS] == 20_000 - (MAX_TOOL_NAMES - 1)
    assert sum(acct.tools.values()) == 20_000
    assert max(len(name) for name in acct.tools) <= untrusted.MAX_NAME
    assert peak < 8 * 1024 * 1024, peak  # 20,000 x 2 KB names would be 40 MB kept


def test_control_characters_in_names_are_replaced():
    acct = feed_all([assistant("m1", usage(1), tool="Ba\x1b[31msh\n", model="mo\x00del")])
    assert list(acct.tools) == ["Ba?[31msh?"]
    assert acct.model == "mo?del"


def test_texts_are_capped():
    huge = "y" * (untrusted.MAX_TEXT * 3)
    acct = feed_all([b'{"type":"system","subtype":"init","session_id":"' + b"s" * 10_000 + b'","model":"'
                     + b"m" * 10_000 + b'"}', result(result=huge, session_id="z" * 10_000)])
    assert len(acct.result_text) == untrusted.MAX_TEXT and acct.result_text.endswith("…")
    assert len(acct.session_id) <= untrusted.MAX_NAME
    assert len(acct.model) <= untrusted.MAX_NAME


def test_message_ids_remembered_are_bounded():
    acct = Accounting()
    for n in range(50):
        acct.feed(assistant(f"{n:04d}" + "i" * 100_000, usage(1)))
    assert acct.messages == 50 and acct.input == 50
    assert sum(len(i) for i in acct._recent) <= 16 * 128


def test_fold_tools_keeps_counts():
    tools = {f"t{n:03d}": 1 for n in range(300)}
    tools[OTHER_TOOLS] = 5
    folded = fold_tools(tools)
    assert len(folded) == MAX_TOOL_NAMES and sum(folded.values()) == 305


def test_record_and_document_are_strict_json_with_hostile_values():
    attempt = Attempt(1)
    for line in [assistant("m1", usage(10, 1)), b'{"type":"result","total_cost_usd":NaN,"usage":'
                 b'{"input_tokens":-1000000000000},"num_turns":Infinity}']:
        attempt.acct.feed(line)
    record = instance_record("a", "succeeded", [attempt], stdout_log=None, stderr_log=None)
    doc = build_document({"run_id": "r", "weird": float("nan")}, [record])
    text = strictjson.dumps(doc)
    parsed = strictjson.loads_strict(text)
    assert parsed["weird"] is None
    assert parsed["instances"][0]["tokens"]["input"] == 10
    assert parsed["instances"][0]["cost_source"] == "estimate"
    assert parsed["instances"][0]["num_turns"] is None


def test_strictjson_never_writes_nan():
    text = strictjson.dumps({"a": [float("inf"), (1.5, float("-inf"))], "b": float("nan")})
    assert strictjson.loads_strict(text) == {"a": [None, [1.5, None]], "b": None}
    with pytest.raises(ValueError):
        strictjson.loads_strict('{"a": NaN}')


def test_journal_lines_are_strict_json():
    from orchestrator_pex.journal import encode

    line = encode({"event": "instance_finished", "record": {"cost_usd": float("nan"), "x": [float("inf")]}})
    assert strictjson.loads_strict(line)["record"] == {"cost_usd": None, "x": [None]}


def test_a_plausible_result_cost_below_the_table_is_the_agents_own_figure():
    """The pricing table may lag the vendor (real Claude Code 2.1.330 charged 0.75 of it for claude-opus-5-5): a
    result that accounts for every streamed token and costs at least half the estimate is the instance's cost."""
    streamed = feed_all([assistant("m1", usage(1000, 10))])
    estimate = streamed.streamed_estimate()
    acct = feed_all([assistant("m1", usage(1000, 10)),
                     result(usage={"input_tokens": 1000, "output_tokens": 40}, total_cost_usd=0.75 * estimate)])
    assert acct.cost_source == "result" and acct.cost_usd == pytest.approx(0.75 * estimate)


def test_a_result_cost_far_below_the_streamed_usage_is_a_lie():
    streamed = feed_all([assistant("m1", usage(1000, 10))])
    estimate = streamed.streamed_estimate()
    acct = feed_all([assistant("m1", usage(1000, 10)),
                     result(usage={"input_tokens": 1000, "output_tokens": 40}, total_cost_usd=0.1 * estimate)])
    assert acct.cost_source == "stream" and acct.cost_usd == pytest.approx(estimate)
