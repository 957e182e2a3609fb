"""The pressure controller, fed synthetic samples (no clock, no /proc of this machine), and the /proc sampler fed
files written here; one integration run: a batch completes under admission by pressure."""

from __future__ import annotations

import os
import sys

import pytest

from orchestrator_pex import pressure
from orchestrator_pex.pressure import Controller, PressureAdmission, ProcSampler, Sample, Window

GiB = 1 << 30


class Machine:
    """Cumulative counters of a synthetic 2-CPU machine, advanced one window at a time."""

    def __init__(self) -> None:
        self.t = 0.0
        self.stall_us = 0
        self.idle = 0
        self.total = 0
        self.mem_stall_us = 0
        self.progress = 0
        self.available = 16 * GiB

    def advance(self, *, stall: float = 0.0, idle: float = 0.0, rate: float = 0.0, mem_stall: float = 0.0,
                seconds: float = 0.2) -> Sample:
        self.t += seconds
        self.stall_us += int(stall * seconds * 1e6)
        self.mem_stall_us += int(mem_stall * seconds * 1e6)
        ticks = int(2 * 100 * seconds)
        self.total += ticks
        self.idle += int(idle * ticks)
        self.progress += int(rate * seconds)
        return self.now()

    def now(self) -> Sample:
        return Sample(self.t, self.stall_us, self.idle, self.total, 1, self.available, 24 * GiB, self.mem_stall_us,
                      self.progress)


def step(ctl: Controller, m: Machine, *, limited: bool = True, running: int = 0, starting: int = 0, **kw) -> int:
    before = m.now()
    after = m.advance(**kw)
    window = Window.between(before, after)
    assert window is not None
    return ctl.step(window, after, running or ctl.width, limited, starting)


def test_window_shares_and_rate():
    m = Machine()
    a = m.now()
    b = m.advance(stall=0.5, idle=0.25, rate=100, mem_stall=0.1, seconds=0.2)
    w = Window.between(a, b)
    assert w is not None
    assert w.cpu_stall == pytest.approx(0.5)
    assert w.idle == pytest.approx(0.25)
    assert w.mem_stall == pytest.approx(0.1)
    assert w.rate == pytest.approx(100)
    assert Window.between(b, b) is None  # no time passed: no window


def test_widens_while_the_machine_has_room_up_to_the_cap():
    ctl, m = Controller(cap=64, start=2), Machine()
    widths = [step(ctl, m, stall=0.0, idle=0.3, rate=50) for _ in range(30)]
    assert widths == sorted(widths) and widths[0] > 2
    assert widths[-1] == 64  # bounded by the hard cap
    assert ctl.last_rule == "room"


def test_idle_machine_widens_faster():
    slow, fast = Controller(cap=1000, start=4), Controller(cap=1000, start=4)
    step(slow, Machine(), stall=0.0, idle=0.2)
    step(fast, Machine(), stall=0.0, idle=0.9)
    assert fast.width > slow.width > 4


def test_instances_not_printed_yet_count_as_using_a_cpu():
    """Room is judged with every instance that has not printed yet counted as a busy CPU: its start-up has not shown
    in the idle time yet (the P2 (a) cause: the width doubled every window on a quiet machine while Claude Code
    instances were still starting, up to 16-17 where 2 at a time is best)."""
    quiet = Machine()
    ctl = Controller(cap=20, start=2, cpus=2)
    assert step(ctl, quiet, idle=0.9, starting=2) == 2 and ctl.last_rule == "hold"  # 0.9 - 2/2: no room
    assert step(ctl, quiet, idle=0.9, starting=1) == 3 and ctl.last_rule == "room"  # 0.4 left: × 1.25, at least +1
    assert step(ctl, quiet, idle=0.9, starting=0) == 6 and ctl.last_rule == "room"  # half the machine free: × 2


def test_slow_starters_on_a_quiet_machine_keep_the_width_near_the_cpus():
    """A synthetic 2-CPU machine running instances that print nothing and show no CPU for their first second (five
    windows), then use a whole CPU each: the width never runs ahead of what the CPUs can hold."""
    ctl, m = Controller(cap=20, start=2, cpus=2), Machine()
    ages: list = []  # windows each running instance has run
    widest = 0
    for _ in range(60):
        ages = [a for a in ages if a < 12]  # each runs 12 windows; the scheduler fills the free places at once
        ages = [a + 1 for a in ages + [0] * (ctl.width - len(ages))]
        busy = sum(1 for a in ages if a > 5)
        starting = sum(1 for a in ages if a <= 5)
        idle = max(0.0, 1 - busy / 2)
        stall = min(1.0, max(0.0, (busy - 2) / 2))
        step(ctl, m, idle=idle, stall=stall, rate=busy, running=len(ages), starting=starting)
        widest = max(widest, ctl.width)
    assert widest <= 3


def test_agents_that_wait_after_starting_still_reach_the_cap():
    """The same machine, but each instance uses a CPU only while starting (five windows, then it waits on its API,
    as P2 (b)): once the starters have printed, the idle CPUs are room again, and the width climbs to the cap."""
    ctl, m = Controller(cap=20, start=2, cpus=2), Machine()
    ages: list = []
    for _ in range(80):
        ages = [a + 1 for a in ages + [0] * (ctl.width - len(ages))]  # nobody finishes in this test
        starting = sum(1 for a in ages if a <= 5)
        idle = max(0.0, 1 - min(2, starting) / 2)
        step(ctl, m, idle=idle, stall=max(0.0, (starting - 2) / 2), rate=0, running=len(ages), starting=starting)
    assert ctl.width == 20


def test_a_few_progress_events_are_not_throughput():
    """Under pressure, a window with fewer than MIN_EVENTS progress events teaches nothing: a handful of Claude Code
    lines in 0.2 s is noise, and widening on it ratcheted the width up."""
    ctl, m = Controller(cap=64, start=2), Machine()
    few = (pressure.MIN_EVENTS - 1) / 0.2  # events per second that make MIN_EVENTS - 1 in a window
    for _ in range(5):
        assert step(ctl, m, stall=0.9, idle=0.0, rate=few) == 2
    assert ctl.last_rule == "hold"
    assert step(ctl, m, stall=0.9, idle=0.0, rate=pressure.MIN_EVENTS / 0.2) == 3  # enough: it rose from nothing
    assert ctl.last_rule == "throughput rose"


def test_holds_when_the_width_was_not_the_limit():
    ctl, m = Controller(cap=64, start=4), Machine()
    assert step(ctl, m, limited=False, stall=0.0, idle=0.9, rate=10) == 4
    assert ctl.last_rule.startswith("hold")


def test_narrows_when_pressure_rises_and_throughput_falls():
    ctl, m = Controller(cap=64, start=2), Machine()
    step(ctl, m, stall=0.05, idle=0.5, rate=100)  # quiet machine: widen
    wide = step(ctl, m, stall=0.3, idle=0.0, rate=150)  # busy, but more got done: widen again
    assert wide > 2 and ctl.last_rule == "throughput rose"
    narrowed = step(ctl, m, stall=0.9, idle=0.0, rate=120)  # stall rose well above the quietest, less done
    assert narrowed < wide and ctl.last_rule == "pressure rose"


def test_saturated_machine_width_follows_throughput():
    """Other work keeps the CPU stalled from the start: widen while throughput rises, stop where it does not."""
    ctl, m = Controller(cap=128, start=2), Machine()
    rate = 100.0
    for _ in range(3):  # each widening gets more done
        rate *= 1.5
        step(ctl, m, stall=1.0, idle=0.0, rate=rate)
        assert ctl.last_rule.startswith("throughput")
    plateau = ctl.width
    step(ctl, m, stall=1.0, idle=0.0, rate=rate)  # no better than before the last widening
    assert ctl.width == plateau and ctl.last_rule == "hold"
    assert plateau < 128


def test_throughput_growing_with_the_width_doubles_it():
    """Agents that mostly wait on a machine other work keeps saturated: throughput follows the width, so widen fast."""
    ctl, m = Controller(cap=512, start=4), Machine()
    step(ctl, m, stall=1.0, idle=0.0, rate=400)  # first measurement: × 1.25
    assert ctl.width == 5 and ctl.last_rule == "throughput rose"
    step(ctl, m, stall=1.0, idle=0.0, rate=500)  # 25 % wider, 25 % more done: proportional
    assert ctl.width == 10 and ctl.last_rule == "throughput scaled"
    step(ctl, m, stall=1.0, idle=0.0, rate=600)  # twice as wide, only 20 % more done: no longer proportional
    assert ctl.width == 12 and ctl.last_rule == "throughput rose"


def test_no_progress_under_pressure_holds():
    """Instances still starting print nothing: under pressure that is no reason to widen (0 is not a rise over 0)."""
    ctl, m = Controller(cap=128, start=4), Machine()
    for _ in range(5):
        assert step(ctl, m, stall=0.95, idle=0.0, rate=0) == 4
    assert ctl.last_rule == "hold"


def test_memory_short_narrows_and_stops_starts():
    ctl, m = Controller(cap=64, start=16, peak_rss=256 << 20), Machine()
    m.available = 600 << 20  # under the 512 MiB reserve (24 GiB: 5 % = 1.2 GiB) once an instance is added
    w = step(ctl, m, stall=0.0, idle=0.9)
    assert w < 16 and not ctl.memory_ok() and ctl.last_rule == "memory"
    m.available = 16 * GiB
    step(ctl, m, stall=0.0, idle=0.9)
    assert ctl.memory_ok()


def test_memory_stall_narrows():
    ctl, m = Controller(cap=64, start=16), Machine()
    assert step(ctl, m, stall=0.0, idle=0.9, mem_stall=0.5) < 16 and not ctl.memory_ok()


def test_width_never_below_one():
    ctl, m = Controller(cap=64, start=3), Machine()
    m.available = 0
    for _ in range(10):
        step(ctl, m)
    assert ctl.width == 1


def test_missing_gauges_never_raise():
    ctl = Controller(cap=8, start=2)
    a = Sample(0.0, None, None, None, None, None, None, None, 0)
    b = Sample(0.2, None, None, None, None, None, None, None, 50)
    window = Window.between(a, b)
    assert window is not None and window.cpu_stall is None and window.idle is None
    ctl.step(window, b, 2, True)  # only throughput is known: it rose from nothing, widen
    assert ctl.width == 3 and ctl.memory_ok()


def test_admission_samples_once_per_window_and_counts_running():
    m = Machine()
    calls = []

    def sampler(now: float, progress: int) -> Sample:
        calls.append(now)
        m.t = now
        m.stall_us += 1  # a quiet machine
        m.idle += 20
        m.total += 40
        return m.now()

    adm = PressureAdmission(cap=8, sampler=sampler, cpus=2, busy=None)
    assert adm.allows(0.0, iter([]), "generic", 0)  # nothing running: always
    assert adm.allows(0.05, iter([(1, True)]), "generic", 0)
    assert not adm.allows(0.06, iter([(1, True), (2, True)]), "generic", 0)  # width 2 reached: held back
    assert calls == [0.0]  # within one window: one sample
    assert adm.allows(0.3, iter([(1, True), (2, True)]), "generic", 0)  # window ended, limited, room: width 3+
    assert calls == [0.0, 0.3]
    assert adm.controller.width > 2


class Busy:
    """A stand-in for the busy rule of headroom.py."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls = 0

    def allows(self, now, running, kind, progress=0) -> bool:
        self.calls += 1
        return self.answer


def test_the_busy_rule_is_a_floor_under_the_width():
    """Silent, idle instances on a saturated machine: the width learns nothing, the busy rule still admits."""
    m = Machine()

    def sampler(now: float, progress: int) -> Sample:
        m.t = now
        m.stall_us += int(0.2 * 1e6)  # stalled the whole time, no idle, no progress
        m.total += 40
        return m.now()

    running = [(1, True), (2, True)]
    idle_agents = PressureAdmission(cap=8, sampler=sampler, cpus=2, busy=Busy(True))
    assert idle_agents.allows(0.0, iter(running), "generic", 0)
    assert idle_agents.busy.calls == 1  # asked only because the width (2) was reached
    busy_agents = PressureAdmission(cap=8, sampler=sampler, cpus=2, busy=Busy(False))
    assert not busy_agents.allows(0.0, iter(running), "generic", 0)
    assert busy_agents.allows(0.0, iter(running[:1]), "generic", 0)  # below the width: no need to ask
    assert busy_agents.busy.calls == 1


def test_busy_rule_reads_no_proc_file_while_enough_are_starting(monkeypatch):
    """Instances with no output yet are busy without measuring: when they alone reach the CPUs, the busy rule
    answers without reading any /proc/PID/stat (P4: dozens of starting instances probed every 100 ms)."""
    from orchestrator_pex import headroom

    reads = []
    monkeypatch.setattr(headroom, "_cpu_ticks", lambda pid: reads.append(pid) or 0)
    monkeypatch.setattr(headroom, "mem_available", lambda: None)
    rule = headroom.Headroom(cpus=2)
    rule._proc = True
    starting = [(None, False), (11, False), (12, True), (13, True)]
    assert not rule.allows(0.0, iter(starting), "generic")
    assert reads == []
    assert rule.busy_count(0.0, iter(starting), enough=3) == 4  # one starting short: the others are measured
    assert reads == [12, 13]
    # idle ones (no CPU used between two samples) leave room
    assert rule.allows(1.0, iter([(12, True), (13, True)]), "generic")
    assert reads == [12, 13, 12, 13]


def test_trace_writes_one_strict_json_line_per_step(tmp_path, monkeypatch):
    import json

    m = Machine()

    def sampler(now: float, progress: int) -> Sample:
        m.t = now
        m.total += 40
        m.idle += 30  # three quarters idle: room
        m.progress = progress
        return m.now()

    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv(pressure.TRACE_ENV, str(trace))
    adm = PressureAdmission(cap=64, sampler=sampler, cpus=2, busy=None)
    running = [(1, True), (2, True)]
    for i in range(4):  # the first call only samples; then three windows of 0.2 s
        adm.allows(0.2 * i, iter(running), "generic", 10 * i)
    lines = [json.loads(x, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
             for x in trace.read_text().splitlines()]
    assert len(lines) == 3
    # two running at width 2 held starts back: room (three quarters idle) doubles the width; then two running
    # under a width of 4 hold nothing back, and nothing is learned
    assert [x["rule"] for x in lines] == ["room", "hold: width not the limit", "hold: width not the limit"]
    assert [x["width"] for x in lines] == [4, 4, 4] and adm.controller.width == 4
    assert [x["limited"] for x in lines] == [True, False, False]
    assert lines[0]["idle"] == pytest.approx(0.75) and lines[0]["rate"] == pytest.approx(50.0)
    assert lines[-1]["progress"] == 30 and lines[-1]["running"] == 2 and lines[-1]["starting"] == 0

    monkeypatch.setenv(pressure.TRACE_ENV, str(tmp_path / "absent-dir" / "trace.jsonl"))
    quiet = PressureAdmission(cap=64, sampler=sampler, cpus=2, busy=None)
    for i in range(4, 7):
        quiet.allows(0.2 * i, iter(running), "generic", 0)  # cannot write: tracing turns off, the run goes on
    assert quiet.trace_path is None


def write_proc(root, *, cpu="some avg10=1.00 avg60=0.50 avg300=0.10 total=123456\nfull avg10=0 total=0\n",
               stat="cpu  100 0 50 800 20 0 5 0 0 0\ncpu0 50 0 25 400 10 0 2 0 0 0\nprocs_running 3\n",
               meminfo="MemTotal:       16000000 kB\nMemFree: 1 kB\nMemAvailable:    8000000 kB\n",
               memory="some avg10=0 total=77\nfull avg10=0 total=0\n"):
    os.makedirs(root / "pressure", exist_ok=True)
    for name, body in (("pressure/cpu", cpu), ("stat", stat), ("meminfo", meminfo), ("pressure/memory", memory)):
        if body is not None:
            (root / name).write_text(body)


def test_proc_sampler_reads_the_files(tmp_path):
    write_proc(tmp_path)
    s = ProcSampler(str(tmp_path)).sample(1.5, 42)
    assert s == Sample(1.5, 123456, 820, 975, 3, 8000000 * 1024, 16000000 * 1024, 77, 42)
    assert ProcSampler(str(tmp_path)).usable()


def test_proc_sampler_without_pressure_is_not_usable(tmp_path):
    write_proc(tmp_path, cpu=None)
    assert not ProcSampler(str(tmp_path)).usable()
    assert not ProcSampler(str(tmp_path / "absent")).usable()  # macOS: no /proc at all


@pytest.mark.parametrize("junk", ["", "some total=abc\n", "garbage", "\x00\xff"])
def test_proc_sampler_tolerates_junk(tmp_path, junk):
    write_proc(tmp_path, cpu=junk, stat=junk, meminfo=junk, memory=junk)
    s = ProcSampler(str(tmp_path)).sample(0.0, 0)
    assert s.cpu_stall_us is None and s.total_ticks is None and s.mem_available is None


def test_admission_falls_back_to_the_busy_rule(monkeypatch):
    from orchestrator_pex.headroom import Headroom

    monkeypatch.setenv(pressure.ADMISSION_ENV, "busy")
    assert isinstance(pressure.admission(8), Headroom)
    monkeypatch.delenv(pressure.ADMISSION_ENV)
    monkeypatch.setattr(ProcSampler, "usable", lambda self: False)
    assert isinstance(pressure.admission(8), Headroom)
    monkeypatch.setattr(ProcSampler, "usable", lambda self: True)
    adm = pressure.admission(8, {"claude", "generic"})
    assert isinstance(adm, PressureAdmission) and adm.controller.peak_rss == 256 << 20


NOOP = '{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s","total_cost_usd":0}'


async def test_a_batch_completes_under_pressure_admission(tmp_path):
    """Integration: 12 short instances at cap 4 under the real sampler of this machine (where it has one)."""
    from orchestrator_pex.config import parse_batch
    from orchestrator_pex.plan import make_plan
    from orchestrator_pex.scheduler import Scheduler

    usable = ProcSampler().usable()
    if not usable and os.environ.get("CI") != "true":
        pytest.skip("this machine does not report CPU pressure (/proc/pressure/cpu)")
    assert usable, "CI machines must report CPU pressure (/proc/pressure/cpu)"
    agent = tmp_path / "agent.py"
    agent.write_text(f"print({NOOP!r})\n")
    text = "concurrency = 4\n" + "".join(
        f'[[instances]]\nname = "i{i}"\nargv = [{sys.executable!r}, {str(agent)!r}]\n' for i in range(12))
    plan = make_plan(parse_batch(text.encode(), str(tmp_path / "b.toml")))
    sched = Scheduler(plan, str(tmp_path / "run"))
    os.makedirs(tmp_path / "run" / "logs")
    assert isinstance(sched.headroom, PressureAdmission)
    records = await sched.run()
    assert [r["status"] for r in records] == ["succeeded"] * 12
    assert sched.progress >= 24  # every finish and every chunk of output counted
