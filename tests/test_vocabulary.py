"""The one vocabulary (statuses, token keys, run and exit status), the one shard-metadata parser, the one /proc
reader and the one atomic file writer: each defined once, and every user agrees with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import trio

from orchestrator_pex import atomic_file, errors, procfs, results, shard, vocabulary
from orchestrator_pex.commands import merge
from orchestrator_pex.config import parse_batch
from orchestrator_pex.plan import make_plan
from orchestrator_pex.scheduler import Scheduler
from orchestrator_pex.vocabulary import InstanceStatus, RunStatus


def test_statuses_are_their_strings_everywhere():
    s = InstanceStatus.TIMED_OUT
    assert s == "timed-out" and str(s) == "timed-out" and f"{s}" == "timed-out" and f"{s:>10}" == " timed-out"
    assert "%s" % s == "timed-out"  # noqa: UP031 - %-formatting is what is checked here
    assert json.dumps({s: s}) == '{"timed-out": "timed-out"}'
    assert {s: 1} == {"timed-out": 1} and "timed-out" in {s} and InstanceStatus("timed-out") is s
    assert json.dumps(RunStatus.BUDGET_STOPPED) == '"budget-stopped"'


def test_one_list_of_statuses_and_token_keys():
    assert results.STATUSES == vocabulary.FINAL_STATUSES
    assert list(results.STATUSES) == ["succeeded", "failed", "timed-out", "stalled", "cancelled", "budget-stopped",
                                      "api-error", "not-started", "skipped"]
    assert set(vocabulary.LIVE_STATUSES) | set(vocabulary.FINAL_STATUSES) == set(InstanceStatus)
    assert not set(vocabulary.LIVE_STATUSES) & set(vocabulary.FINAL_STATUSES)
    assert vocabulary.FAILED_STATUSES | (vocabulary.INTERRUPTED_STATUSES - {RunStatus.INTERRUPTED}) \
        == set(vocabulary.FINAL_STATUSES) - {InstanceStatus.SUCCEEDED, InstanceStatus.SKIPPED}
    from orchestrator_pex import accounting, html_report, metrics

    assert accounting.TOKEN_KEYS == metrics.TOKEN_KINDS == html_report.TOKEN_KINDS == results.TOKEN_KEYS
    assert metrics.INSTANCE_STATUSES == (*vocabulary.LIVE_STATUSES, *vocabulary.FINAL_STATUSES)
    assert metrics.RUN_STATUSES == tuple(RunStatus)


def test_stop_reasons_are_one_enum_with_their_statuses_and_texts():
    """The scheduler's stop reasons: strings on the outside, each with the status of the instances it ends and the
    error text of the ones it never starts; the scheduler writes no bare reason string of its own."""
    from orchestrator_pex.vocabulary import StopReason

    assert [str(r) for r in StopReason] == ["budget", "auth", "deadline", "interrupted"]
    assert StopReason("deadline") is StopReason.DEADLINE and json.dumps(StopReason.AUTH) == '"auth"'
    assert {r: r.instance_status for r in StopReason} == {
        StopReason.BUDGET: InstanceStatus.BUDGET_STOPPED, StopReason.AUTH: None,
        StopReason.DEADLINE: InstanceStatus.TIMED_OUT, StopReason.INTERRUPTED: InstanceStatus.CANCELLED}
    assert StopReason.AUTH.not_started == "not started: an earlier instance failed authentication (401)"
    assert StopReason.BUDGET.not_started == "not started: the batch budget was reached"
    assert all(r.not_started.startswith("not started: ") for r in StopReason)
    scheduler_py = os.path.join(os.path.dirname(vocabulary.__file__), "scheduler.py")
    with open(scheduler_py, encoding="utf-8") as f:
        source = f.read()
    for reason in StopReason:
        assert f'"{reason.value}"' not in source and reason.not_started not in source, reason


def test_schema_agrees_with_the_vocabulary():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "schemas", "results.schema.json")
    with open(path, encoding="utf-8") as f:
        schema = json.load(f)
    assert schema["properties"]["schema_version"]["const"] == vocabulary.SCHEMA_VERSION == results.SCHEMA_VERSION
    assert set(schema["properties"]["status"]["enum"]) == set(RunStatus)
    assert set(schema["$defs"]["record"]["properties"]["status"]["enum"]) == set(InstanceStatus)


def test_run_status_and_exit_status():
    ok, bad = {"status": "succeeded"}, {"status": "api-error"}
    assert vocabulary.run_status([ok, ok]) == "succeeded" and vocabulary.run_status([]) == "succeeded"
    assert vocabulary.run_status([ok, bad]) == "failed"
    assert vocabulary.run_status([ok], budget_stopped=True) == "budget-stopped"
    assert vocabulary.run_status([ok], interrupted=True, budget_stopped=True) == "interrupted"
    assert vocabulary.exit_status("succeeded") == errors.EXIT_OK
    assert vocabulary.exit_status("failed") == vocabulary.exit_status("interrupted") == errors.EXIT_FAILED
    assert vocabulary.exit_status("budget-stopped") == errors.EXIT_BUDGET
    assert vocabulary.exit_status("interrupted", received=signal.SIGINT) == errors.EXIT_SIGINT
    assert vocabulary.exit_status("interrupted", received=signal.SIGTERM) == errors.EXIT_SIGTERM
    assert vocabulary.exit_status("succeeded", internal_error=True) == errors.EXIT_SOFTWARE
    for status in ("succeeded", "failed", "budget-stopped", "interrupted", None, 7):
        assert merge.exit_status_for({"status": status}) == vocabulary.exit_status(status)
    assert vocabulary.combined_run_status(["succeeded", "budget-stopped", "interrupted"], []) == "interrupted"
    assert vocabulary.combined_run_status(["succeeded", "succeeded"], [ok, bad]) == "failed"
    assert vocabulary.combined_run_status(["succeeded", "weird"], [ok]) == "weird"
    assert vocabulary.combined_run_status(["succeeded"], [ok]) == "succeeded"


@pytest.mark.parametrize("value", [
    {"index": True, "count": 2}, {"index": 0, "count": True}, {"index": 2, "count": 2}, {"index": -1, "count": 2},
    {"index": 0.0, "count": 2}, {"index": "0", "count": 2}, {"index": 0}, [0, 2], "0/2", True,
    {"index": 0, "count": 10**30},
])
def test_recorded_shard_rejects_what_any_reader_would(value, tmp_path):
    with pytest.raises(ValueError, match="must be"):
        shard.recorded(value)
    doc = {"batch": "b.toml", "shard": value, "instances": []}
    with pytest.raises(errors.UsageError, match='x.json: shard: must be'):
        merge.merge([("x.json", doc), ("y.json", dict(doc))])
    from orchestrator_pex import history, metrics

    with pytest.raises(ValueError):
        history.shard_names({"shard": value}, ["a", "b"])
    assert metrics.shard_label({"shard": value}) == "all"


def test_recorded_shard_accepts_the_recorded_form():
    assert shard.recorded(None) is None
    assert shard.recorded({"index": 1, "count": 3}) == (1, 3)
    assert shard.lock_variant(shard.recorded({"index": 1, "count": 3})) == "shard-1-of-3"
    assert shard.lock_variant(None) is None
    from orchestrator_pex import history, metrics

    names = [f"n{i}" for i in range(30)]
    assert history.shard_names({"shard": {"index": 1, "count": 3}}, names) == shard.select(names, 1, 3)
    assert history.shard_names({}, names) == names
    assert metrics.shard_label({"shard": {"index": 1, "count": 3}}) == "1/3"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc on this system (procfs then reads nothing)")
def test_procfs_stat_and_gone_or_zombie():
    me = procfs.stat(os.getpid())
    assert me is not None and me.state in "RS" and me.pgid == os.getpgrp() and me.cpu_ticks >= 0
    assert not procfs.gone_or_zombie(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        assert child.pid in procfs.children()
        # the child exits on its own; until reaped it is a zombie, and a zombie counts as gone
        while getattr(procfs.stat(child.pid), "state", "Z") != "Z":
            os.sched_yield()
        assert procfs.gone_or_zombie(child.pid)
    finally:
        child.wait()
    assert procfs.gone_or_zombie(child.pid)  # reaped: no such process
    assert procfs.stat(child.pid) is None
    assert procfs.stat(-5) is None


def test_atomic_file_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "doc.txt"
    atomic_file.write_text(str(target), "one\n", mode=0o644)
    assert target.read_text() == "one\n" and (target.stat().st_mode & 0o777) == 0o644

    def broken(f):
        f.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_file.replace(str(target), broken)
    assert target.read_text() == "one\n" and os.listdir(tmp_path) == ["doc.txt"]


def test_merge_output_is_written_through_the_fsyncing_writer(tmp_path, monkeypatch):
    calls = []
    real = atomic_file.replace
    monkeypatch.setattr(atomic_file, "replace", lambda *a, **k: (calls.append(a[0]), real(*a, **k)))
    doc = {"batch": "b.toml", "instances": [{"name": "a", "status": "succeeded", "tokens": {"input": 2},
                                             "tools": {}, "cost_usd": 0.5}]}
    (tmp_path / "in.json").write_text(json.dumps(doc))
    out = tmp_path / "out.json"

    class Args:
        results = [str(tmp_path / "in.json")]
        output = str(out)
        partial = False
        no_report = True
        exit_status = True

    assert merge.main(Args()) == errors.EXIT_OK  # type: ignore[arg-type]
    assert calls == [str(out)]
    merged = json.loads(out.read_text())
    assert merged["totals"]["by_status"] == {s: (1 if s == "succeeded" else 0) for s in results.STATUSES}
    assert merged["totals"]["tokens"] == {"input": 2, "output": 0, "cache_creation": 0, "cache_read": 0, "total": 0}


async def test_guardian_marker_reaches_instances_explicitly(tmp_path, monkeypatch):
    """The scheduler's env_add reaches every instance even when os.environ does not hold it."""
    monkeypatch.delenv("ORCHESTRATOR_PEX_GUARD", raising=False)
    out = tmp_path / "env.txt"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ.get('ORCHESTRATOR_PEX_GUARD', 'missing'))"
    text = f'[[instances]]\nname = "e"\nargv = {json.dumps([sys.executable, "-c", code])}\n'
    plan = make_plan(parse_batch(text.encode(), str(tmp_path / "b.toml")))
    (tmp_path / "run" / "logs").mkdir(parents=True)
    sched = Scheduler(plan, str(tmp_path / "run"), env_add={"ORCHESTRATOR_PEX_GUARD": "tok-1"})
    with trio.fail_after(60):
        records = await sched.run()
    assert [r["status"] for r in records] == ["succeeded"]
    assert out.read_text() == "tok-1"
