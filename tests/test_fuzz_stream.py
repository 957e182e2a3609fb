"""Hypothesis fuzzing of the stream reader: real event shapes, then mutated the way a hostile agent would.

Events come from the real Claude Code 2.1.330 transcripts in tests/data/reference/. Each generated line is one of
them with mutations: hostile numbers (negative, NaN, Infinity, huge, strings, bools, floats) at any numeric leaf,
unicode and huge strings at any string leaf, deep nesting spliced in, keys reordered, the line truncated, serialised
in the CLI's compact layout (fast path) or another (slow path). Properties: :meth:`Accounting.feed` never raises;
every recorded number is finite and non-negative; no token figure ever goes down as lines arrive; tool names,
texts and remembered ids stay within their caps; the record built from it is strict JSON; memory stays bounded for
a long hostile stream (tracemalloc). Deterministic: derandomized, no example database, bounded example counts.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from orchestrator_pex import strictjson, untrusted
from orchestrator_pex.accounting import MAX_TOOL_NAMES, Accounting
from orchestrator_pex.results import instance_record
from orchestrator_pex.runtime import Attempt

REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "claude-code-2.1.330"
EVENTS = [json.loads(line) for path in sorted(REFERENCE.glob("*.jsonl"))
          for line in path.read_bytes().split(b"\n") if line.strip()]
assert EVENTS, f"reference transcripts missing under {REFERENCE}"

# No shrinking phase: a failure is reported as generated (shrinking hostile lines can take minutes).
SETTINGS = settings(derandomize=True, database=None, deadline=None, max_examples=150,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HOSTILE_NUMBERS = st.sampled_from([
    -1, -10**12, 10**12, 10**12 + 1, 10**30, 10**400, -0.0, 0.5, 1e308, -1e308, float("nan"), float("inf"),
    float("-inf"), True, False, None, "123", "", [], {}, 2**63, -(2**63),
]) | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
HOSTILE_TEXT = st.text(max_size=40) | st.sampled_from(["", "\x00", "\u202e", "\ud800", "x" * 5000, "<synthetic>",
                                                      "tool_use", '"type":"tool_use"'])


def _paths(value, prefix=()):
    """Every leaf path of a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))
    yield prefix


def _set(value, path, new):
    if not path:
        return new
    out = dict(value) if isinstance(value, dict) else list(value)
    out[path[0]] = _set(value[path[0]], path[1:], new)
    return out


def _reorder(value, draw):
    if isinstance(value, dict):
        keys = draw(st.permutations(list(value)))
        return {k: _reorder(value[k], draw) for k in keys}
    if isinstance(value, list):
        return [_reorder(v, draw) for v in value]
    return value


@st.composite
def hostile_line(draw) -> bytes:
    event = draw(st.sampled_from(EVENTS))
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(list(_paths(event))))
        kind = draw(st.sampled_from(["number", "text", "nest", "drop"]))
        if kind == "number":
            event = _set(event, path, draw(HOSTILE_NUMBERS))
        elif kind == "text":
            event = _set(event, path, draw(HOSTILE_TEXT))
        elif kind == "nest":
            depth = draw(st.sampled_from([2, 50, 5000]))
            nested: object = draw(HOSTILE_NUMBERS)
            for _ in range(min(depth, 60)):
                nested = [nested]
            event = _set(event, path, nested)
        else:
            event = _set(event, path, None)
    if draw(st.booleans()):
        event = _reorder(event, draw)
    compact = draw(st.booleans())
    try:
        text = json.dumps(event, separators=(",", ":") if compact else (", ", ": "), ensure_ascii=draw(st.booleans()))
    except (ValueError, RecursionError):
        text = "{}"
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.integers(0, 19)) == 0:
        depth = draw(st.sampled_from([1000, 100_000]))
        data = b"[" * depth + b"]" * depth if draw(st.booleans()) else data[:-1] + b',"x":' + b"[" * depth
    return data


def _check(acct: Accounting) -> None:
    tokens = acct.tokens()
    assert all(type(v) is int and 0 <= v for v in tokens.values()), tokens
    cost = acct.cost_usd
    assert isinstance(cost, float) and math.isfinite(cost) and cost >= 0.0, cost
    assert acct.cost_source in ("result", "stream", "estimate")
    assert len(acct.tools) <= MAX_TOOL_NAMES
    assert all(type(n) is int and n > 0 and len(k) <= untrusted.MAX_NAME for k, n in acct.tools.items())
    for value in (acct.model, acct.session_id, acct.agent_version):
        assert value is None or (isinstance(value, str) and len(value) <= untrusted.MAX_NAME)
    assert acct.result_text is None or len(acct.result_text) <= untrusted.MAX_TEXT
    assert acct.num_turns is None or (type(acct.num_turns) is int and acct.num_turns >= 0)
    assert acct.api_error_status is None or 100 <= acct.api_error_status <= 599
    assert len(acct._recent) <= 16


@SETTINGS
@given(st.lists(hostile_line(), min_size=1, max_size=25))
def test_reader_never_raises_and_numbers_stay_sane(lines):
    attempt = Attempt(1)
    acct = attempt.acct
    previous = acct.tokens()
    for line in lines:
        assert acct.feed(line) in (True, False)
        now = acct.tokens()
        assert all(now[k] >= previous[k] for k in now), (previous, now)  # no line lowers spend
        previous = now
        _check(acct)
    record = instance_record("fuzz", "succeeded", [attempt], stdout_log=None, stderr_log=None)
    parsed = strictjson.loads_strict(strictjson.dumps(record, ensure_ascii=False))
    assert parsed["tokens"]["total"] == sum(previous.values())
    assert math.isfinite(parsed["cost_usd"]) and parsed["cost_usd"] >= 0


@settings(derandomize=True, database=None, deadline=None, max_examples=2, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile_line(), min_size=5, max_size=10), st.integers(0, 2**32))
def test_memory_bounded_for_a_long_hostile_stream(templates, seed):
    """5,000 lines, each carrying a distinct 2 KB tool name, model and message id (30 MB if kept), between hostile
    lines."""
    acct = Accounting()
    tracemalloc.start()
    try:
        for n in range(5_000):
            unique = f"{seed}-{n}-" + "n" * 2048
            acct.feed(json.dumps({"type": "assistant", "message": {
                "id": unique, "type": "message", "role": "assistant", "model": unique,
                "content": [{"type": "tool_use", "id": "t", "name": unique, "input": {}}],
                "usage": {"input_tokens": 1, "output_tokens": 1}}}).encode())
            if n % 5 == 0:
                acct.feed(templates[n // 5 % len(templates)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _check(acct)
    assert acct.messages >= 5_000
    assert peak < 8 * 1024 * 1024, peak
