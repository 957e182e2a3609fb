"""Typed records (orchestrator_pex.records): every record kind round-trips through its JSON edges unchanged, with
the README's keys in the README's order; reading back is lenient about absent and unknown keys and refuses garbage
with one line naming the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator_pex import records, results
from orchestrator_pex.errors import RunDirError
from orchestrator_pex.records import InstanceRecord, RecordError, Tokens, record_from_json, to_json
from orchestrator_pex.runtime import Attempt
from orchestrator_pex.vocabulary import TOKEN_KEYS, TOKEN_TOTAL

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "data" / "reference" / "claude-code-2.1.330"

#: the README's instance record, key by key, in the order every record is written
KEYS = ["name", "agent", "status", "exit_code", "started_at", "finished_at", "duration_s", "attempts", "tokens",
        "cost_usd", "cost_source", "reasoning_tokens", "model", "models", "tools", "session_id", "session_name",
        "num_turns", "result", "error", "api_error_status", "agent_usage", "skipped_lines", "stdout_log",
        "stderr_log", "workspace", "tags", "description"]


def _record_validator():
    import jsonschema

    schema = json.loads((ROOT / "schemas" / "results.schema.json").read_text())
    return jsonschema.Draft202012Validator({**schema["$defs"]["record"], "$defs": schema["$defs"]})


def _attempt(transcript: str, number: int = 1, start: float = 1.7e9) -> Attempt:
    attempt = Attempt(number)
    for line in (REFERENCE / transcript).read_bytes().splitlines():
        attempt.acct.feed(line)
    attempt.started_at, attempt.finished_at, attempt.exit_code = start, start + 2.5, 0
    return attempt


def every_kind():
    """One record of each kind the orchestrator produces."""
    ran = InstanceRecord.of_attempts(
        "ran", "succeeded", [_attempt("tool-use-allowed.stream.jsonl", 1), _attempt("tool-use.result.json", 2)],
        stdout_log="logs/ran.stdout", stderr_log="logs/ran.stderr", agent="claude", session_name="s",
        tags=["nightly"], description="d",
        workspace={"repo": "/r", "path": "/p", "branch": "b", "base": "0" * 40, "dirty": False})
    api = InstanceRecord.of_attempts("api", "api-error", [_attempt("api-error-529.stream.jsonl")],
                                     stdout_log=None, stderr_log=None, agent="claude")
    started = {"event": "instance_started", "name": "x", "attempt": 2, "at": "2026-11-24T02:00:00.000Z"}
    return {
        "ran": ran,
        "api-error": api,
        "not-started": InstanceRecord.not_started("n", "not started: the batch budget was reached", tags=["a"],
                                                  description="why", agent="codex"),
        "skipped": InstanceRecord.skipped("s", "skipped: a needed instance failed"),
        "interrupted": InstanceRecord.interrupted("x", started),
        "running": InstanceRecord.live("x", "running", started),
        "pending": InstanceRecord.live("p", "pending"),
        "carried": ran.carry(api),
        "recovered": InstanceRecord.interrupted("x", started).with_spend_of(ran, attempts=True),
        "labelled": InstanceRecord.live("p", "pending").labelled(["t"], "described"),
    }


@pytest.mark.parametrize("kind", sorted(every_kind()))
def test_every_record_kind_round_trips_with_the_documented_keys(kind):
    record = every_kind()[kind]
    obj = to_json(record)
    assert list(obj) == KEYS
    assert list(obj["tokens"]) == [*TOKEN_KEYS, TOKEN_TOTAL]
    assert isinstance(obj["models"], list) and isinstance(obj["tags"], list)
    assert not list(_record_validator().iter_errors(obj)), kind
    text = json.dumps(obj)
    assert record_from_json(json.loads(text), "f") == record  # read back: the same record
    assert json.dumps(to_json(record_from_json(json.loads(text), "f"))) == text  # and the same bytes


def test_records_hold_no_dict_and_cannot_be_patched():
    record = every_kind()["ran"]
    assert not hasattr(record, "__dict__") and not hasattr(record.tokens, "__dict__")  # slots: small in memory
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        record.status = "failed"  # type: ignore[misc]


def test_of_attempts_sums_every_attempt():
    one, two = _attempt("tool-use-allowed.stream.jsonl", 1), _attempt("tool-use.result.json", 2, start=1.7e9 + 10)
    record = InstanceRecord.of_attempts("a", "succeeded", [one, two], stdout_log=None, stderr_log=None)
    assert record.attempts == 2 and record.started_at == "2023-11-14T22:13:20.000Z"
    assert record.duration_s == 12.5
    assert record.tokens.total == one.acct.total_tokens + two.acct.total_tokens > 0
    assert record.tokens.total == sum(getattr(record.tokens, k) for k in TOKEN_KEYS)
    assert to_json(record) == results.instance_record("a", "succeeded", [one, two], stdout_log=None,
                                                      stderr_log=None)


def test_carry_adds_earlier_sessions_spend():
    later = InstanceRecord("a", status="succeeded", attempts=1, tokens=Tokens(1, 2, 3, 4, 10), cost_usd=0.25,
                           cost_source="result", reasoning_tokens=5, tools={"Bash": 1, "Read": 2},
                           started_at="2026-01-02T00:00:00.000Z")
    earlier = InstanceRecord("a", status="cancelled", attempts=2, tokens=Tokens(10, 20, 0, 0, 30), cost_usd=0.5,
                             cost_source="estimate", tools={"Bash": 3}, started_at="2026-01-01T00:00:00.000Z")
    both = later.carry(earlier)
    assert both.tokens == Tokens(11, 22, 3, 4, 40)
    assert both.tools == {"Bash": 4, "Read": 2} and list(both.tools) == ["Bash", "Read"]
    assert (both.cost_usd, both.cost_source, both.reasoning_tokens, both.attempts) == (0.75, "estimate", 5, 3)
    assert both.started_at == "2026-01-01T00:00:00.000Z" and both.status == "succeeded"
    assert later.attempts == 1  # the original is untouched


def test_an_older_record_reads_with_defaults_and_unknown_keys_are_dropped():
    older = {"name": "a", "status": "succeeded", "exit_code": 0, "tokens": {"input": 5, "output": 7},
             "cost_usd": 0, "tools": {"Bash": 1}, "from_a_newer_version": {"x": 1}}
    record = record_from_json(older, "results.json", "instances[0]")
    obj = to_json(record)
    assert list(obj) == KEYS and "from_a_newer_version" not in obj
    # each missing counter is 0, "total" too: totals (and merge) count what the record says
    assert obj["tokens"] == {"input": 5, "output": 7, "cache_creation": 0, "cache_read": 0, "total": 0}
    assert (obj["models"], obj["tags"], obj["agent"], obj["workspace"], obj["attempts"]) == ([], [], None, None, 0)
    assert not list(_record_validator().iter_errors(obj))
    # a journal event names its instance outside the record
    assert record_from_json({"status": "failed"}, "journal.jsonl", name="b").name == "b"


@pytest.mark.parametrize("obj, key, message", [
    ([], "instances[3]", "expected an object, got a list"),
    ({"status": "failed"}, "instances[3].name", "required key is missing"),
    ({"name": 7}, "instances[3].name", "expected a string, got 7"),
    ({"name": "a", "tokens": "many"}, "instances[3].tokens", 'expected an object, got "many"'),
    ({"name": "a", "tokens": {"input": -1}}, "instances[3].tokens.input", "expected a non-negative integer"),
    ({"name": "a", "tools": {"Bash": True}}, "instances[3].tools.Bash", "expected a non-negative integer"),
    ({"name": "a", "cost_usd": float("inf")}, "instances[3].cost_usd", "expected a finite non-negative number"),
    ({"name": "a", "attempts": "2"}, "instances[3].attempts", "expected a non-negative integer"),
    ({"name": "a", "exit_code": 1.5}, "instances[3].exit_code", "expected an integer or null"),
    ({"name": "a", "models": ["m", 1]}, "instances[3].models", "expected a list of strings"),
    ({"name": "a", "workspace": "/tmp"}, "instances[3].workspace", "expected an object or null"),
    ({"name": "a", "error": {"no": "text"}}, "instances[3].error", "expected a string or null"),
])
def test_a_garbled_record_is_one_line_naming_file_and_key(obj, key, message):
    with pytest.raises(RecordError) as caught:
        record_from_json(obj, "/runs/r/results.json", "instances[3]")
    text = str(caught.value)
    assert text.startswith(f"/runs/r/results.json: {key}: {message}")
    assert "\n" not in text and (caught.value.file, caught.value.key) == ("/runs/r/results.json", key)
    assert isinstance(caught.value, RunDirError) and caught.value.exit_status == 1


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                 max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={k: _json for k in KEYS}) | _json)
def test_any_json_value_reads_as_a_record_or_one_line_error(obj):
    try:
        record = record_from_json(obj, "f.json", "r")
    except RecordError as exc:
        assert str(exc).startswith("f.json: r") and "\n" not in str(exc)
    else:
        assert record_from_json(json.loads(json.dumps(to_json(record))), "f.json") == record


@pytest.mark.damages_documents
def test_merge_refuses_a_garbled_input_record_with_one_line(cli, tmp_path):
    doc = {"batch": "b.toml", "run_id": "r", "status": "failed",
           "instances": [{"name": "a", "status": "failed", "tokens": {"input": "lots"}}]}
    (tmp_path / "in.json").write_text(json.dumps(doc))
    proc = cli("merge", "in.json")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and proc.stdout == b""
    assert err.count("\n") == 1 and "in.json: instances[0].tokens.input: expected a non-negative integer" in err
    assert "Traceback" not in err


@pytest.mark.damages_documents
def test_runs_show_of_a_garbled_journal_record_is_one_line(cli, tmp_path):
    from orchestrator_pex import journal

    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    with journal.Journal.open(str(run_dir)) as jr:
        jr.append_sync({"event": "run_started", "run_id": "r1", "batch": "b.toml",
                        "started_at": "2026-01-01T00:00:00Z"})
        jr.append_sync({"event": "instance_finished", "name": "a", "record": {"name": "a", "status": "failed",
                                                                            "cost_usd": "free"}})
        jr.append_sync({"event": "run_finished", "status": "failed"})
    proc = cli("runs", "show", "r1", "--results-dir", str(tmp_path / "runs"), "--json")
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{run_dir / 'journal.jsonl'}: record of 'a'.cost_usd: expected a finite non-negative number" in err


def test_to_json_is_a_fresh_object():
    record = every_kind()["ran"]
    obj = to_json(record)
    obj["tools"]["Bash"] = 10**6
    obj["workspace"]["dirty"] = True
    assert record.tools.get("Bash") != 10**6 and record.workspace is not None and record.workspace["dirty"] is False
    assert records.encode(record) == json.dumps(to_json(record), separators=(",", ":")).encode()


def test_run_document_keeps_the_recorded_order_and_computes_totals():
    recs = [to_json(every_kind()["ran"]), to_json(every_kind()["skipped"]),
            {"name": "old", "status": "from-a-newer-version", "tokens": {"input": "x"}, "cost_usd": None}]
    # a journal's run_meta: run_started's "instances" count and run_finished's "totals" keep their places
    meta = {"run_id": "r", "instances": 3, "batch": "b.toml", "orchestrator_version": "1", "totals": {"stale": 1},
            "resumed_at": ["2026-01-01T00:00:00Z"]}
    doc = records.document_to_json(records.RunDocument.of(meta, recs))
    assert list(doc) == ["schema_version", "run_id", "batch", "started_at", "finished_at", "status", "instances",
                         "orchestrator_version", "totals", "resumed_at"]
    assert doc["instances"] == recs and doc["started_at"] is None
    totals = doc["totals"]
    assert list(totals) == ["instances", "by_status", "tokens", "cost_usd", "tools"]
    assert totals["instances"] == 3 and totals["by_status"]["skipped"] == 1
    assert totals["by_status"]["from-a-newer-version"] == 1 and list(totals["by_status"])[0] == "succeeded"
    assert totals["tokens"]["total"] == recs[0]["tokens"]["total"] and totals["cost_usd"] == recs[0]["cost_usd"]
    assert results.build_document(meta, recs) == doc and results.totals(recs) == totals


def _event_validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads((ROOT / "schemas" / "event.schema.json").read_text()))


@pytest.mark.parametrize("event, keys", [
    (records.InstanceStarted("a", 2, "2026-01-01T00:00:00.000Z", 1234, "claude"),
     ["event", "name", "attempt", "at", "stdout_offset", "agent"]),
    (records.InstanceRetry("a", 1, 529, 2.5), ["event", "name", "attempt", "api_error_status", "delay_s"]),
    (records.InstanceFinished("a", to_json(every_kind()["ran"])), ["event", "name", "record"]),
    (records.RunFinished("failed", 1, "2026-01-01T00:00:00.000Z", results.totals([])),
     ["event", "status", "exit_status", "finished_at", "totals"]),
    (records.RunFinished("failed", 70, "2026-01-01T00:00:00.000Z", results.totals([]),
                         internal_error={"error": "internal error: x", "traceback": None}),
     ["event", "status", "exit_status", "finished_at", "totals", "internal_error"]),
    (records.RunFinished("failed", finished_at="2026-01-01T00:00:00.000Z", totals=results.totals([]),
                         note="closed by resume: nothing to rerun"),
     ["event", "status", "finished_at", "totals", "note"]),
])
def test_journal_events_have_the_documented_keys(event, keys):
    from orchestrator_pex import journal

    obj = records.event_to_json(event)
    assert list(obj) == keys and obj["event"] == records.EVENT_KINDS[type(event)]
    line = json.loads(journal.encode(obj))  # as the journal writes it (schema_version added)
    assert not list(_event_validator().iter_errors(line)), obj
