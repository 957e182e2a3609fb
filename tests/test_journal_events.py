"""Typed journal events (orchestrator_pex.records, read by orchestrator_pex.journal): every event kind the
orchestrator writes is a frozen class written by ``event_to_json`` with the README's keys in order and read back by
``event_from_json`` into the same value; a garbled event is skipped with one line naming the file, line and key; a
journal of the previous format (and one with kinds of a newer version) still reads."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator_pex import history, journal, records, results
from orchestrator_pex.records import RecordError, event_from_json, event_to_json

ROOT = Path(__file__).resolve().parent.parent
AT = "2026-01-01T00:00:00.000Z"
RECORD = records.to_json(records.InstanceRecord.not_started("a", "not started: the batch budget was reached"))

#: one event of every kind, and the keys it is written with (README "Events"), in order
EVERY_KIND = [
    (records.RunStarted.of(3, {"run_id": "r", "batch": "/b.toml", "started_at": AT, "finished_at": None,
                               "status": "running", "run_dir": "/runs/r", "orchestrator_version": "1"}),
     ["event", "instances", "run_id", "batch", "started_at", "finished_at", "status", "run_dir",
      "orchestrator_version"]),
    (records.InstanceStarted("a", 2, AT, 1234, "claude"), ["event", "name", "attempt", "at", "stdout_offset", "agent"]),
    (records.InstanceRetry("a", 1, 529, 2.5), ["event", "name", "attempt", "api_error_status", "delay_s"]),
    (records.InstanceFinished("a", RECORD), ["event", "name", "record"]),
    (records.WorkspaceBases([{"repo": "/src/r", "ref": "main", "commit": "a" * 40}]), ["event", "bases"]),
    (records.WorkspaceCreated("a", "/src/r", "/runs/r/worktrees/a", "orchestrator/r/a", "b" * 40),
     ["event", "name", "repo", "path", "branch", "base"]),
    (records.WarningEvent("batch deadline of 5s reached"), ["event", "message"]),
    (records.ProgressEvent(1, 3, {"succeeded": 1, "running": 1, "pending": 1}, 1, 12.5, 25.0, 1000, 0.25,
                           {"max_tokens": None, "max_cost_usd": 1.0}),
     ["event", "done", "total", "by_state", "running", "elapsed_s", "eta_s", "tokens", "cost_usd", "budget"]),
    (records.RunFinished("failed", 1, AT, results.totals([RECORD])),
     ["event", "status", "exit_status", "finished_at", "totals"]),
    (records.RunFinished("failed", 70, AT, results.totals([]),
                         internal_error={"error": "internal error: x", "traceback": None}),
     ["event", "status", "exit_status", "finished_at", "totals", "internal_error"]),
    (records.RunFinished("succeeded", finished_at=AT, totals=results.totals([]),
                         note="closed by resume: nothing to rerun"),
     ["event", "status", "finished_at", "totals", "note"]),
]


def _event_validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads((ROOT / "schemas" / "event.schema.json").read_text()))


def test_every_kind_is_listed_here():
    assert {type(e) for e, _ in EVERY_KIND} == set(records.EVENT_KINDS)
    assert set(records.EVENT_KINDS.values()) == {"run_started", "instance_started", "instance_retry",
                                                 "instance_finished", "workspace_bases", "workspace_created",
                                                 "warning", "progress", "run_finished"}


@pytest.mark.parametrize("event, keys", EVERY_KIND, ids=[f"{type(e).__name__}-{i}" for i, (e, _) in
                                                         enumerate(EVERY_KIND)])
def test_every_event_kind_round_trips(event, keys):
    obj = event_to_json(event)
    assert list(obj) == keys and obj["event"] == records.EVENT_KINDS[type(event)]
    line = journal.encode(obj)  # as the journal writes it: schema_version first
    written = json.loads(line)
    assert not list(_event_validator().iter_errors(written)), written
    back = event_from_json(written, "journal.jsonl", 1)
    assert back == event
    assert journal.encode(event_to_json(back)) == line  # same bytes again
    assert attrs.has(type(back)) and type(back).__attrs_attrs__ is not None
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(back, attrs.fields(type(back))[0].name, None)


def test_the_events_a_run_writes_are_the_dicts_they_were():
    """The emitters' dict literals, before the classes, against the classes' JSON: byte for byte."""
    meta = {"run_id": "r", "batch": "/b.toml", "started_at": AT}
    assert event_to_json(records.RunStarted.of(2, meta)) == {"event": "run_started", "instances": 2, **meta}
    assert event_to_json(records.WarningEvent("w")) == {"event": "warning", "message": "w"}
    assert event_to_json(records.WorkspaceCreated("a", "r", "p", "b", "c")) == {
        "event": "workspace_created", "name": "a", "repo": "r", "path": "p", "branch": "b", "base": "c"}
    assert event_to_json(records.WorkspaceBases([])) == {"event": "workspace_bases", "bases": []}


@pytest.mark.parametrize("obj, key, message", [
    ({"event": "instance_started", "name": 3}, "line 7: name", "expected a string, got 3"),
    ({"event": "instance_started", "name": "a", "attempt": "two"}, "line 7: attempt",
     'expected a non-negative integer, got "two"'),
    ({"event": "instance_started", "name": "a", "stdout_offset": -1}, "line 7: stdout_offset",
     "expected a non-negative integer, got -1"),
    ({"event": "instance_retry", "name": "a", "delay_s": float("inf")}, "line 7: delay_s",
     "expected a finite non-negative number"),
    ({"event": "instance_finished", "name": "a", "record": [1]}, "line 7: record", "expected an object, got a list"),
    ({"event": "instance_finished", "record": {}}, "line 7: name", "required key is missing"),
    ({"event": "workspace_bases", "bases": ["x"]}, "line 7: bases", "expected a list of objects"),
    ({"event": "warning", "message": None}, "line 7: message", "expected a string, got None"),
    ({"event": "run_finished", "status": "failed", "exit_status": True}, "line 7: exit_status",
     "expected an integer or null, got true"),
])
def test_a_garbled_event_is_one_line_naming_file_line_and_key(obj, key, message):
    with pytest.raises(RecordError) as info:
        event_from_json(obj, "/runs/r/journal.jsonl", 7)
    text = str(info.value)
    assert text.startswith(f"/runs/r/journal.jsonl: {key}: ") and message in text, text
    assert "\n" not in text


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["event", "name", "attempt", "at", "record", "message", "status", "bases",
                                        "delay_s", "stdout_offset", "totals"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                                    | st.sampled_from(list(records.EVENT_CLASSES)),
                                    lambda inner: st.lists(inner, max_size=3)
                                    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8)))
def test_any_json_object_reads_as_an_event_nothing_or_one_line_error(obj):
    try:
        event = event_from_json(obj, "j", 1)
    except RecordError as exc:
        assert str(exc).startswith("j: line 1") and "\n" not in str(exc)
        return
    kind = obj.get("event")
    if not isinstance(kind, str) or kind not in records.EVENT_CLASSES:
        assert event is None
    else:
        assert type(event) is records.EVENT_CLASSES[kind]


def _write(run_dir: Path, lines) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / journal.JOURNAL_NAME
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


@pytest.mark.damages_documents
def test_a_garbled_event_in_a_journal_is_skipped_and_reported(tmp_path):
    path = _write(tmp_path / "r", [
        {"schema_version": 1, "event": "run_started", "run_id": "r", "started_at": AT},
        {"schema_version": 1, "event": "instance_started", "name": "a", "attempt": "two", "at": AT},
        {"schema_version": 1, "event": "instance_finished", "name": "b", "record": "succeeded"},
        {"schema_version": 1, "event": "instance_started", "name": "c", "attempt": 1, "at": AT},
        {"schema_version": 1, "event": "instance_finished", "name": "c", "record": {"name": "c", "status": "failed"}},
    ])
    events, problems = journal.read_events(str(path))
    assert [type(e).__name__ for e in events] == ["RunStarted", "InstanceStarted", "InstanceFinished"]
    assert problems == [f'{path}: line 2: attempt: expected a non-negative integer, got "two"; event skipped',
                        f"{path}: line 3: record: expected an object, got \"succeeded\"; event skipped"]
    state, load_problems = journal.load_run(str(tmp_path / "r"))
    assert load_problems == problems
    assert "a" not in state.in_flight and "b" not in state.records and state.records["c"]["status"] == "failed"
    # the JSON-object reader keeps every object line (the live view and the report read those)
    objects, object_problems = journal.read_journal(str(path))
    assert len(objects) == 5 and object_problems == []
    # folding JSON objects directly reports the same skip (its position standing for the line)
    direct = journal.replay_state(objects, str(path))
    assert direct.problems == problems and direct.records == state.records


def test_a_journal_of_the_previous_format_still_reads(tmp_path, cli):
    """Written before stdout_offset/agent, with pid/pgid, records lacking newer keys, no instances count, and a
    kind from a newer version: read with defaults, unknown keys and kinds ignored."""
    run_dir = tmp_path / "runs" / "old"
    _write(run_dir, [
        {"event": "run_started", "run_id": "old", "batch": "/b.toml", "started_at": AT, "status": "running"},
        {"event": "instance_started", "name": "a", "attempt": 1, "pid": 5, "pgid": 5, "at": AT},
        {"event": "instance_finished", "name": "a", "record": {"name": "a", "status": "succeeded", "cost_usd": 0.5,
                                                               "tokens": {"input": 1, "output": 2}}},
        {"event": "instance_heartbeat", "name": "a", "beat": 1},
        {"event": "instance_started", "name": "b", "attempt": 1, "pid": 6, "pgid": 6, "at": AT},
        {"event": "run_finished", "status": "interrupted", "finished_at": AT, "totals": {"instances": 2}},
    ])
    state, problems = journal.load_run(str(run_dir))
    assert problems == [] and state.sessions == 1 and state.finished
    assert state.run_meta == {"run_id": "old", "batch": "/b.toml", "started_at": AT, "status": "interrupted",
                              "finished_at": AT, "totals": {"instances": 2}}
    assert state.in_flight["b"] == records.InstanceStarted("b", 1, AT, None, None)
    assert state.unfinished == {"b": [state.in_flight["b"]]}
    assert state.records["a"]["cost_usd"] == 0.5
    doc = history.document(str(run_dir))
    by_name = {r["name"]: r for r in doc["instances"]}
    assert by_name["a"]["tokens"]["output"] == 2 and by_name["a"]["agent"] is None
    assert by_name["b"]["status"] == "cancelled" and by_name["b"]["started_at"] == AT
    proc = cli("runs", "show", "old", "--results-dir", str(tmp_path / "runs"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["instances"][0]["name"] == "a"


def test_resumed_sessions_fold_like_before():
    events = [
        {"event": "run_started", "run_id": "r", "started_at": AT, "orchestrator_pid": 1, "host": "h", "instances": 2},
        {"event": "run_finished", "status": "interrupted", "finished_at": AT},
        {"event": "run_started", "run_id": "r", "started_at": "2026-01-02T00:00:00.000Z", "orchestrator_pid": 2,
         "host": "h2", "resumed": True},
    ]
    state = journal.replay_state(events)
    assert state.sessions == 2 and not state.finished and state.problems == []
    assert state.run_meta == {"run_id": "r", "started_at": AT, "orchestrator_pid": 2, "host": "h2", "instances": 2,
                              "resumed_at": ["2026-01-02T00:00:00.000Z"]}
    assert list(state.run_meta)[:5] == ["run_id", "started_at", "orchestrator_pid", "host", "instances"]


@pytest.mark.damages_documents
def test_the_live_view_folds_typed_events_and_skips_a_garbled_one(tmp_path):
    from orchestrator_pex import progress, watch

    run_dir = tmp_path / "r"
    path = _write(run_dir, [
        {"schema_version": 1, "event": "run_started", "run_id": "r", "started_at": AT, "orchestrator_pid": 1},
        {"schema_version": 1, "event": "instance_started", "name": "a", "attempt": 1, "at": AT},
        {"schema_version": 1, "event": "instance_started", "name": "b", "attempt": "two", "at": AT},
        {"schema_version": 1, "event": "instance_finished", "name": "a", "record": RECORD},
        {"schema_version": 1, "event": "instance_started", "name": "c", "attempt": 2, "at": AT},
        {"schema_version": 1, "event": "instance_retry", "name": "c", "attempt": 2, "delay_s": 1.5},
        {"schema_version": 1, "event": "run_finished", "status": "failed", "exit_status": 1, "finished_at": AT},
    ])
    typed, _ = journal.read_events(str(path))
    objects, _ = journal.read_journal(str(path))
    names = ["a", "b", "c"]
    view = progress.from_journal(typed, names)
    assert view == progress.from_journal(objects, names)  # JSON objects are structured the same way
    assert [(r.name, r.state, r.attempts) for r in view.rows] == [("a", "not-started", 0), ("b", "pending", 0),
                                                                   ("c", "retrying", 2)]
    assert view.finished
    shown, exit_status, alive = watch.snapshot(str(run_dir))
    # no batch copy: watch knows the instances the journal names (b's only event was skipped)
    assert exit_status == 1 and not alive and shown.rows == progress.from_journal(typed, ["a", "c"]).rows
