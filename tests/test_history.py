"""Run history: list/show/prune over run directories built from real journals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from orchestrator_pex import history, journal
from orchestrator_pex.errors import UsageError

REPO = os.path.dirname(os.path.dirname(history.__file__))


def make_run(results_dir, run_id, started_at, events, pid=None, results=None):
    run_dir = os.path.join(str(results_dir), run_id)
    os.makedirs(run_dir)
    with journal.Journal.open(run_dir) as j:
        if pid is not None:
            j.annotations["orchestrator_pid"] = pid
        j.append_sync({"event": "run_started", "run_id": run_id, "batch": "/x/batch.toml", "started_at": started_at})
        for e in events:
            j.append_sync(e)
    if results is not None:
        with open(os.path.join(run_dir, "results.json"), "w") as f:
            json.dump(results, f)
    return run_dir


def fin(name, status, cost=0.5):
    return {"event": "instance_finished", "name": name, "record": {"name": name, "status": status, "cost_usd": cost}}


DEAD_PID = 2 ** 22 + 12345  # above the default pid_max: never alive


@pytest.fixture
def results_dir(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    make_run(d, "20260101-old", "2026-01-01T00:00:00Z",
             [fin("a", "succeeded"), fin("b", "failed"), {"event": "run_finished", "status": "failed"}])
    make_run(d, "20260102-crashed", "2026-01-02T00:00:00Z",
             [fin("a", "succeeded"),
              {"event": "instance_started", "name": "b", "attempt": 1, "pid": 7, "pgid": 7, "at": "t"}],
             pid=DEAD_PID)
    make_run(d, "20260103-live", "2026-01-03T00:00:00Z",
             [{"event": "instance_started", "name": "a", "attempt": 1, "pid": 7, "pgid": 7, "at": "t"}],
             pid=os.getpid())
    (d / "not-a-run").mkdir()
    (d / "stray.txt").write_text("x")
    return d


def test_list_statuses_and_order(results_dir):
    runs = history.list_runs(str(results_dir))
    assert [r["run_id"] for r in runs] == ["20260101-old", "20260102-crashed", "20260103-live"]
    assert [r["status"] for r in runs] == ["failed", "interrupted", "running"]
    assert runs[0]["counts"] == {"failed": 1, "succeeded": 1}
    assert runs[1]["counts"] == {"interrupted": 1, "succeeded": 1}
    assert runs[0]["cost_usd"] == 1.0


def test_show_rebuilds_interrupted_run_from_journal(results_dir):
    doc = history.document(history.find_run(str(results_dir), "20260102"))
    by_name = {i["name"]: i for i in doc["instances"]}
    assert by_name["a"]["status"] == "succeeded"
    assert by_name["b"]["status"] == "cancelled" and "interrupted" in by_name["b"]["error"]


def test_find_run_prefix_and_errors(results_dir):
    assert history.find_run(str(results_dir), "20260101").endswith("20260101-old")
    with pytest.raises(UsageError, match="ambiguous"):
        history.find_run(str(results_dir), "2026010")
    with pytest.raises(UsageError, match="no run"):
        history.find_run(str(results_dir), "nope")


def test_prune_keep_never_removes_running_or_foreign_dirs(results_dir):
    removed, running = history.prune(str(results_dir), keep=0)
    assert sorted(r["run_id"] for r in removed) == ["20260101-old", "20260102-crashed"]
    assert [r["run_id"] for r in running] == ["20260103-live"]
    assert sorted(os.listdir(results_dir)) == ["20260103-live", "not-a-run", "stray.txt"]


def test_prune_older_than_and_dry_run(results_dir):
    removed, _ = history.prune(str(results_dir), older_than_days=1, dry_run=True)
    assert len(removed) == 2
    assert len(os.listdir(results_dir)) == 5
    removed, _ = history.prune(str(results_dir), keep=2)
    assert [r["run_id"] for r in removed] == ["20260101-old"]
    with pytest.raises(UsageError):
        history.prune(str(results_dir))


def test_cli_runs_list_json_and_show(results_dir):
    env = dict(os.environ, PYTHONPATH=REPO, ORCHESTRATOR_PEX_RESULTS_DIR=str(results_dir))
    out = subprocess.run([sys.executable, "-m", "orchestrator_pex", "runs", "list", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # newest first
    assert [r["run_id"] for r in json.loads(out.stdout)] == ["20260103-live", "20260102-crashed", "20260101-old"]
    out = subprocess.run([sys.executable, "-m", "orchestrator_pex", "runs", "list", "--json", "--status", "failed"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert [r["run_id"] for r in json.loads(out.stdout)] == ["20260101-old"]
    out = subprocess.run([sys.executable, "-m", "orchestrator_pex", "runs", "list", "--json", "--batch", "other"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == []
    out = subprocess.run([sys.executable, "-m", "orchestrator_pex", "runs", "list", "--json", "--batch", "batch"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert len(json.loads(out.stdout)) == 3
    out = subprocess.run([sys.executable, "-m", "orchestrator_pex", "runs", "show", "20260101-old"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "failed" in out.stdout
    out = subprocess.run([sys.executable, "-m", "orchestrator_pex", "runs", "show", "zzz"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no run" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.damages_documents
def test_corrupt_run_is_listed_as_unreadable(tmp_path):
    run_dir = tmp_path / "bad"
    run_dir.mkdir()
    (run_dir / "journal.jsonl").write_bytes(b"\x00garbage\n")
    runs = history.list_runs(str(tmp_path))
    assert runs[0]["status"] == "unreadable" and runs[0]["problems"]


def test_show_latest_and_a_live_run_is_truthful(results_dir):
    """A run whose orchestrator is alive: started instances are running, the others pending (never cancelled)."""
    assert history.find_run(str(results_dir), "latest").endswith("20260103-live")
    run_dir = os.path.join(str(results_dir), "20260103-live")
    with open(os.path.join(run_dir, "batch.toml"), "w") as f:
        f.write('[[instances]]\nname = "a"\nargv = ["true"]\n[[instances]]\nname = "b"\nargv = ["true"]\n'
                '[[instances]]\nname = "c"\nargv = ["true"]\n')
    with journal.Journal.open(run_dir) as j:
        j.append_sync({"event": "instance_started", "name": "b", "attempt": 1, "at": "2026-01-03T00:00:01.000Z"})
        j.append_sync({"event": "instance_retry", "name": "b", "attempt": 1, "api_error_status": 529, "delay_s": 1})
    doc = history.document(run_dir)
    assert doc["status"] == "running"
    assert [(r["name"], r["status"]) for r in doc["instances"]] == [("a", "running"), ("b", "retrying"),
                                                                    ("c", "pending")]
    assert all("interrupted" not in (r["error"] or "") for r in doc["instances"])


def test_show_of_a_dead_run_says_interrupted(results_dir):
    doc = history.document(os.path.join(str(results_dir), "20260102-crashed"))
    assert doc["status"] == "interrupted"
    assert {r["name"]: r["status"] for r in doc["instances"]}["b"] == "cancelled"


def test_runs_watch_follows_a_live_run_to_its_end(tmp_path, write_batch, make_cli_env):
    """`runs watch latest` started beside a real run shows its progress and exits with the run's exit status."""
    lines = ["concurrency = 2"]
    for i in range(6):
        lines += ["[[instances]]", f'name = "w{i}"', 'argv = ["sleep", "0.4"]']
    lines += ["[[instances]]", 'name = "bad"', 'argv = ["false"]']
    batch = write_batch("\n".join(lines) + "\n")
    results = tmp_path / "r"
    env = make_cli_env({"ORCHESTRATOR_PEX_RESULTS_DIR": str(results)})
    run = subprocess.Popen([sys.executable, "-m", "orchestrator_pex", "run", str(batch), "--progress", "none"],
                           env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(results.glob("*/journal.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        watch = subprocess.run([sys.executable, "-m", "orchestrator_pex", "runs", "watch", "latest", "--progress",
                                "json", "--interval", "0.1"], env=env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=120)
        assert run.wait(timeout=120) == 1
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert watch.returncode == 1, watch.stderr  # the run's own exit status: "bad" failed
    events = [json.loads(line) for line in watch.stderr.splitlines() if line.startswith("{")]
    assert events and all(e["event"] == "progress" and e["total"] == 7 for e in events)
    assert events[-1]["done"] == 7
    assert "Traceback" not in watch.stderr
