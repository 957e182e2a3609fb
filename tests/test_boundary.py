"""Error boundaries and the watched guardian (issue 9): a bug ends one instance, never the batch; a bug at the top
still writes results.json and the journal's end and exits 70 with one line; the guardian is replaced if it dies, so
no instance outlives the run whichever of the two is killed first.

Faults are injected from outside the product: the orchestrator runs under a small wrapper (:data:`WRAPPER`) that
patches one scheduler method and then calls the real command line, so no test-only hook lives in the PEX.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from orchestrator_pex import guardian, internal_errors, lock
from orchestrator_pex.config import parse_batch
from orchestrator_pex.plan import make_plan
from orchestrator_pex.scheduler import Scheduler
from orchestrator_pex.secrets import Redactor
from tests.support import procs

ROOT = Path(__file__).resolve().parent.parent
PY = json.dumps(sys.executable)
GONE_TIMEOUT = 30.0
SECRET = "hunter2-not-for-logs-5b1e"

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc") and os.environ.get("CI") != "true",
                                reason="process scans need Linux /proc")

# Runs the real command line with one fault injected (INJECT=instance | run | none).
WRAPPER = r'''
import os, sys
import trio
from orchestrator_pex import cli, scheduler

mode = os.environ.get("INJECT", "none")
if mode == "instance":  # accounting raises for the instance named "bad" (on its first output)
    original = scheduler.Scheduler._account
    def _account(self, state, attempt):
        if state.launch.name == "bad":
            raise RuntimeError("injected accounting failure")
        return original(self, state, attempt)
    scheduler.Scheduler._account = _account
elif mode == "run":  # the launcher raises once two instances run and have printed (the third is not launched)
    original = scheduler.Scheduler._admit
    async def _admit(self, state):
        if len(self.running) >= 2:
            while not all(s.current is not None and s.current.pid and
                          s.current.last_output_mono > s.current.started_mono for s in self.running.values()):
                await trio.sleep(0.05)
            raise RuntimeError("injected failure at the top")
        return await original(self, state)
    scheduler.Scheduler._admit = _admit
elif mode == "console":  # the console sink fails on every event after run_started
    from orchestrator_pex import report
    async def emit(self, event):
        if event.get("event") != "run_started":
            raise RuntimeError("injected console failure")
    report.Console.emit = emit
sys.exit(cli.main(sys.argv[1:]))
'''

# An instance: prints a line, then sleeps $HOLD seconds (from the orchestrator's environment unless the batch sets
# it); with IGNORE_TERM=1 it ignores SIGTERM (a straggler that only SIGKILL ends).
AGENT = ("import os, signal, sys, time\n"
         "if os.environ.get('IGNORE_TERM') == '1': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "print('started', flush=True)\n"
         "time.sleep(float(os.environ.get('HOLD', '600')))\n")


def strict_json(text: str):
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def read_results(run_dir: Path) -> dict:
    return strict_json((run_dir / "results.json").read_text(encoding="utf-8"))


def read_journal(run_dir: Path) -> list:
    return [strict_json(line) for line in (run_dir / "journal.jsonl").read_text(encoding="utf-8").splitlines()]


def instance(name: str, env: str = "") -> str:
    extra = f"env = {{ {env} }}\n" if env else ""
    return (f'[[instances]]\nname = "{name}"\nargv = [{PY}, "-c", {json.dumps(AGENT)}]\n{extra}')


class Env:
    """A batch in ``tmp``, run through :data:`WRAPPER` with its own lock dir and a marker to find its processes."""

    def __init__(self, tmp: Path, batch: str) -> None:
        self.tmp = tmp
        self.marker = f"b{uuid.uuid4().hex}"
        self.batch = tmp / "batch.toml"
        self.batch.write_text(batch)
        self.results = tmp / "runs"
        self.locks = tmp / "locks"
        self.wrapper = tmp / "wrapper.py"
        self.wrapper.write_text(WRAPPER)

    def env(self, **extra: str) -> dict:
        env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="dumb", BOUNDARY_MARK=self.marker,
                   ORCHESTRATOR_PEX_LOCK_DIR=str(self.locks))
        env.pop("ORCHESTRATOR_PEX_RESULTS_DIR", None)
        env.update(extra)
        return env

    def argv(self, *args: str) -> list:
        return [sys.executable, str(self.wrapper), *args]

    def run(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env(**extra), cwd=self.tmp, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def run_dir(self) -> Path:
        dirs = list(self.results.iterdir())
        assert len(dirs) == 1, dirs
        return dirs[0]

    def pids(self) -> list:
        """Live processes carrying this test's marker (the orchestrator, its guardian and the instances)."""
        return procs.pids_with_env("BOUNDARY_MARK", self.marker)

    def instance_pids(self) -> list:
        return [p for p in self.pids() if not is_guardian(p) and b"orchestrator_pex" not in cmdline(p)
                and b"wrapper.py" not in cmdline(p)]

    def assert_all_gone(self) -> None:
        deadline = time.monotonic() + GONE_TIMEOUT
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.pids()
        for pid in left:  # clean up after a failure, one pid at a time
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        assert left == [], f"processes of the batch outlived the run: {[cmdline(p)[:80] for p in left]}"


cmdline = procs.cmdline


def is_guardian(pid: int) -> bool:
    return b"def live_groups" in cmdline(pid)


def guardians_of(parent: int) -> list:
    return [pid for pid in procs.all_pids() if procs.parent(pid) == parent and procs.alive(pid) and is_guardian(pid)]


def wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = 30.0):
    """Poll until ``predicate()`` holds; fail if it never does or the orchestrator exits first."""
    return procs.wait_until(predicate, what, timeout=timeout, proc=proc)


# -- one boundary per instance -----------------------------------------------------------------------------------------


async def test_instance_internal_error_ends_only_that_instance(tmp_path, monkeypatch):
    """In process: accounting raises for one instance; it is failed with an internal error, the others succeed."""
    text = "grace_period = 0.5\n" + instance("bad", 'HOLD = "600"') + "".join(
        instance(f"good{i}", 'HOLD = "0.2"') for i in range(2))
    plan = make_plan(parse_batch(text.encode(), str(tmp_path / "b.toml")))
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    original = Scheduler._account

    def faulty(self, state, attempt):
        if state.launch.name == "bad":
            raise RuntimeError(f"injected accounting failure near {SECRET}")
        return original(self, state, attempt)

    monkeypatch.setattr(Scheduler, "_account", faulty)

    class Sink:
        def __init__(self):
            self.events = []

        async def emit(self, event):
            self.events.append(json.dumps(event, allow_nan=False))  # strict JSON, as the journal writes it

    sink = Sink()
    redactor = Redactor.from_env({}, {"API_TOKEN": SECRET})
    records = await Scheduler(plan, str(run_dir), sinks=[sink], redactor=redactor).run()
    by_name = {r["name"]: r for r in records}
    assert by_name["good0"]["status"] == by_name["good1"]["status"] == "succeeded"
    bad = by_name["bad"]
    assert bad["status"] == "failed"
    assert bad["error"].startswith("internal error: RuntimeError: injected accounting failure")
    assert "internal-errors/bad.txt" in bad["error"]
    assert bad["exit_code"] is not None and bad["exit_code"] != 0  # its process was ended, not left running
    saved = run_dir / "internal-errors" / "bad.txt"
    assert "Traceback" in saved.read_text() and "injected accounting failure" in saved.read_text()
    assert os.stat(saved).st_mode & 0o077 == 0
    assert SECRET not in saved.read_text() and SECRET not in json.dumps(records)  # secrets never reach them
    finished = [json.loads(e)["name"] for e in sink.events if json.loads(e)["event"] == "instance_finished"]
    assert sorted(finished) == ["bad", "good0", "good1"]
    assert internal_errors.is_internal(bad)


def test_instance_internal_error_through_the_cli_and_default_resume_reruns_it(tmp_path):
    b = Env(tmp_path, "grace_period = 0.5\n" + instance("bad") + instance("good", 'HOLD = "0.2"'))
    res = b.run("run", str(b.batch), "--results-dir", str(b.results), INJECT="instance", HOLD="600")
    assert res.returncode == 1, res.stderr  # an instance did not succeed; the batch itself was not ended
    assert "Traceback" not in res.stderr
    run_dir = b.run_dir()
    doc = read_results(run_dir)
    statuses = {r["name"]: r["status"] for r in doc["instances"]}
    assert statuses == {"bad": "failed", "good": "succeeded"}
    assert doc["instances"][0]["error"].startswith("internal error: RuntimeError: injected accounting failure")
    assert "internal_error" not in doc  # the run's own boundary was not involved
    events = read_journal(run_dir)
    assert events[-1]["event"] == "run_finished" and events[-1]["exit_status"] == 1
    dry = b.run("resume", str(run_dir), "--dry-run")
    assert dry.returncode == 0 and dry.stdout.split() == ["bad"], dry.stderr
    again = b.run("resume", str(run_dir), HOLD="0")
    assert again.returncode == 0, again.stderr
    assert {r["name"]: r["status"] for r in read_results(run_dir)["instances"]} == {"bad": "succeeded",
                                                                                    "good": "succeeded"}
    read_journal(run_dir)
    b.assert_all_gone()


def test_deeply_nested_output_never_ends_the_batch(tmp_path, fake_claude):
    """The issue's worst case: one line of nested JSON from one instance must not end the whole batch."""
    nested = ("import sys; sys.stdout.write('[' * 200000 + ']' * 200000 + '\\n'); "
              "sys.stdout.write('{\"a\":' * 100000 + '1' + '}' * 100000 + '\\n')")
    batch = ("grace_period = 0.5\n"
             f'[[instances]]\nname = "hostile"\nargv = [{PY}, "-c", {json.dumps(nested)}]\n'
             + instance("good", 'HOLD = "0.2"'))
    b = Env(tmp_path, batch)
    res = b.run("run", str(b.batch), "--results-dir", str(b.results), INJECT="none")
    assert res.returncode in (0, 1), res.stderr  # never 70: the run itself did not fail
    assert "Traceback" not in res.stderr
    doc = read_results(b.run_dir())
    statuses = {r["name"]: r["status"] for r in doc["instances"]}
    assert statuses["good"] == "succeeded"
    hostile = doc["instances"][0]
    # either the reader skips the line, or (should it ever raise) the instance's boundary ends only this instance
    assert hostile["status"] == "succeeded" or hostile["error"].startswith("internal error:"), hostile
    assert read_journal(b.run_dir())[-1]["event"] == "run_finished"
    b.assert_all_gone()


# -- one boundary for the run ------------------------------------------------------------------------------------------


def test_run_internal_error_writes_results_and_journal_end_exits_70_and_resume_reruns(tmp_path):
    batch = "grace_period = 0.5\n" + "".join(instance(f"i{n}") for n in range(3))
    b = Env(tmp_path, batch)
    res = b.run("run", str(b.batch), "--results-dir", str(b.results), INJECT="run", HOLD="600")
    assert res.returncode == 70, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if "internal error:" in line]
    assert len(lines) == 1, res.stderr
    assert "RuntimeError: injected failure at the top" in lines[0]
    run_dir = b.run_dir()
    saved = run_dir / "internal-errors" / "_run.txt"
    assert f"traceback saved to {saved}" in lines[0]
    assert "injected failure at the top" in saved.read_text()
    doc = read_results(run_dir)
    assert doc["status"] == "failed" and doc["exit_status"] == 70
    assert doc["internal_error"]["traceback"] == str(saved)
    assert doc["internal_error"]["error"].startswith("internal error: RuntimeError: injected failure at the top")
    statuses = {r["name"]: r["status"] for r in doc["instances"]}
    assert statuses == {"i0": "cancelled", "i1": "cancelled", "i2": "not-started"}
    events = read_journal(run_dir)
    assert events[-1]["event"] == "run_finished"
    assert events[-1]["exit_status"] == 70 and events[-1]["internal_error"] == doc["internal_error"]
    b.assert_all_gone()  # the cancelled instances were ended, not orphaned
    dry = b.run("resume", str(run_dir), "--dry-run")
    assert dry.stdout.split() == ["i0", "i1", "i2"], dry.stderr
    again = b.run("resume", str(run_dir), INJECT="none", HOLD="0")
    assert again.returncode == 0, again.stderr
    assert {r["status"] for r in read_results(run_dir)["instances"]} == {"succeeded"}
    read_journal(run_dir)


def test_failing_sink_still_gets_the_journal_its_end(tmp_path):
    b = Env(tmp_path, "grace_period = 0.5\n" + "".join(instance(f"i{n}") for n in range(2)))
    res = b.run("run", str(b.batch), "--results-dir", str(b.results), INJECT="console", HOLD="600")
    assert res.returncode == 70, res.stderr
    assert "Traceback" not in res.stderr and "RuntimeError: injected console failure" in res.stderr
    run_dir = b.run_dir()
    doc = read_results(run_dir)
    assert doc["exit_status"] == 70 and "injected console failure" in doc["internal_error"]["error"]
    events = read_journal(run_dir)
    assert events[-1]["event"] == "run_finished" and events[-1]["exit_status"] == 70
    b.assert_all_gone()
    dry = b.run("resume", str(run_dir), "--dry-run")
    assert dry.stdout.split() == ["i0", "i1"], dry.stderr


def test_unexpected_error_outside_a_run_is_one_line_and_exit_70(tmp_path, monkeypatch, capsys):
    from orchestrator_pex import cli
    from orchestrator_pex.commands import version_cmd

    def boom(args):
        raise KeyError("injected")

    monkeypatch.setattr(version_cmd, "main", boom)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert cli.main(["version"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("orchestrator-pex: internal error: KeyError: 'injected'")
    saved = [p for p in tmp_path.iterdir() if p.name.startswith("orchestrator-pex-internal-error-")]
    assert len(saved) == 1 and str(saved[0]) in err and "Traceback" in saved[0].read_text()
    assert os.stat(saved[0]).st_mode & 0o077 == 0


def test_help_documents_exit_70():
    from orchestrator_pex import cli

    assert "   70  internal error" in cli.build_parser().format_help()


# -- the guardian is watched too ---------------------------------------------------------------------------------------


def test_dead_guardian_is_replaced_keeps_the_lock_and_guards_live_groups(tmp_path):
    path = str(tmp_path / "locks" / "b.lock")
    os.makedirs(os.path.dirname(path), mode=0o700)
    held = lock.try_acquire(path)
    assert held is not None
    g = guardian.start(grace=0.5, keep_fds=(held.fd,))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        g.register(sleeper.pid)
        old = g.pid
        assert g.replace_if_dead() is None  # alive: nothing to do
        os.kill(old, signal.SIGKILL)
        g.proc.wait(timeout=30)
        message = g.replace_if_dead()
        assert message is not None and f"pid {old}" in message and "1 process group" in message
        assert g.pid != old and g.proc.poll() is None and g.replaced == 1
        fds = os.listdir(f"/proc/{g.pid}/fd")
        assert any(os.readlink(f"/proc/{g.pid}/fd/{fd}") == os.path.realpath(path) for fd in fds)
        held.release()
        assert lock.try_acquire(path) is None  # the new guardian holds the batch lock
    finally:
        g.close()
    assert sleeper.wait(timeout=30) != 0  # the replacement killed the group registered with its predecessor


@pytest.mark.parametrize("order", ["guardian-first", "orchestrator-first"])
def test_no_instance_outlives_the_run_in_any_order_of_kills(tmp_path, order):
    batch = "grace_period = 1\n" + "".join(instance(f"i{n}", 'IGNORE_TERM = "1"') for n in range(3))
    b = Env(tmp_path, batch)
    stderr = open(tmp_path / "stderr", "w")
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator_pex", "run", str(b.batch),
                             "--results-dir", str(b.results)], env=b.env(HOLD="600"), cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for(lambda: len(b.instance_pids()) >= 3, "three running instances", proc)
        if order == "guardian-first":
            first = wait_for(lambda: guardians_of(proc.pid), "the guardian", proc)
            assert len(first) == 1
            os.kill(first[0], signal.SIGKILL)
            replacement = wait_for(lambda: [p for p in guardians_of(proc.pid) if p != first[0]],
                                   "a replacement guardian", proc)
            assert len(replacement) == 1
        assert len(b.instance_pids()) >= 3
        proc.kill()
        proc.wait(timeout=30)
        # a resume must not run beside stragglers: whenever the batch lock can be taken, no instance is left
        lock_files = list(b.locks.glob("*.lock"))
        assert len(lock_files) == 1, lock_files
        deadline = time.monotonic() + GONE_TIMEOUT
        while True:
            handle = lock.try_acquire(str(lock_files[0]))
            if handle is not None:
                left = b.instance_pids()
                handle.release()
                assert left == [], f"the lock was free while instances still ran: {left}"
                break
            assert time.monotonic() < deadline, "the batch lock was never released"
            time.sleep(0.05)
        b.assert_all_gone()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        stderr.close()
    if order == "guardian-first":
        log = (tmp_path / "stderr").read_text()
        assert "died (killed by signal 9); started a new one" in log, log
    run_dir = b.run_dir()
    read_journal(run_dir)
    again = b.run("resume", str(run_dir), "--wait-lock", "30", HOLD="0")
    assert again.returncode == 0, again.stderr
    doc = read_results(run_dir)
    assert {r["status"] for r in doc["instances"]} == {"succeeded"}
    read_journal(run_dir)
    b.assert_all_gone()
