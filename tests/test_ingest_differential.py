"""Differential test of the stream reader: :meth:`Accounting.feed` against ``json.loads`` + ``handle`` per line.

The reader skips, without parsing, the lines that name no accounted event type (``"assistant"``, ``"result"``,
``"system"``, no ``\\u`` escape), and parses every other line with ``json``'s C scanner directly
(:func:`orchestrator_pex.untrusted.json_object`). This compares it, after every line, with the plainest reader —
``json.loads`` then :meth:`Accounting.handle` — over hostile lines built from the real Claude Code 2.1.330 events:
duplicate top-level keys after the first ones (``type``, ``message``), ``usage`` objects nested in tool input and
in text (escaped), escaped quotes, ``\\u`` escapes disguising ``assistant``/``usage``/``type``, other key orders and
spacings, huge numbers, truncated lines. Property: the ledger (tokens, tools, model, session, messages, result,
cost) is identical after every line; ``bad_lines`` (and ``feed``'s verdict) too, for every line that is valid JSON
(an invalid line that names no accounted type is skipped unparsed, so it is not counted as bad — it accounts
nothing either way). Deterministic: derandomized, no example database, bounded example counts.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from orchestrator_pex.accounting import Accounting
from tests.support.ledger import accounting_state

REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "claude-code-2.1.330"
EVENTS = [json.loads(line) for path in sorted(REFERENCE.glob("*.jsonl"))
          for line in path.read_bytes().split(b"\n") if line.strip()]
assert EVENTS, f"reference transcripts missing under {REFERENCE}"
ASSISTANT = [e for e in EVENTS if e.get("type") == "assistant"]
assert ASSISTANT

SETTINGS = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LAYOUTS = [
    {"separators": (",", ":"), "ensure_ascii": False},  # the CLI's own
    {"sort_keys": True, "separators": (", ", ": ")},
    {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": True},
    {"separators": (" , ", " : ")},
]
HUGE = [10**12, 10**12 + 1, 10**13, 10**30, 10**400, -1, 2**63, 1.5, 1e308, True, None, "7"]


class Plain(Accounting):
    """The reference: every line through ``json.loads`` and ``handle``."""

    __slots__ = ()

    def feed(self, line: bytes) -> bool:
        try:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line.strip():
                return True
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):
                event = None
            if not isinstance(event, dict):
                self.bad_lines += 1
                return False
            self.handle(event)
            return True
        except Exception:  # noqa: BLE001 - as Accounting.feed
            self.bad_lines += 1
            return False


def ledger(acct: Accounting) -> dict:
    return {**accounting_state(acct), "streamed": acct.streamed()}


def _dumps(event, layout) -> str:
    return json.dumps(event, **layout)


@st.composite
def hostile_event(draw) -> dict:
    event = json.loads(json.dumps(draw(st.sampled_from(EVENTS))))
    if event.get("type") == "assistant" and draw(st.booleans()):
        message = event["message"]
        kind = draw(st.sampled_from(["nested-usage", "text-usage", "huge", "id", "tools", "no-usage", "model"]))
        if kind == "nested-usage":  # a usage object inside a tool input: structure, not the message's usage
            message["content"] = [{"type": "tool_use", "id": "toolu_x", "name": "Bash",
                                   "input": {"usage": {"input_tokens": 999_999, "output_tokens": 7},
                                             "message": {"id": "fake", "usage": {"input_tokens": 5}},
                                             "type": "assistant", "content": [{"type": "tool_use"}]}}]
        elif kind == "text-usage":  # the same inside text: escaped quotes
            message["content"] = [{"type": "text", "text": '{"type":"assistant","usage":{"input_tokens":1}} \\"'}]
        elif kind == "huge":
            key = draw(st.sampled_from(["input_tokens", "output_tokens", "cache_creation_input_tokens",
                                        "cache_read_input_tokens"]))
            message.setdefault("usage", {})[key] = draw(st.sampled_from(HUGE))
        elif kind == "id":
            message["id"] = draw(st.sampled_from(["msg_1", "msg_2", "m" * 300, "", "\u00e9\u2603", 7, None]))
        elif kind == "tools":
            message["content"] = [{"type": "tool_use", "id": f"t{i}", "name": draw(st.sampled_from(
                ["Bash", "Read", "\x00", "x" * 400, "", 3]))} for i in range(draw(st.integers(0, 3)))]
        elif kind == "no-usage":
            message.pop("usage", None)
            message["content"] = [{"type": "tool_use", "id": "t", "name": "Bash",
                                   "input": {"usage": {"input_tokens": 123}}}]
        else:
            message["model"] = draw(st.sampled_from(["<synthetic>", "claude-x", None, "a\nb", 5]))
    return event


def _raw_mutation(draw, line: str) -> str:
    kind = draw(st.sampled_from(["none", "none", "dup-type", "dup-message", "disguise", "truncate", "prefix-ws",
                                 "suffix-ws", "user-disguise"]))
    if kind == "dup-type":  # a later top-level key wins in json.loads
        return line[:-1] + ',"type":' + json.dumps(draw(st.sampled_from(["user", "assistant", "result", "x"]))) + "}"
    if kind == "dup-message":
        return line[:-1] + ',"message":{"id":"dup","usage":{"input_tokens":42},"content":[{"type":"tool_use",' \
                           '"name":"Dup"}]}}'
    if kind == "disguise":
        return (line.replace('"assistant"', '"\\u0061ssistant"').replace('"usage"', '"\\u0075sage"')
                .replace('"result"', '"r\\u0065sult"').replace('"system"', '"\\u0073ystem"'))
    if kind == "user-disguise":  # a user line whose later duplicate type is an escaped "assistant"
        return line[:-1] + ',"type":"\\u0061ssistant"}'
    if kind == "truncate" and len(line) > 2:
        return line[: draw(st.integers(1, len(line) - 1))] + draw(st.sampled_from(["", "}", "]}", '"}']))
    if kind == "prefix-ws":
        return " " + line
    if kind == "suffix-ws":
        return line + " "
    return line


@st.composite
def hostile_stream(draw) -> list:
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        event = draw(hostile_event())
        line = _dumps(event, draw(st.sampled_from(LAYOUTS)))
        lines.append(_raw_mutation(draw, line).encode("utf-8", "surrogatepass"))
    return lines


def _valid(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


@SETTINGS
@given(hostile_stream())
def test_reader_is_exactly_json_loads_and_handle(lines):
    fast, plain = Accounting(), Plain()
    for line in lines:
        verdict_fast, verdict_plain = fast.feed(line), plain.feed(line)
        assert ledger(fast) == ledger(plain), line
        if _valid(line) or not line.strip():
            assert verdict_fast == verdict_plain, line
    if all(_valid(line) for line in lines):
        assert fast.bad_lines == plain.bad_lines


def test_every_layout_of_the_reference_is_read_alike():
    """The same events in every layout: identical ledgers, and identical to the plain reader's."""
    lines = (REFERENCE / "tool-use-allowed.stream.jsonl").read_bytes().split(b"\n")
    events = [json.loads(line) for line in lines if line.strip()]
    ledgers = []
    for layout in LAYOUTS:
        fast, plain = Accounting(), Plain()
        for event in events:
            line = _dumps(event, layout).encode()
            assert fast.feed(line) and plain.feed(line)
        assert ledger(fast) == ledger(plain)
        ledgers.append(ledger(fast))
    assert all(x == ledgers[0] for x in ledgers)
    assert ledgers[0]["tokens"] == {"input": 2400, "output": 49, "cache_creation": 600, "cache_read": 10000}


def test_duplicate_top_level_type_is_read_as_json_loads_reads_it():
    """``{"type":"user",…,"type":"assistant"}`` is an assistant event to json.loads: its usage counts."""
    event = json.loads(json.dumps(max(ASSISTANT, key=lambda e: e["message"]["usage"]["input_tokens"])))
    event["type"] = "user"
    line = json.dumps(event, separators=(",", ":"))[:-1] + ',"type":"\\u0061ssistant"}'
    fast, plain = Accounting(), Plain()
    fast.feed(line.encode())
    plain.feed(line.encode())
    assert fast.messages == plain.messages == 1
    assert ledger(fast) == ledger(plain) and fast.total_tokens > 0


# -- Codex and Gemini CLI: their tool lines are read without a parse; the same property on their own events --------

OTHER_DIALECTS = {
    "codex": sorted((REFERENCE.parent / "codex-0.171.0").glob("*.jsonl")),
    "gemini": sorted((REFERENCE.parent / "gemini-0.61.0").glob("*.jsonl")),
}


def _other_ledger(reader) -> dict:
    return {"tokens": reader.tokens(), "tools": dict(reader.tools), "model": reader.model,
            "session_id": reader.session_id, "num_turns": reader.num_turns, "result": reader.result_text,
            "is_error": reader.is_error, "messages": reader.messages, "usage": reader.final_usage}


def _other_lines(agent: str) -> list:
    paths = OTHER_DIALECTS[agent]
    assert paths, f"{agent} reference transcripts missing"
    return [line for path in paths for line in path.read_bytes().split(b"\n") if line.strip()]


@SETTINGS
@given(st.sampled_from(sorted(OTHER_DIALECTS)), st.data())
def test_codex_and_gemini_readers_are_exactly_json_loads_and_handle(agent, data):
    from orchestrator_pex.agents import new_reader
    from orchestrator_pex.agents.reading import Reader

    source = _other_lines(agent)
    fast, plain = new_reader(agent), new_reader(agent)
    for _ in range(data.draw(st.integers(1, 12))):
        line = data.draw(st.sampled_from(source)).decode()
        kind = data.draw(st.sampled_from(["none", "dup-type", "dup-item", "disguise", "empty-name"]))
        if kind == "dup-type":
            line = line[:-1] + ',"type":' + json.dumps(data.draw(st.sampled_from(
                ["item.started", "turn.completed", "tool_result", "tool_use", "result", "x"]))) + "}"
        elif kind == "dup-item":
            line = line[:-1] + ',"item":{"type":"agent_message","text":"dup"},"tool_name":"Dup"}'
        elif kind == "disguise":
            line = line.replace('"type"', '"\\u0074ype"', 1)
        elif kind == "empty-name":
            line = line.replace('"tool_name":"', '"tool_name":"', 1).replace('"tool_name":"run_shell_command"',
                                                                           '"tool_name":""')
        raw = line.encode()
        fast.feed(raw)
        Reader.feed(plain, raw)  # the plain path: json.loads (untrusted.json_object) + handle, no shortcut
        assert _other_ledger(fast) == _other_ledger(plain), raw
