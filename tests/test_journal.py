"""The run journal: durable appends with group commit, tolerant reading, replay rules."""

from __future__ import annotations

import json
import os
import random

import pytest
import trio

from orchestrator_pex import journal
from orchestrator_pex.errors import RunDirError


def started(run_id="r1", at="2026-01-01T00:00:00Z"):
    return {"event": "run_started", "run_id": run_id, "batch": "/b.toml", "started_at": at}


def finished(name, status, **extra):
    return {"event": "instance_finished", "name": name, "record": {"name": name, "status": status, **extra}}


def write_events(run_dir, events):
    with journal.Journal.open(str(run_dir)) as j:
        for e in events:
            j.append_sync(e)
    return journal.journal_path(str(run_dir))


def test_append_sync_roundtrip(tmp_path):
    events = [started(), {"event": "instance_started", "name": "a", "attempt": 1, "pid": 5, "pgid": 5, "at": "t"},
              finished("a", "succeeded", cost_usd=0.1), {"event": "run_finished", "status": "succeeded"}]
    path = write_events(tmp_path, events)
    got, problems = journal.read_journal(path)
    assert [e.pop("schema_version") for e in got] == [1] * len(events)  # every line says which schema it follows
    assert got[0].pop("orchestrator_pid") == os.getpid() and "host" in got[0]  # annotations for `runs list`
    got[0].pop("host")
    assert got == events and problems == []
    with open(path, "rb") as f:
        assert f.read().count(b"\n") == 4


@pytest.mark.trio
async def test_emit_group_commit_many_concurrent(tmp_path):
    j = journal.Journal.open(str(tmp_path))
    j.append_sync(started())
    n = 300

    async def one(i):
        await j.emit({"event": "instance_started", "name": f"i{i}", "attempt": 1, "pid": i, "pgid": i, "at": "t"})
        await j.emit(finished(f"i{i}", "succeeded"))

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    j.close()
    events, problems = journal.read_journal(j.path)
    assert problems == []
    assert len(events) == 1 + 2 * n
    # group commit: far fewer fsyncs than events (all 300 tasks queue while the first fsync runs)
    assert j.fsyncs < j.events_written
    _, records = journal.replay(events)
    assert sorted(records) == sorted(f"i{i}" for i in range(n))


@pytest.mark.trio
async def test_events_emitted_in_one_tick_share_one_fsync(tmp_path):
    """Ten instances started together (one tick of the event loop) cost one fsync, not two (the first emitter
    waits one scheduling round before flushing, so the other nine join it)."""
    j = journal.Journal.open(str(tmp_path))
    j.append_sync(started())
    before = j.fsyncs

    async def one(i):
        await j.emit({"event": "instance_started", "name": f"i{i}", "attempt": 1, "at": "t"})

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(one, i)
    assert j.fsyncs - before == 1
    j.close()
    events, problems = journal.read_journal(j.path)
    assert problems == [] and len(events) == 11


@pytest.mark.trio
async def test_emit_returns_only_after_line_is_on_disk(tmp_path):
    j = journal.Journal.open(str(tmp_path))
    await j.emit(started())
    await j.emit(finished("a", "succeeded"))
    # read through a fresh descriptor right after emit returned
    events, _ = journal.read_journal(j.path)
    assert events[-1]["name"] == "a"
    j.close()


@pytest.mark.damages_documents
def test_torn_last_line_is_reported_not_raised(tmp_path):
    path = write_events(tmp_path, [started(), finished("a", "succeeded")])
    with open(path, "ab") as f:
        f.write(b'{"event":"instance_finished","name":"b","rec')
    events, problems = journal.read_journal(path)
    assert [e["event"] for e in events] == ["run_started", "instance_finished"]
    assert len(problems) == 1 and "torn last line" in problems[0]


@pytest.mark.damages_documents
def test_append_after_torn_line_does_not_merge_with_it(tmp_path):
    path = write_events(tmp_path, [started()])
    with open(path, "ab") as f:
        f.write(b'{"event":"instance_fin')
    write_events(tmp_path, [finished("a", "succeeded")])
    events, problems = journal.read_journal(path)
    assert events[-1]["name"] == "a"
    assert len(problems) == 1


@pytest.mark.damages_documents
def test_random_garbage_lines_duplicates_and_nul_bytes(tmp_path):
    path = write_events(tmp_path, [started(), finished("a", "succeeded"), finished("b", "failed")])
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    rng = random.Random(7)
    garbage = bytes(rng.randrange(256) for _ in range(300))
    damaged = b"\n".join([lines[0], garbage, lines[1], lines[1], b"\0\0\0", b"[1,2]", lines[2]]) + b"\n"
    with open(path, "wb") as f:
        f.write(damaged)
    events, problems = journal.read_journal(path)
    meta, records = journal.replay(events)
    assert meta["run_id"] == "r1"
    assert records["a"]["status"] == "succeeded" and records["b"]["status"] == "failed"
    assert any("duplicate" in p for p in problems)
    assert len(problems) >= 3


def test_repeated_warnings_are_not_duplicates(tmp_path):
    warning = {"event": "warning", "message": "batch budget crossed"}
    path = write_events(tmp_path, [started(), warning, warning])
    events, problems = journal.read_journal(path)
    assert problems == [] and events.count({"schema_version": 1, **warning}) == 2


@pytest.mark.damages_documents
def test_unrecoverable_journal_raises_rundirerror(tmp_path):
    path = os.path.join(str(tmp_path), journal.JOURNAL_NAME)
    with open(path, "wb") as f:
        f.write(os.urandom(4096).replace(b"\n", b"x"))
    with pytest.raises(RunDirError) as info:
        journal.read_journal(path)
    assert "run_started" in str(info.value)
    with pytest.raises(RunDirError):
        journal.read_journal(os.path.join(str(tmp_path), "missing.jsonl"))


@pytest.mark.parametrize("cut", range(0, 400, 7))
def test_truncation_anywhere_never_loses_a_complete_success(tmp_path, cut):
    path = write_events(tmp_path, [started(), finished("a", "succeeded"), finished("b", "succeeded"),
                                   {"event": "run_finished", "status": "succeeded"}])
    with open(path, "rb") as f:
        data = f.read()
    cut = min(cut, len(data))
    events, problems = journal.parse_journal_bytes(data[:cut])
    complete = data[:cut].split(b"\n")[:-1]
    _, records = journal.replay(events)
    for line in complete:
        event = json.loads(line)
        if event["event"] == "instance_finished":
            assert records[event["name"]]["status"] == "succeeded"


def test_replay_later_record_wins_but_success_is_final():
    events = [
        started(),
        finished("a", "failed", attempt=1),
        finished("a", "timed-out"),
        finished("b", "succeeded", cost_usd=1.0),
        finished("b", "failed"),
        finished("c", "cancelled"),
        started(at="2026-01-02T00:00:00Z"),
        finished("c", "succeeded"),
        {"event": "run_finished", "status": "succeeded", "finished_at": "x", "totals": {"cost_usd": 2}},
    ]
    meta, records = journal.replay(events)
    assert records["a"]["status"] == "timed-out"
    assert records["b"] == {"name": "b", "status": "succeeded", "cost_usd": 1.0}
    assert records["c"]["status"] == "succeeded"
    assert meta["started_at"] == "2026-01-01T00:00:00Z"
    assert meta["resumed_at"] == ["2026-01-02T00:00:00Z"]
    assert meta["status"] == "succeeded" and meta["totals"] == {"cost_usd": 2}


def test_to_rerun_default_and_rerun_failed():
    events = [
        started(),
        finished("ok", "succeeded"),
        finished("fail", "failed"),
        finished("api", "api-error"),
        finished("budget", "budget-stopped"),
        finished("slow", "timed-out"),
        finished("stall", "stalled"),
        finished("cancel", "cancelled"),
        {"event": "instance_started", "name": "inflight", "attempt": 1, "pid": 9, "pgid": 9, "at": "t"},
        {"event": "instance_started", "name": "ok", "attempt": 2, "pid": 10, "pgid": 10, "at": "t"},
    ]
    state = journal.replay_state(events)
    names = ["ok", "fail", "api", "budget", "slow", "stall", "cancel", "inflight", "never"]
    assert state.to_rerun(names) == ["slow", "stall", "cancel", "inflight", "never"]
    assert state.to_rerun(names, rerun_failed=True) == [n for n in names if n != "ok"]
    assert state.starts["ok"] == 1 and "ok" in state.in_flight


def test_write_failure_truncates_back_and_raises(tmp_path, monkeypatch):
    j = journal.Journal.open(str(tmp_path))
    j.append_sync(started())
    size = os.path.getsize(j.path)
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(RunDirError) as info:
        j.append_sync(finished("a", "succeeded"))
    assert "No space left" in str(info.value)
    assert os.path.getsize(j.path) == size
    monkeypatch.setattr(os, "fsync", real_fsync)
    j.append_sync(finished("b", "succeeded"))
    j.close()
    events, problems = journal.read_journal(j.path)
    assert problems == [] and [e.get("name") for e in events] == [None, "b"]


def test_load_run_keeps_success_recorded_only_in_results_json(tmp_path):
    write_events(tmp_path, [started(), finished("a", "failed")])
    with open(tmp_path / "results.json", "w") as f:
        json.dump({"instances": [{"name": "a", "status": "succeeded"}, {"name": "b", "status": "failed"}]}, f)
    state, problems = journal.load_run(str(tmp_path))
    assert state.records["a"]["status"] == "succeeded"
    assert "b" not in state.records
    assert len(problems) == 1
