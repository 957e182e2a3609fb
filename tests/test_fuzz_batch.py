"""Hypothesis fuzzing of batch files: generated from the schema, then mutated; every outcome is a valid batch or
one ConfigError line naming the file (exit 2), never a traceback.

Batches are built from the keys and types of :mod:`orchestrator_pex.config` (TOML via ``tomli_w``, and the zen
JSON layout), then mutated: a value replaced by one of another type, out of range, non-finite, holding control
characters or lone surrogates, deeply nested or large; unknown keys; raw bytes inserted, deleted or flipped.
Most examples run in-process (``config.parse_batch`` then ``plan.make_plan``); a few run the real command line.
Deterministic: ``derandomize=True`` and no example database.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator_pex import config, plan
from orchestrator_pex.errors import MAX_PROBLEM_LINES, ConfigError, one_line

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=200,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs",)), max_size=30)
SECONDS = st.floats(min_value=0.001, max_value=1e6, allow_nan=False)
POS_INT = st.integers(min_value=1, max_value=10**6)

INSTANCE_FIELDS = {
    "description": TEXT, "model": TEXT, "permission_mode": st.sampled_from(config.PERMISSION_MODES),
    "allowed_tools": st.lists(TEXT, max_size=3), "disallowed_tools": st.lists(TEXT, max_size=3),
    "env": st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True), TEXT, max_size=3),
    "timeout": SECONDS, "stall_timeout": SECONDS, "max_turns": POS_INT, "tags": st.lists(TEXT, max_size=3),
    "max_tokens": POS_INT, "max_cost_usd": st.floats(min_value=0.01, max_value=1000), "retries": st.integers(0, 5),
    "append_system_prompt": TEXT,
}
TOP_FIELDS = {"concurrency": st.integers(1, 64), "stagger": SECONDS, "deadline": SECONDS, "grace_period": SECONDS}

#: Values a mutation puts in place of a good one.
HOSTILE = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=40),  # any code points: control characters, NUL, lone surrogates (JSON only)
    st.text(st.sampled_from("\x00\t\n\r\x1b\x7f\x85\u2028"), min_size=1, max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(min_value=1, max_value=300).map(lambda n: _nest(n)),
    st.integers(min_value=1000, max_value=100_000).map(lambda n: "x" * n),
)


def _nest(depth: int):
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def batches(draw):
    """A batch as a dict, drawn from the schema (valid before mutation, except by chance of the text drawn)."""
    n = draw(st.integers(1, 4))
    names = draw(st.lists(NAMES, min_size=n, max_size=n, unique=True))
    instances = []
    for name in names:
        inst = {"name": name}
        if draw(st.booleans()):
            inst["prompt"] = draw(TEXT.filter(bool))
        else:
            inst["argv"] = ["/bin/true", *draw(st.lists(TEXT, max_size=2))]
        for key in draw(st.lists(st.sampled_from(sorted(INSTANCE_FIELDS)), max_size=4, unique=True)):
            inst[key] = draw(INSTANCE_FIELDS[key])
        instances.append(inst)
    doc = {"claude": "/bin/true", "instances": instances}
    for key in draw(st.lists(st.sampled_from(sorted(TOP_FIELDS)), max_size=3, unique=True)):
        doc[key] = draw(TOP_FIELDS[key])
    return doc


@st.composite
def mutated(draw):
    doc = draw(batches())
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["top", "instance", "unknown", "deep"]))
        inst = draw(st.sampled_from(doc["instances"]))
        if where == "top":
            doc[draw(st.sampled_from(["claude", "start_at", "results_dir", *TOP_FIELDS]))] = draw(HOSTILE)
        elif where == "instance":
            key = draw(st.sampled_from(["name", "prompt", "argv", "cwd", "session_id", "resume", *INSTANCE_FIELDS]))
            inst[key] = draw(HOSTILE)
        elif where == "unknown":
            inst[draw(st.text(max_size=10))] = draw(HOSTILE)
        else:
            doc["defaults"] = {"env": {"X": draw(HOSTILE)}}
    return doc


def _toml_bytes(doc) -> bytes | None:
    try:
        return tomli_w.dumps(doc).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
        return None  # not representable in TOML (None, NaN keys, lone surrogates): the JSON form covers it


def _zen(doc) -> dict:
    """The zen JSON layout of ``doc``: ``prompt`` is ``command``, ``max_tokens`` is ``max_tokens_per_command``;
    keys zen lacks are dropped (zen refuses them; other examples cover our TOML keys)."""
    rename = {"prompt": "command", "max_tokens": "max_tokens_per_command"}
    keep = {"name", "command", "description", "permission_mode", "max_tokens_per_command", "allowed_tools",
            "session_id"}
    instances = []
    for inst in doc["instances"]:
        zen = {rename.get(k, k): v for k, v in inst.items()}
        instances.append({k: v for k, v in zen.items() if k in keep or not isinstance(k, str) or k == "argv"})
    return {"instances": instances}


def check(data: bytes, name: str) -> None:
    """The invariant: a batch whose every value is within its checks, or a ConfigError of one line per problem
    (every problem at once, at most MAX_PROBLEM_LINES and a count), each naming the file."""
    try:
        batch = config.parse_batch(data, name)
    except ConfigError as exc:
        lines = str(exc).split("\n")
        assert 1 <= len(lines) <= MAX_PROBLEM_LINES + 1, lines
        for text in lines:
            assert "\r" not in text and one_line(text) == text, text
            assert text.startswith(f"{name}: ") or text.startswith("... and "), text
        return
    _assert_valid(batch)
    plan.make_plan(batch)


def _assert_valid(batch) -> None:
    from orchestrator_pex import limits

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, (tuple, list)):
            for v in value:
                yield from strings(v)
        elif isinstance(value, dict):
            for k, v in value.items():
                yield k
                yield from strings(v)

    for inst in config.apply_defaults(batch):
        for field in attrs.fields(type(inst)):
            value = getattr(inst, field.name)
            for s in strings(value):
                assert "\x00" not in s and not any(0xD800 <= ord(c) <= 0xDFFF for c in s), (field.name, s)
            if isinstance(value, float):
                assert math.isfinite(value) and 0 < value <= max(limits.MAX_SECONDS, limits.MAX_DOLLARS)
            if isinstance(value, int) and not isinstance(value, bool):
                assert 0 <= value <= limits.MAX_COUNT
    for key in ("stagger", "deadline", "grace_period"):
        value = getattr(batch, key)
        assert value is None or (math.isfinite(value) and 0 < value <= limits.MAX_SECONDS)
    assert batch.concurrency is None or 1 <= batch.concurrency <= limits.MAX_CONCURRENCY


@FUZZ
@given(mutated())
def test_fuzz_toml_batches(doc):
    data = _toml_bytes(doc)
    if data is not None:
        check(data, "batch.toml")


@FUZZ
@given(mutated())
def test_fuzz_zen_json_batches(doc):
    check(json.dumps(_zen(doc), allow_nan=True).encode("utf-8"), "batch.json")
    check(json.dumps(doc, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass"), "batch.json")


@FUZZ
@given(batches(), st.data())
def test_fuzz_raw_byte_mutations(doc, data):
    """Bytes inserted, deleted or replaced anywhere in a valid file (TOML and JSON)."""
    for raw, name in ((_toml_bytes(doc), "batch.toml"), (json.dumps(_zen(doc)).encode(), "batch.json")):
        if raw is None:
            continue
        buf = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(buf)))
            op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
            chunk = data.draw(st.one_of(st.binary(min_size=1, max_size=8),
                                        st.sampled_from([b"[" * 200, b"{" * 200, b"\x00", b"\\u0000", b"\\ud800",
                                                         b"\xff\xfe", b'"', b"nan", b"1e999", b"9" * 50])))
            if op == "insert":
                buf[pos:pos] = chunk
            elif op == "delete":
                del buf[pos:pos + len(chunk)]
            else:
                buf[pos:pos + len(chunk)] = chunk
        check(bytes(buf), name)


HOSTILE_FILES = [
    ("nul.toml", b'[[instances]]\nname = "a"\nargv = ["/bin/echo", "\\u0000"]\n'),
    ("deep.json", b'{"instances": ' + b"[" * 3000 + b"]" * 3000 + b"}"),
    ("sur.json", b'{"instances": [{"name": "a", "command": "\\udfff"}]}'),
    ("start.toml", b'start_at = "0001-01-01T00:00:00"\n[[instances]]\nname = "a"\nprompt = "p"\n'),
]


@pytest.mark.parametrize("name,content", HOSTILE_FILES, ids=[n for n, _ in HOSTILE_FILES])
def test_hostile_files_through_the_real_command_line(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    fake_claude = str(Path(__file__).resolve().parent / "support" / "fake_claude")  # validate checks the agent too
    proc = subprocess.run([sys.executable, "-m", "orchestrator_pex", "validate", str(path), "--claude", fake_claude],
                          capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(f"orchestrator-pex: {name}: ")
