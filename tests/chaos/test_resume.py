"""resume through the real command line: what is rerun by default and with --rerun-failed, shards, run ids, no-ops."""

from __future__ import annotations

import json
import os
import signal

from orchestrator_pex import journal, shard
from tests.chaos.test_chaos import Batch


def set_env(b, overrides):
    """Rewrite ``b``'s batch file giving some instances extra env (e.g. a failing scenario)."""
    with open(b.path) as f:
        text = f.read()
    for name, env in overrides.items():
        extra = ", ".join(f'{k} = "{v}"' for k, v in env.items())
        text = text.replace(f'env = {{ CHAOS_NAME = "{name}" }}', f'env = {{ CHAOS_NAME = "{name}", {extra} }}')
    with open(b.path, "w") as f:
        f.write(text)


def test_failed_instances_rerun_only_with_rerun_failed(tmp_path):
    b = Batch(tmp_path, n=8, concurrency=4, delay="0")
    set_env(b, {"i002": {"AGENT_SIM_SCENARIO": "crash"}, "i005": {"AGENT_SIM_SCENARIO": "api-500"}})
    out = b.run("run", b.path, "--results-dir", b.results)
    assert out.returncode == 1
    run_dir = b.run_dir()
    starts = b.starts()
    # default: failures are not rerun; nothing to do is a no-op with exit 0
    again = b.resume(run_dir)
    assert again.returncode == 0 and "--rerun-failed" in again.stderr
    assert b.starts() == starts
    dry = b.run("resume", run_dir, "--rerun-failed", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.split() == ["i002", "i005"]
    # --rerun-failed: only the two failures start again (and fail again: exit 1)
    again = b.resume(run_dir, "--rerun-failed", "--json")
    assert again.returncode == 1, again.stderr[-2000:]
    after = b.starts()
    assert {n: after[n] - starts[n] for n in after if after[n] != starts[n]} == {"i002": 1, "i005": 1}
    doc = json.loads(again.stdout)
    assert [i["name"] for i in doc["instances"]] == b.names
    assert {i["name"]: i["status"] for i in doc["instances"] if i["status"] != "succeeded"} == {
        "i002": "failed", "i005": "api-error"}
    assert doc["resumed"] is True


def test_resume_by_run_id_and_interrupted_sigterm(tmp_path):
    b = Batch(tmp_path, n=30, concurrency=4, delay="0.05")
    proc = b.start_run()
    try:
        b.wait_starts(6, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_id = os.path.basename(b.run_dir())
    listed = b.run("runs", "list", "--results-dir", b.results, "--json")
    assert json.loads(listed.stdout)[0]["status"] == "interrupted"
    out = b.run("resume", run_id[:12], "--results-dir", b.results)
    assert out.returncode == 0, out.stderr[-2000:]
    b.check_complete(b.run_dir())
    listed = b.run("runs", "list", "--results-dir", b.results, "--json")
    run = json.loads(listed.stdout)[0]
    assert run["status"] == "succeeded" and run["sessions"] == 2 and run["counts"] == {"succeeded": 30}


def test_shard_run_resumes_only_its_shard(tmp_path):
    b = Batch(tmp_path, n=24, concurrency=4, delay="0.05")
    mine = shard.select(b.names, 1, 3)
    proc = b.start_run("--shard", "1/3")
    try:
        b.wait_starts(3, proc)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    b.assert_no_processes()
    run_dir = b.run_dir()
    out = b.resume(run_dir, "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    assert set(b.starts()) == set(mine)
    doc = json.loads(out.stdout)
    assert [i["name"] for i in doc["instances"]] == mine
    assert doc["shard"] == {"index": 1, "count": 3}
    events, _ = journal.read_journal(journal.journal_path(run_dir))
    assert {e["name"] for e in events if e["event"] == "instance_started"} <= set(mine)


def test_resume_of_missing_or_foreign_directory_is_a_clear_error(tmp_path):
    b = Batch(tmp_path, n=1)
    out = b.run("resume", str(tmp_path))
    assert out.returncode == 1 and "no run journal" in out.stderr and "Traceback" not in out.stderr
    out = b.run("resume", "nosuchrun", "--results-dir", str(tmp_path / "none"))
    assert out.returncode == 2 and "no run" in out.stderr


def test_resume_without_batch_copy_is_a_clear_error(tmp_path):
    b = Batch(tmp_path, n=3, delay="0")
    proc = b.start_run()
    assert proc.wait(timeout=120) == 0
    run_dir = b.run_dir()
    for name in os.listdir(run_dir):
        if name.startswith("batch."):
            os.unlink(os.path.join(run_dir, name))
    out = b.resume(run_dir)
    assert out.returncode == 1 and "batch copy" in out.stderr and "Traceback" not in out.stderr


def test_resume_closes_a_run_that_died_after_its_last_instance(tmp_path):
    b = Batch(tmp_path, n=4, delay="0")
    proc = b.start_run()
    assert proc.wait(timeout=120) == 0
    run_dir = b.run_dir()
    path = journal.journal_path(run_dir)
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    assert b'"run_finished"' in lines[-1]
    with open(path, "wb") as f:  # as if killed after the last instance_finished, before run_finished
        f.writelines(lines[:-1])
    os.unlink(os.path.join(run_dir, "results.json"))
    listed = json.loads(b.run("runs", "list", "--results-dir", b.results, "--json").stdout)
    assert listed[0]["status"] == "interrupted"
    starts = b.starts()
    out = b.resume(run_dir)
    assert out.returncode == 0 and "nothing to resume" in out.stderr
    assert b.starts() == starts
    listed = json.loads(b.run("runs", "list", "--results-dir", b.results, "--json").stdout)
    assert listed[0]["status"] == "succeeded"
    b.check_complete(run_dir)


def test_masked_batch_copy_resumes_from_the_unchanged_original_only(tmp_path):
    b = Batch(tmp_path, n=20, concurrency=4, delay="0.05")
    set_env(b, {"i000": {"DEPLOY_TOKEN": "s3cr3t-value-123456"}})
    proc = b.start_run()
    try:
        b.wait_starts(4, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_dir = b.run_dir()
    copy = [n for n in os.listdir(run_dir) if n.startswith("batch.")][0]
    with open(os.path.join(run_dir, copy)) as f:
        assert "s3cr3t-value-123456" not in f.read()  # the secret never reaches the run directory
    with open(b.path) as f:
        original = f.read()
    with open(b.path, "a") as f:
        f.write("# edited after the run started\n")
    out = b.resume(run_dir)
    assert out.returncode == 1 and "changed since the run started" in out.stderr
    with open(b.path, "w") as f:
        f.write(original)
    starts = b.starts()
    _, records = journal.replay(journal.read_journal(journal.journal_path(run_dir))[0])
    done = {n for n, r in records.items() if r["status"] == "succeeded"}
    out = b.resume(run_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(b.starts()[n] == starts[n] for n in done)
    b.check_complete(run_dir)
    # finished: with nothing to rerun, a changed original does not matter (no-op, exit 0)
    with open(b.path, "a") as f:
        f.write("# edited again\n")
    out = b.resume(run_dir)
    assert out.returncode == 0 and "nothing to resume" in out.stderr, out.stderr
