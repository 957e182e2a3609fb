"""Chaos: the real ``orchestrator-pex run``/``resume`` killed, interrupted, starved of disk, raced and fed damaged
journals. Every instance runs the fake agent through ``counting_agent``, which appends the instance's name to a
"starts" file, so the tests can count how often each instance was really started.

Invariants checked after each ordeal, then after ``resume``:
* every instance has exactly one successful result; results.json covers the whole batch;
* no instance the journal recorded as succeeded is ever started again;
* no process of the batch survives (a per-test marker in the environment is searched for in /proc).

Seeded and bounded: ``CHAOS_TRIALS`` (default 20) SIGKILL trials of a 200-instance batch at concurrency 16.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from orchestrator_pex import journal
from tests.support import procs
from tests.support.components import missing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif((not os.path.isdir("/proc") or os.name != "posix") and os.environ.get("CI") != "true",
                                reason="needs Linux /proc")

TRIALS = int(os.environ.get("CHAOS_TRIALS", "20"))
INSTANCES = 200
CONCURRENCY = 16
GONE_TIMEOUT = 30.0


class Batch:
    """A batch of counting fake agents in ``tmp``, and helpers to run, signal and inspect it."""

    def __init__(self, tmp, n=INSTANCES, concurrency=CONCURRENCY, scenario="ok", delay="0.02", results=None):
        self.tmp = str(tmp)
        self.marker = f"chaos-{uuid.uuid4().hex}"
        self.starts_path = os.path.join(self.tmp, "starts")
        self.results = results or os.path.join(self.tmp, "runs")
        self.names = [f"i{i:03d}" for i in range(n)]
        agent = os.path.join(self.tmp, "agent")
        with open(os.path.join(REPO, "tests", "chaos", "counting_agent")) as f:
            body = f.read().split("\n", 1)[1]
        body = body.replace(
            "sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))",
            f"sys.path.insert(0, {REPO!r})",
        )
        with open(agent, "w") as f:
            f.write(f"#!{sys.executable} -IS\n{body}")  # -IS: fast start-up, no pyenv shim in the way
        os.chmod(agent, 0o755)
        lines = [f'claude = "{agent}"', f"concurrency = {concurrency}", "grace_period = 2", "[defaults]",
                 'model = "claude-sonnet-4-5"', "retries = 0"]
        for name in self.names:
            lines += ["[[instances]]", f'name = "{name}"', f'prompt = "task {name}"',
                      f'env = {{ CHAOS_NAME = "{name}" }}']
        self.path = os.path.join(self.tmp, "batch.toml")
        with open(self.path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.env = dict(
            os.environ, PYTHONPATH=REPO, AGENT_SIM_SCENARIO=scenario, AGENT_SIM_DELAY=delay,
            CHAOS_STARTS=self.starts_path, CHAOS_MARK=self.marker,
            ORCHESTRATOR_PEX_LOCK_DIR=os.path.join(self.tmp, "locks"),
        )
        self.env.pop("ORCHESTRATOR_PEX_RESULTS_DIR", None)

    # -- processes ---------------------------------------------------------------------------------------------

    def cli(self, *args):
        return [sys.executable, "-m", "orchestrator_pex", *args]

    def start_run(self, *extra, stderr=None):
        return subprocess.Popen(self.cli("run", self.path, "--results-dir", self.results, *extra), env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr if stderr is not None else subprocess.DEVNULL, cwd=self.tmp)

    def run(self, *args, timeout=240):
        return subprocess.run(self.cli(*args), env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, cwd=self.tmp)

    def resume(self, run_dir, *extra):
        return self.run("resume", run_dir, "--wait-lock", "60", *extra)

    def marked_pids(self):
        """Live processes (not zombies) whose environment carries this test's marker."""
        return procs.pids_with_env("CHAOS_MARK", self.marker)

    def assert_no_processes(self, timeout=GONE_TIMEOUT):
        deadline = time.monotonic() + timeout
        left = self.marked_pids()
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = self.marked_pids()
        details = [f"{pid}: {procs.cmdline(pid)[:120]!r}" for pid in left]
        assert not left, "processes of the batch survived: " + "; ".join(details)

    # -- state -------------------------------------------------------------------------------------------------

    def starts(self):
        try:
            with open(self.starts_path) as f:
                names = f.read().split()
        except FileNotFoundError:
            names = []
        return collections.Counter(n for n in names if n != "?")  # "?" = the preflight `--version`

    def wait_starts(self, n, proc, timeout=120):
        deadline = time.monotonic() + timeout
        while sum(self.starts().values()) < n:
            assert proc.poll() is None, f"run ended (exit {proc.returncode}) before {n} starts"
            assert time.monotonic() < deadline, "timed out waiting for starts"
            time.sleep(0.002)

    def run_dir(self):
        dirs = [os.path.join(self.results, d) for d in os.listdir(self.results)] if os.path.isdir(self.results) else []
        assert len(dirs) <= 1, dirs
        return dirs[0] if dirs else None

    def journal_events(self, run_dir):
        events, problems = journal.read_journal(journal.journal_path(run_dir))
        return events, problems

    def check_complete(self, run_dir):
        """Every instance exactly one success in the journal and in results.json."""
        events, problems = self.journal_events(run_dir)
        successes = collections.Counter(e["name"] for e in events if e.get("event") == "instance_finished"
                                        and e["record"]["status"] == "succeeded")
        assert sorted(successes) == self.names
        assert set(successes.values()) == {1}, {n: c for n, c in successes.items() if c != 1}
        with open(os.path.join(run_dir, "results.json")) as f:
            doc = json.load(f)
        assert [i["name"] for i in doc["instances"]] == self.names
        assert {i["status"] for i in doc["instances"]} == {"succeeded"}
        assert doc["status"] == "succeeded"
        # results.json is derivable from the journal: the rebuilt document has the very same instance records
        from orchestrator_pex import history

        state, _ = journal.load_run(run_dir)
        rebuilt = history.rebuild_document(run_dir, state)
        assert rebuilt["instances"] == doc["instances"]
        assert rebuilt["totals"] == doc["totals"] and rebuilt["status"] == doc["status"]
        return events, problems


def succeeded_in_journal(run_dir):
    try:
        events, _ = journal.read_journal(journal.journal_path(run_dir))
    except Exception:  # noqa: BLE001 - no run_started yet
        return None
    _, records = journal.replay(events)
    return {n for n, r in records.items() if r.get("status") == "succeeded"}


# -- SIGKILL at random moments -------------------------------------------------------------------------------------


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_then_resume(tmp_path, trial):
    rng = random.Random(1000 + trial)
    b = Batch(tmp_path, delay=rng.choice(["0", "0.02"]))  # 0.02: instances live longer, more are in flight
    kill_after = rng.choice([0, 1, rng.randrange(2, INSTANCES - 8)]) if trial < 3 else rng.randrange(2, INSTANCES - 8)
    kills = 1
    proc = b.start_run()
    try:
        b.wait_starts(kill_after, proc)
        time.sleep(rng.random() * 0.03)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    b.assert_no_processes()  # the guardian took the whole batch down with the orchestrator

    run_dir = b.run_dir()
    done_before = succeeded_in_journal(run_dir) if run_dir else None
    starts_before = b.starts()
    if done_before is None:
        # killed before the journal recorded the run: nothing may have started; the operator simply runs again
        assert not starts_before, starts_before
        if run_dir:
            shutil.rmtree(run_dir)
        out = b.run("run", b.path, "--results-dir", b.results)
        assert out.returncode == 0, out.stderr[-2000:]
        run_dir = b.run_dir()
        done_before = set()
    else:
        if trial % 4 == 1 and len(done_before) < INSTANCES - 40:
            # kill the resume too, mid-way: a second resume must still never rerun a success
            first = subprocess.Popen(b.cli("resume", run_dir, "--wait-lock", "60"), env=b.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                b.wait_starts(sum(starts_before.values()) + rng.randrange(1, 30), first)
            finally:
                first.kill()
                first.wait(timeout=60)
            kills += 1
            b.assert_no_processes()
            done_mid = succeeded_in_journal(run_dir)
            starts_mid = b.starts()
            for name in done_mid:
                assert starts_mid[name] == starts_before[name] or name not in done_before
            done_before, starts_before = done_mid, starts_mid
        out = b.resume(run_dir)
        assert out.returncode == 0, out.stderr[-2000:]
    starts_after = b.starts()
    for name in done_before:
        assert starts_after[name] == starts_before[name], f"{name} succeeded before the kill but was started again"
    assert set(starts_after) == set(b.names)
    events, problems = b.check_complete(run_dir)
    # each kill may tear at most the line being written; nothing else in the journal is damaged
    assert len(problems) <= kills and all("torn last line" in p or "not a JSON event" in p for p in problems), problems
    b.assert_no_processes()


# -- SIGTERM / SIGINT ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_batch_then_resume(tmp_path, signum, status):
    b = Batch(tmp_path, delay="0.05")
    proc = b.start_run()
    try:
        b.wait_starts(60, proc)
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == status
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    b.assert_no_processes()
    run_dir = b.run_dir()
    events, problems = b.journal_events(run_dir)
    assert problems == []  # an orderly stop leaves a clean journal
    finished = {e["name"]: e["record"]["status"] for e in events if e["event"] == "instance_finished"}
    assert sorted(finished) == b.names  # every instance has its record
    assert set(finished.values()) <= {"succeeded", "cancelled", "not-started"}
    assert events[-1]["event"] == "run_finished" and events[-1]["status"] == "interrupted"
    done_before = {n for n, s in finished.items() if s == "succeeded"}
    starts_before = b.starts()
    out = b.resume(run_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    starts_after = b.starts()
    assert all(starts_after[n] == starts_before[n] for n in done_before)
    b.check_complete(run_dir)
    # resuming again: nothing to do, exit 0, nothing started
    again = b.resume(run_dir)
    assert again.returncode == 0 and "nothing to resume" in again.stderr
    assert b.starts() == starts_after
    b.assert_no_processes()


# -- the lock ------------------------------------------------------------------------------------------------------


def test_two_concurrent_runs_exactly_one_runs(tmp_path):
    b = Batch(tmp_path, n=40, concurrency=4, delay="0.05")
    first = b.start_run()
    try:
        b.wait_starts(2, first)
        run_dir = b.run_dir()
        before = sorted(os.listdir(run_dir))
        second = b.run("run", b.path, "--results-dir", b.results, timeout=60)
        assert second.returncode == 75
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert sorted(os.listdir(b.results)) == [os.path.basename(run_dir)]  # no second run directory
        assert sorted(os.listdir(run_dir)) == before
        # a resume of the running run is refused the same way
        third = b.run("resume", run_dir, timeout=60)
        assert third.returncode == 75
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    b.check_complete(run_dir)
    assert set(b.starts().values()) == {1}


def test_wait_lock_runs_after_the_first(tmp_path):
    b = Batch(tmp_path, n=10, concurrency=4, delay="0.05")
    first = b.start_run()
    try:
        b.wait_starts(1, first)
        second = b.run("run", b.path, "--results-dir", b.results, "--wait-lock", "120", "--json")
        assert second.returncode == 0, second.stderr[-2000:]
        assert first.wait(timeout=60) == 0  # the second could only start once the first was done
        assert json.loads(second.stdout)["status"] == "succeeded"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert len(os.listdir(b.results)) == 2


# -- disk full -----------------------------------------------------------------------------------------------------


def test_disk_full_under_run_dir_then_resume(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        missing(f"cannot mount a tmpfs: {exc}")
    if mounted.returncode != 0:
        missing(f"cannot mount a tmpfs (need root): {mounted.stderr.strip()}")
    try:
        b = Batch(tmp_path, n=60, concurrency=8, delay="0.01", results=str(mnt / "runs"))
        # leave ~150 KB: the run starts, then the logs and journal fill the disk mid-batch
        filler = mnt / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * (2 * 1024 * 1024 - 150 * 1024))
        out = b.run("run", b.path, "--results-dir", b.results)
        assert out.returncode != 0
        assert "Traceback" not in out.stderr, out.stderr[-3000:]
        assert "No space left on device" in out.stderr
        b.assert_no_processes()
        run_dir = b.run_dir()
        events, problems = b.journal_events(run_dir)  # still parses
        assert problems == [] or all("torn" in p for p in problems)
        done_before = {e["name"] for e in events if e["event"] == "instance_finished"
                       and e["record"]["status"] == "succeeded"}
        assert len(done_before) < len(b.names)
        starts_before = b.starts()
        filler.unlink()  # space returns
        # instances whose logs could not be written are recorded as failed: rerun those too
        out = b.resume(run_dir, "--rerun-failed")
        assert out.returncode == 0, out.stderr[-3000:]
        assert all(b.starts()[n] == starts_before[n] for n in done_before)
        b.check_complete(run_dir)
        b.assert_no_processes()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


# -- damaged journals ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    b = Batch(tmp, n=12, concurrency=6, delay="0")
    out = b.run("run", b.path, "--results-dir", b.results)
    assert out.returncode == 0, out.stderr[-2000:]
    return b, b.run_dir()


def copy_run(finished_run, tmp_path):
    b, run_dir = finished_run
    dst = tmp_path / "runs" / os.path.basename(run_dir)
    shutil.copytree(run_dir, dst)
    b2 = Batch.__new__(Batch)
    b2.__dict__.update(b.__dict__)
    b2.results = str(tmp_path / "runs")
    b2.starts_path = str(tmp_path / "starts")
    b2.env = dict(b.env, CHAOS_STARTS=b2.starts_path, ORCHESTRATOR_PEX_LOCK_DIR=str(tmp_path / "locks"))
    return b2, str(dst)


@pytest.mark.damages_documents
def test_torn_and_garbage_journal_lines_keep_successes(finished_run, tmp_path):
    b, run_dir = copy_run(finished_run, tmp_path)
    path = journal.journal_path(run_dir)
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    rng = random.Random(3)
    damaged = lines[:5] + [bytes(rng.randrange(256) for _ in range(200)).replace(b"\n", b"")] + lines[5:8] + \
        lines[5:8] + lines[8:-1] + [b'{"event":"instance_fin']
    with open(path, "wb") as f:
        f.write(b"\n".join(damaged))
    out = b.resume(run_dir)
    assert out.returncode == 0 and "nothing to resume" in out.stderr, out.stderr
    assert "warning" in out.stderr and "Traceback" not in out.stderr
    assert b.starts() == collections.Counter()
    shown = b.run("runs", "show", run_dir, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "succeeded"


@pytest.mark.damages_documents
def test_truncated_journal_reruns_only_lost_instances(finished_run, tmp_path):
    b, run_dir = copy_run(finished_run, tmp_path)
    path = journal.journal_path(run_dir)
    with open(path, "rb") as f:
        data = f.read()
    cut = data.index(b'"event":"instance_finished"', len(data) // 2) + 40  # mid-way through a finished line
    with open(path, "wb") as f:
        f.write(data[:cut])
    os.unlink(os.path.join(run_dir, "results.json"))  # the journal is all that is left
    kept = succeeded_in_journal(run_dir)
    assert 0 < len(kept) < len(b.names)
    out = b.resume(run_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    starts = b.starts()
    assert set(starts) == set(b.names) - kept and set(starts.values()) == {1}
    b.check_complete(run_dir)


@pytest.mark.damages_documents
def test_success_only_in_results_json_is_not_rerun(finished_run, tmp_path):
    b, run_dir = copy_run(finished_run, tmp_path)
    path = journal.journal_path(run_dir)
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    # a bit flip inside one success line: the journal loses it, results.json still has it
    victim = next(i for i, ln in enumerate(lines) if b'"status":"succeeded"' in ln and b"instance_finished" in ln)
    lines[victim] = lines[victim][:30] + b"\xff" + lines[victim][31:]
    with open(path, "wb") as f:
        f.write(b"\n".join(lines))
    out = b.resume(run_dir)
    assert out.returncode == 0 and "kept from results.json" in out.stderr, out.stderr
    assert b.starts() == collections.Counter()


@pytest.mark.damages_documents
def test_unrecoverable_journal_is_a_clear_error(finished_run, tmp_path):
    b, run_dir = copy_run(finished_run, tmp_path)
    with open(journal.journal_path(run_dir), "wb") as f:
        f.write(random.Random(5).randbytes(8192))
    out = b.resume(run_dir)
    assert out.returncode == 1
    assert "no readable run_started" in out.stderr and "Traceback" not in out.stderr
    assert b.starts() == collections.Counter()
    listed = b.run("runs", "list", "--results-dir", b.results, "--json")
    assert listed.returncode == 0
