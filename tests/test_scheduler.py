"""Scheduler through the real command line: retries, authentication stop, budgets, deadline, concurrency, stagger.

Concurrency is measured by the instances themselves: each one increments a counter in a shared file under an
exclusive ``flock`` when it starts and decrements it when it ends, recording the highest value seen. That bound can
only be lower than the real overlap, never higher, so ``max <= cap`` is a sound check that needs no timing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio

from orchestrator_pex.config import parse_batch
from orchestrator_pex.headroom import Headroom
from orchestrator_pex.plan import make_plan
from orchestrator_pex.scheduler import Scheduler
from tests.support.batches import sim

PY = json.dumps(sys.executable)

COUNTER = r'''
import fcntl, json, sys, time
path, name, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])

def update(delta):
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        data = f.read()
        cur, top, log = json.loads(data) if data else (0, 0, [])
        cur += delta
        log.append([name, delta, time.time()])
        f.seek(0)
        f.truncate()
        f.write(json.dumps([cur, max(top, cur), log]))

update(1)
print(json.dumps({"type": "note", "started": name}), flush=True)  # output: not "starting" for the headroom
time.sleep(hold)
update(-1)
'''

# A stand-in agent whose every attempt spends tokens and then fails with a transient API error (529).
SPEND_THEN_529 = r'''
import json
usage = {"input_tokens": 100, "output_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
print(json.dumps({"type": "system", "subtype": "init", "session_id": "s-1", "model": "claude-sonnet-4-5"}))
print(json.dumps({"type": "assistant", "message": {"id": "msg_x", "type": "message", "role": "assistant",
      "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "hi"}], "usage": usage}}))
print(json.dumps({"type": "result", "subtype": "success", "is_error": True, "api_error_status": 529,
      "usage": usage, "total_cost_usd": 0.001, "num_turns": 1, "session_id": "s-1", "result": "API Error: 529"}))
raise SystemExit(1)
'''


def head(top: str = "") -> str:
    """Top-level keys (``top`` goes before the first table), then a fast [retry]."""
    return "claude = {claude}\ngrace_period = 0.5\n" + top + "[retry]\nbackoff = 0.05\nbackoff_max = 0.1\n"


def _events(stderr: bytes) -> list:
    return [json.loads(line) for line in stderr.decode().splitlines()]


# -- retries -----------------------------------------------------------------------------------------------------------


def test_transient_api_errors_are_retried_and_attempts_summed(run_batch, write_batch, tmp_path):
    (tmp_path / "spend529.py").write_text(SPEND_THEN_529)
    path = write_batch(head("concurrency = 3\n")
                       + sim("overloaded", "api-529", "retries = 2")
                       + sim("flaky", "flaky", "retries = 2", AGENT_SIM_FAIL_TIMES="1",
                              AGENT_SIM_STATE_FILE=str(tmp_path / "flaky.state"))
                       + f'[[instances]]\nname = "spender"\nargv = [{PY}, "{tmp_path}/spend529.py"]\nretries = 2\n')
    res = run_batch(path, "--json-logs")
    assert res.code == 1, res.stderr
    r = res.inst("overloaded")
    assert (r["status"], r["api_error_status"], r["attempts"]) == ("api-error", 529, 3)
    r = res.inst("flaky")
    assert (r["status"], r["attempts"], r["api_error_status"]) == ("succeeded", 2, None)
    assert r["tokens"]["total"] == 13049
    r = res.inst("spender")  # every attempt spent 110 tokens and $0.001: retries are never free
    assert (r["status"], r["attempts"]) == ("api-error", 3)
    assert r["tokens"] == {"input": 300, "output": 30, "cache_creation": 0, "cache_read": 0, "total": 330}
    assert r["cost_usd"] == pytest.approx(0.003) and r["cost_source"] == "result"
    retries = [e for e in _events(res.stderr) if e["event"] == "instance_retry"]
    by_name = {}
    for e in retries:
        by_name.setdefault(e["name"], []).append(e["attempt"])
    assert by_name == {"overloaded": [1, 2], "flaky": [1], "spender": [1, 2]}
    assert all(e["api_error_status"] == 529 for e in retries)
    assert res.doc["totals"]["tokens"]["total"] == 13049 + 330


def test_401_stops_further_launches(run_batch, write_batch):
    path = write_batch(head("concurrency = 1\n") + sim("first", "ok") + sim("auth", "api-401", "retries = 3")
                       + sim("later1", "ok") + sim("later2", "ok"))
    res = run_batch(path)
    assert res.code == 1, res.stderr
    assert res.statuses() == {"first": "succeeded", "auth": "api-error", "later1": "not-started",
                              "later2": "not-started"}
    auth = res.inst("auth")
    assert auth["api_error_status"] == 401 and auth["attempts"] == 1  # never retried
    later = res.inst("later1")
    assert later["attempts"] == 0 and later["exit_code"] is None and later["stdout_log"] is None
    assert "401" in later["error"]
    assert not os.path.exists(os.path.join(res.doc["run_dir"], "logs", "later1.stdout"))


# -- budgets -----------------------------------------------------------------------------------------------------------

EXPENSIVE = dict(AGENT_SIM_TURNS="4", AGENT_SIM_DELAY="0.05")  # 4 x (100000 input + 500 output) tokens
FULL = 4 * 100_500


def test_batch_budget_block_stops_everything_exit_3(run_batch, write_batch):
    path = write_batch(head("concurrency = 1\n") + "[budget]\nmax_tokens = 250000\nmode = \"block\"\n"
                       + sim("big", "expensive", **EXPENSIVE) + sim("after", "ok"))
    res = run_batch(path)
    assert res.code == 3, res.stderr
    assert res.doc["status"] == "budget-stopped"
    assert res.statuses() == {"big": "budget-stopped", "after": "not-started"}
    big = res.inst("big")
    assert 250_000 < big["tokens"]["total"] < FULL
    assert "budget" in big["error"]
    assert "budget" in res.inst("after")["error"]


def test_batch_budget_warn_continues_and_warns_once(run_batch, write_batch):
    path = write_batch(head("concurrency = 1\n") + "[budget]\nmax_tokens = 250000\nmode = \"warn\"\n"
                       + sim("big", "expensive", **EXPENSIVE) + sim("after1", "ok") + sim("after2", "ok"))
    res = run_batch(path)
    assert res.code == 0, res.stderr
    assert res.statuses() == {"big": "succeeded", "after1": "succeeded", "after2": "succeeded"}
    assert res.inst("big")["tokens"]["total"] == FULL
    warnings = [line for line in res.stderr.decode().splitlines() if "warning:" in line and "budget" in line]
    assert len(warnings) == 1  # once per batch, not once per instance that accounts after the crossing
    assert "batch 3" in warnings[0] and "> budget.max_tokens 250000 (mode warn: continuing)" in warnings[0]


def test_instance_budgets_stop_only_that_instance(run_batch, write_batch):
    path = write_batch(head("concurrency = 3\n")
                       + sim("tokens", "expensive", "max_tokens = 150000", **EXPENSIVE)
                       + sim("dollars", "expensive", "max_cost_usd = 0.5", **EXPENSIVE)
                       + sim("small", "tool-use", "max_tokens = 1000000"))
    res = run_batch(path)
    assert res.statuses() == {"tokens": "budget-stopped", "dollars": "budget-stopped", "small": "succeeded"}
    assert res.code == 1  # the batch itself was not budget-stopped: an instance did not succeed
    t = res.inst("tokens")
    assert 150_000 < t["tokens"]["total"] < FULL and "max_tokens 150000" in t["error"]
    d = res.inst("dollars")
    assert 0.5 < d["cost_usd"] < 1.3 and d["cost_source"] == "estimate" and "max_cost_usd 0.5" in d["error"]


# -- deadline, concurrency, stagger -----------------------------------------------------------------------------------


def test_batch_deadline(run_batch, write_batch):
    path = write_batch(head("concurrency = 2\n") + "".join(sim(f"h{i}", "hang") for i in range(4)))
    res = run_batch(path, "--deadline", "1")
    assert res.code == 1, res.stderr
    assert res.statuses() == {"h0": "timed-out", "h1": "timed-out", "h2": "not-started", "h3": "not-started"}
    assert "deadline" in res.inst("h2")["error"]


def test_deadline_during_retry_backoff(run_batch, write_batch):
    path = write_batch('claude = {claude}\ngrace_period = 0.5\n[retry]\nbackoff = 600\n'
                       + sim("o", "api-529", "retries = 3"))
    res = run_batch(path, "--deadline", "1")
    assert res.code == 1, res.stderr
    r = res.inst("o")
    assert r["attempts"] == 1 and r["api_error_status"] == 529
    assert r["status"] == "timed-out"


def _counter_batch(tmp_path, n: int, hold: float, head: str) -> Path:
    (tmp_path / "counter.py").write_text(COUNTER)
    body = "".join(f'[[instances]]\nname = "c{i}"\nargv = [{PY}, "{tmp_path}/counter.py", "{tmp_path}/count.json", '
                   f'"c{i}", "{hold}"]\n' for i in range(n))
    path = tmp_path / "batch.toml"
    path.write_text(head + body)
    return path


def test_concurrency_cap_from_command_line(run_batch, tmp_path):
    path = _counter_batch(tmp_path, 6, 0.4, "grace_period = 0.5\nconcurrency = 6\n")
    res = run_batch(path, "--concurrency", "3")
    assert res.code == 0, res.stderr
    cur, top, log = json.loads((tmp_path / "count.json").read_text())
    assert cur == 0 and len(log) == 12
    assert 1 <= top <= 3


def test_concurrency_one_is_sequential_in_batch_order(run_batch, tmp_path):
    path = _counter_batch(tmp_path, 4, 0.05, "grace_period = 0.5\nconcurrency = 1\n")
    res = run_batch(path)
    assert res.code == 0, res.stderr
    cur, top, log = json.loads((tmp_path / "count.json").read_text())
    assert top == 1
    assert [(name, delta) for name, delta, _ in log] == [(f"c{i}", d) for i in range(4) for d in (1, -1)]


def test_stagger_spaces_launches(run_batch, tmp_path):
    """Through the command line: launches happen one by one, in batch order (the spacing itself is checked on the
    mock clock below, where it is exact instead of subject to process start-up jitter)."""
    path = _counter_batch(tmp_path, 3, 0.0, "grace_period = 0.5\nstagger = 0.2\n")
    res = run_batch(path)
    assert res.code == 0, res.stderr
    _, _, log = json.loads((tmp_path / "count.json").read_text())
    assert [name for name, delta, _ in log if delta == 1] == ["c0", "c1", "c2"]


# -- launch timing, on trio's MockClock (no processes: an injected attempt runner) -----------------------------------


class AlwaysRoom(Headroom):
    """Headroom that never holds a launch back (the tests below check the cap, the stagger and the deadline)."""

    def allows(self, now, running, kind, progress=0) -> bool:
        return True


class FakeRunner:
    """Stands in for ``runtime.run_attempt``: each attempt "runs" for ``hold[name]`` seconds of trio time (default
    ``default``), or until the scheduler stops it, and exits 0. Records launch times and the peak overlap."""

    def __init__(self, default: float = 1.0, **hold: float) -> None:
        self.default = default
        self.hold = hold
        self.starts: list = []  # (argv[-1], trio time)
        self.running = 0
        self.peak = 0
        self._pids = iter(range(10_000_000, 20_000_000))  # never signalled: the fake has no process

    async def __call__(self, attempt, argv, *, on_spawn, on_output, **_: object) -> None:
        name = argv[-1]
        attempt.pid = next(self._pids)
        attempt.started_mono = attempt.last_output_mono = trio.current_time()
        on_spawn(attempt)
        self.starts.append((name, trio.current_time()))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            with trio.CancelScope() as scope:
                attempt.scope = scope
                await trio.sleep(self.hold.get(name, self.default))
        finally:
            self.running -= 1
        attempt.exit_code = -15 if scope.cancelled_caught else 0


def _fake_plan(tmp_path, n: int, head: str = ""):
    text = "grace_period = 0.5\n" + head + "".join(
        f'[[instances]]\nname = "f{i}"\nargv = ["/bin/true", "f{i}"]\n' for i in range(n))
    (tmp_path / "run" / "logs").mkdir(parents=True)
    return make_plan(parse_batch(text.encode(), str(tmp_path / "b.toml")))


async def test_stagger_spaces_launches_exactly(tmp_path, autojump_clock):
    runner = FakeRunner(default=0.0)
    sched = Scheduler(_fake_plan(tmp_path, 4, "stagger = 0.4\n"), str(tmp_path / "run"), headroom=AlwaysRoom(),
                      attempt_runner=runner)
    records = await sched.run()
    assert [r["status"] for r in records] == ["succeeded"] * 4
    assert [name for name, _ in runner.starts] == ["f0", "f1", "f2", "f3"]
    gaps = [b - a for (_, a), (_, b) in zip(runner.starts, runner.starts[1:])]
    assert all(gap >= 0.4 for gap in gaps), gaps  # launch i+1 waits at least the stagger after launch i
    assert all(gap < 0.4 + 0.1 + 1e-9 for gap in gaps), gaps  # ... and no longer than one admission poll more


async def test_concurrency_cap_is_reached_and_never_exceeded(tmp_path, autojump_clock):
    runner = FakeRunner(default=5.0)
    sched = Scheduler(_fake_plan(tmp_path, 7), str(tmp_path / "run"), headroom=AlwaysRoom(), concurrency=3,
                      attempt_runner=runner)
    records = await sched.run()
    assert [r["status"] for r in records] == ["succeeded"] * 7
    assert runner.peak == 3
    # three waves: 0-2 at once, 3-5 when those end (5 s later), 6 after that
    starts = dict(runner.starts)
    assert [starts[f"f{i}"] // 5 for i in range(7)] == [0, 0, 0, 1, 1, 1, 2]


async def test_deadline_stops_running_and_leaves_the_rest_not_started(tmp_path, autojump_clock):
    runner = FakeRunner(default=3600.0)
    sched = Scheduler(_fake_plan(tmp_path, 4), str(tmp_path / "run"), headroom=AlwaysRoom(), concurrency=2,
                      deadline=10.0, attempt_runner=runner)
    records = await sched.run()
    assert [r["status"] for r in records] == ["timed-out", "timed-out", "not-started", "not-started"]
    assert "deadline" in records[2]["error"]
    assert trio.current_time() - sched.started_mono == pytest.approx(10.0, abs=0.5)  # mock time: exact, not slow
    assert runner.running == 0


# -- admission, in process ---------------------------------------------------------------------------------------------


async def test_headroom_counts_instances_that_are_still_starting(tmp_path):
    text = "grace_period = 0.3\n" + "".join(
        f'[[instances]]\nname = "s{i}"\nargv = ["/bin/sleep", "30"]\n' for i in range(3))  # no output: "starting"
    plan = make_plan(parse_batch(text.encode(), str(tmp_path / "b.toml")))
    (tmp_path / "run" / "logs").mkdir(parents=True)
    sched = Scheduler(plan, str(tmp_path / "run"), headroom=Headroom(cpus=1), deadline=1.0)
    records = await sched.run()
    assert [r["status"] for r in records] == ["timed-out", "not-started", "not-started"]


async def test_scheduler_gives_every_instance_one_record_and_event(tmp_path):
    text = "grace_period = 0.3\nconcurrency = 1\n" + "".join(
        f'[[instances]]\nname = "s{i}"\nargv = ["/bin/sleep", "30"]\n' for i in range(3))
    plan = make_plan(parse_batch(text.encode(), str(tmp_path / "b.toml")))
    (tmp_path / "run" / "logs").mkdir(parents=True)

    class Sink:
        events: list = []

        async def emit(self, event):
            self.events.append(event)

    sink = Sink()
    sched = Scheduler(plan, str(tmp_path / "run"), sinks=[sink], deadline=0.8)
    with trio.fail_after(30):
        records = await sched.run()
    assert [r["status"] for r in records] == ["timed-out", "not-started", "not-started"]
    finished = [e["name"] for e in sink.events if e["event"] == "instance_finished"]
    assert sorted(finished) == ["s0", "s1", "s2"]
    assert [e["name"] for e in sink.events if e["event"] == "instance_started"] == ["s0"]
