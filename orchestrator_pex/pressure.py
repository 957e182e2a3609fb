"""Pressure: how many instances may run at once, found by a feedback controller fed by the machine's own gauges.

Three parts, one job each:

* :class:`Sample` (frozen): one reading of cumulative counters — CPU pressure stall time (``/proc/pressure/cpu``,
  ``some total=`` microseconds), idle and total CPU ticks and the run queue (``/proc/stat``; the run queue is an
  instantaneous count no rule uses), ``MemAvailable`` and ``MemTotal`` (``/proc/meminfo``), memory stall time
  (``/proc/pressure/memory``) — plus the orchestrator's own progress counter (stdout chunks read + instances
  finished), which the caller supplies.
* :class:`ProcSampler`: reads a :class:`Sample` from ``/proc`` (paths injectable for tests). :meth:`ProcSampler.usable`
  is False where ``/proc/pressure/cpu`` or ``/proc/stat`` is missing or unreadable (macOS, kernels before 4.20 or
  booted with ``psi=0``); the scheduler then keeps the per-instance busy rule of :mod:`orchestrator_pex.headroom`.
* :class:`Controller`: pure (no clock, no I/O). Fed one window at a time (two samples, the number of instances
  running and how many of them have not printed yet, whether admission was held back by the width during the
  window), it answers :attr:`Controller.width`, the number of instances that may run at once. Rules, checked in
  this order at the end of each window:

  1. *memory*: ``MemAvailable`` minus the estimated peak of one more instance under the reserve
     (``max(512 MiB, 5 % of RAM)``), or memory stall time over :data:`MEM_STALL` of the window → width × :data:`SHRINK`
     (at least one less), and :meth:`Controller.memory_ok` is False so nothing starts until it recovers;
  2. the width was not the limit during the window (fewer instances wanted to run) → hold: nothing was learned;
  3. *CPU room*: idle time, less one CPU for every running instance that has not printed yet (its start-up has
     not shown in the idle time yet), at least :data:`IDLE_ROOM` of the machine → widen (× :data:`GROW`, at least one
     more; doubled when that room is at least half the machine). Where idle time is not reported: CPU stall under
     :data:`LOW_STALL` of the window with no instance starting;
  4. *pressure rose*: CPU stall time at least :data:`STALL_RISE` above the lowest seen this run and throughput (the
     progress rate) fell under :data:`FELL` × the rate before the last widening → step back to the width before it
     (at least × :data:`SHRINK`);
  5. *throughput still rising*: at least :data:`MIN_EVENTS` progress events in the window (fewer are noise), at
     least :data:`ROSE` × the rate before the last widening → widen again (too little progress teaches nothing:
     hold); × 2 when throughput grew nearly in proportion to the last widening (at least :data:`SCALING` of it: the
     instances do not compete for anything yet, e.g. agents that mostly wait, on a machine other work keeps busy),
     else × :data:`GROW`;
  6. otherwise hold.

  The width stays within ``[1, cap]``; it starts at the number of CPUs. On a machine that other work already keeps
  saturated (stall near 100 % before any instance starts) rule 4 cannot fire on pressure alone, so the width is set
  by throughput: it grows while the batch gets more done and stops where it does not.

:class:`PressureAdmission` joins them behind the interface the scheduler calls (``allows(now, running, kind,
progress)``): it samples at most once per :data:`WINDOW` seconds, feeds the controller, and allows a start while
memory is fine and either fewer than :attr:`Controller.width` instances run or the busy rule of
:mod:`orchestrator_pex.headroom` allows it (a floor: instances that are silent and idle, such as agents waiting on
their API, neither use CPU nor print, so on a machine other work keeps saturated nothing else would widen for them).
With ``$ORCHESTRATOR_PEX_PRESSURE_TRACE`` set to a file, each controller step appends one strict-JSON line to it
(:data:`TRACE_ENV`). It costs three small ``/proc`` reads per window, plus, only while the width holds a start back, the
busy rule's one ``/proc/PID/stat`` read per running instance per 100 ms — none while instances that have not printed yet
(busy without measuring) already number the CPUs.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional, Tuple

import attrs

from orchestrator_pex.headroom import PEAK_RSS, cpu_count

WINDOW = 0.2  #: seconds between samples (one controller step)
GROW = 1.25  #: widen: width × GROW (at least +1); × 2 when idle >= half the machine
SHRINK = 0.75  #: narrow: width × SHRINK (at least -1)
IDLE_ROOM = 0.10  #: idle share of all CPUs that means there is room for more
LOW_STALL = 0.20  #: CPU stall share of the window under which pressure counts as low
STALL_RISE = 0.25  #: CPU stall this much above the lowest seen counts as pressure that rose
ROSE = 1.05  #: throughput ratio (after / before a widening) that means widening helped
FELL = 0.90  #: throughput ratio under which widening hurt
SCALING = 0.8  #: share of a widening that throughput must have grown by for the next widening to double
MEM_STALL = 0.10  #: memory stall share of the window that means memory is short
#: fewest progress events (stdout chunks + finishes) in a window for its rate to count as throughput that rose: one
#: Claude Code instance prints about ten chunks in its life, so a 0.2 s window of a few instances sees 0-7 and the
#: rate it gives is noise (P2 (a): rule 5 ratcheted the width up on it, 2 -> 14 in 5 s)
MIN_EVENTS = 10


def reserve_bytes(total: int) -> int:
    """Memory kept free for the machine: ``max(512 MiB, 5 % of RAM)``."""
    return max(512 << 20, total // 20)


@attrs.frozen
class Sample:
    """Cumulative counters at time ``t`` (seconds, monotonic). ``None``: this machine does not report it."""

    t: float
    cpu_stall_us: Optional[int]  #: /proc/pressure/cpu some total=
    idle_ticks: Optional[int]  #: /proc/stat cpu idle + iowait
    total_ticks: Optional[int]  #: /proc/stat cpu, all fields
    runnable: Optional[int]  #: /proc/stat procs_running (instantaneous)
    mem_available: Optional[int]  #: bytes
    mem_total: Optional[int]  #: bytes
    mem_stall_us: Optional[int]  #: /proc/pressure/memory some total=
    progress: int = 0  #: the orchestrator's progress counter (stdout chunks read + instances finished)


@attrs.frozen
class Window:
    """What happened between two samples, as shares of the window (0..1) and a rate."""

    seconds: float
    cpu_stall: Optional[float]
    idle: Optional[float]
    mem_stall: Optional[float]
    rate: float  #: progress per second

    @classmethod
    def between(cls, a: Sample, b: Sample) -> Optional[Window]:
        dt = b.t - a.t
        if dt <= 0:
            return None
        cpu_stall = idle = mem_stall = None
        if a.cpu_stall_us is not None and b.cpu_stall_us is not None:
            cpu_stall = _share((b.cpu_stall_us - a.cpu_stall_us) / (dt * 1e6))
        if a.mem_stall_us is not None and b.mem_stall_us is not None:
            mem_stall = _share((b.mem_stall_us - a.mem_stall_us) / (dt * 1e6))
        if None not in (a.idle_ticks, b.idle_ticks, a.total_ticks, b.total_ticks):
            ticks = b.total_ticks - a.total_ticks  # type: ignore[operator]
            if ticks > 0:
                idle = _share((b.idle_ticks - a.idle_ticks) / ticks)  # type: ignore[operator]
        return cls(dt, cpu_stall, idle, mem_stall, max(0, b.progress - a.progress) / dt)


def _share(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


class Controller:
    """The width controller (see the module docstring). Pure: feed it windows with :meth:`step`."""

    def __init__(self, cap: int, start: int, peak_rss: int = PEAK_RSS["generic"], cpus: Optional[int] = None) -> None:
        self.cap = max(1, cap)
        self.peak_rss = peak_rss
        self.cpus = max(1, cpus or start)  #: CPUs of the machine (the idle share is of all of them)
        self._width = float(min(self.cap, max(1, start)))
        self._before = 0.0  # width before the last widening
        self._rate_before: Optional[float] = None  # throughput measured at that width
        self._min_stall: Optional[float] = None
        self._memory_ok = True
        self.last_rule = "start"  #: which rule decided the last step (for tests and the bench)

    @property
    def width(self) -> int:
        return int(self._width)

    def memory_ok(self) -> bool:
        return self._memory_ok

    def step(self, window: Window, sample: Sample, running: int, limited: bool, starting: int = 0) -> int:
        """One window ending at ``sample``: ``running`` instances at its end, ``starting`` of them not printed yet;
        ``limited``: some start was held back by the width during it. Returns the new width."""
        self._memory_ok = self._memory_fine(window, sample)
        if window.cpu_stall is not None:
            self._min_stall = window.cpu_stall if self._min_stall is None else min(self._min_stall, window.cpu_stall)
        room = self._room(window, starting)
        if not self._memory_ok:
            self._narrow(self._width * SHRINK, "memory")
        elif not limited:
            self.last_rule = "hold: width not the limit"
        elif room is not None and room >= IDLE_ROOM:
            self._widen(window, 2.0 if room >= 0.5 else GROW, "room")
        elif self._rate_before is not None and window.cpu_stall is not None and self._min_stall is not None \
                and window.cpu_stall >= self._min_stall + STALL_RISE and window.rate < FELL * self._rate_before:
            self._narrow(min(self._before, self._width * SHRINK) if self._before else self._width * SHRINK,
                         "pressure rose")
        elif window.rate * window.seconds >= MIN_EVENTS and (
                self._rate_before is None or window.rate >= ROSE * self._rate_before):
            before = self._rate_before
            scaling = bool(before and self._before) and window.rate >= (before or 0.0) * (
                1 + SCALING * (self._width / (self._before or 1.0) - 1))
            self._widen(window, 2.0 if scaling else GROW, "throughput scaled" if scaling else "throughput rose")
        else:
            self.last_rule = "hold"
        return self.width

    def _room(self, window: Window, starting: int) -> Optional[float]:
        """The share of the machine still free once every instance that has not printed yet is counted as using a
        whole CPU (its start-up has not shown in the idle time yet: Claude Code needs about 1 s of CPU before its
        first line); None where neither idle time nor CPU stall is reported. Without an idle figure, a CPU stall
        under :data:`LOW_STALL` of the window with nothing starting counts as all the room there is to find."""
        if window.idle is not None:
            return window.idle - starting / self.cpus
        if window.cpu_stall is not None and window.cpu_stall < LOW_STALL and not starting:
            return IDLE_ROOM
        return None

    def _memory_fine(self, window: Window, sample: Sample) -> bool:
        if window.mem_stall is not None and window.mem_stall >= MEM_STALL:
            return False
        if sample.mem_available is None or sample.mem_total is None:
            return True
        return sample.mem_available - self.peak_rss >= reserve_bytes(sample.mem_total)

    def _widen(self, window: Window, factor: float, rule: str) -> None:
        new = min(float(self.cap), max(self._width + 1, self._width * factor))
        if int(new) > self.width:
            self._before, self._rate_before = self._width, window.rate
        self._width = new
        self.last_rule = rule

    def _narrow(self, to: float, rule: str) -> None:
        self._width = max(1.0, min(to, self._width - 1))
        self._before, self._rate_before = 0.0, None  # start climbing afresh from here
        self.last_rule = rule


class ProcSampler:
    """Reads :class:`Sample` from ``/proc`` (``root`` injectable for tests)."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root

    def _read(self, name: str) -> Optional[bytes]:
        try:
            with open(os.path.join(self.root, name), "rb") as f:
                return f.read(8192)
        except OSError:
            return None

    def usable(self) -> bool:
        """True when CPU pressure and /proc/stat can be read (else the busy rule of headroom.py applies)."""
        s = self.sample(0.0, 0)
        return s.cpu_stall_us is not None and s.total_ticks is not None

    def sample(self, now: float, progress: int) -> Sample:
        cpu_stall = _psi_some(self._read("pressure/cpu"))
        mem_stall = _psi_some(self._read("pressure/memory"))
        idle = total = runnable = None
        stat = self._read("stat")
        if stat is not None:
            for line in stat.split(b"\n"):
                if line.startswith(b"cpu "):
                    try:
                        fields = [int(x) for x in line.split()[1:9]]
                    except ValueError:
                        continue
                    if len(fields) >= 5:
                        idle, total = fields[3] + fields[4], sum(fields)
                elif line.startswith(b"procs_running "):
                    try:
                        runnable = int(line.split()[1])
                    except (ValueError, IndexError):
                        pass
        available = mem_total = None
        meminfo = self._read("meminfo")
        if meminfo is not None:
            for line in meminfo.split(b"\n"):
                key, _, rest = line.partition(b":")
                try:
                    if key == b"MemAvailable":
                        available = int(rest.split()[0]) * 1024
                    elif key == b"MemTotal":
                        mem_total = int(rest.split()[0]) * 1024
                except (ValueError, IndexError):
                    pass
        return Sample(now, cpu_stall, idle, total, runnable, available, mem_total, mem_stall, progress)


def _psi_some(data: Optional[bytes]) -> Optional[int]:
    """The ``some ... total=N`` microseconds of a PSI file, or None."""
    if data is None:
        return None
    for line in data.split(b"\n"):
        if line.startswith(b"some "):
            for field in line.split():
                if field.startswith(b"total="):
                    try:
                        return int(field[6:])
                    except ValueError:
                        return None
    return None


class PressureAdmission:
    """The scheduler's admission by measured pressure (see the module docstring)."""

    def __init__(self, cap: int, sampler: Optional[Callable[[float, int], Sample]] = None,
                 cpus: Optional[int] = None, peak_rss: int = PEAK_RSS["generic"], busy: Any = "default") -> None:
        from orchestrator_pex.headroom import Headroom

        self.sampler = sampler or ProcSampler().sample
        cpus = cpus or cpu_count()
        self.controller = Controller(cap, cpus, peak_rss, cpus)
        #: the busy rule (headroom.py), a floor under the width: None for none (tests)
        self.busy = Headroom(cpus) if busy == "default" else busy
        self._last: Optional[Sample] = None
        self._limited = False
        #: ``$ORCHESTRATOR_PEX_PRESSURE_TRACE``: a file to append one JSON line per controller step to (diagnosis)
        self.trace_path = os.environ.get(TRACE_ENV) or None

    def allows(self, now: float, running: Iterable[Tuple[Optional[int], bool]], kind: str, progress: int = 0) -> bool:
        running_now: Any = list(running)  # (pid or None, has output): the busy rule reads them too
        count = len(running_now)
        if self._last is None or now - self._last.t >= WINDOW:
            sample = self.sampler(now, progress)
            if self._last is not None:
                window = Window.between(self._last, sample)
                if window is not None:
                    starting = sum(1 for _, has_output in running_now if not has_output)
                    self.controller.step(window, sample, count, self._limited, starting)
                    if self.trace_path:
                        self._trace(window, sample, count, starting)
            self._last = sample
            self._limited = False
        if not count:
            return True
        if not self.controller.memory_ok():
            return False
        if count >= self.controller.width:
            self._limited = True
            # The busy rule is a floor: instances that are silent and idle (an agent waiting on its API) use no CPU
            # and print nothing, so on a machine other work saturates neither room nor throughput would widen.
            return self.busy is not None and bool(self.busy.allows(now, running_now, kind))
        return True


    def _trace(self, window: Window, sample: Sample, running: int, starting: int) -> None:
        """Append this step to the trace file: strict JSON, one object per line; a file that cannot be written
        turns tracing off (it never stops a run)."""
        from orchestrator_pex import strictjson

        line = strictjson.dumps({
            "t": round(sample.t, 3), "width": self.controller.width, "rule": self.controller.last_rule,
            "running": running, "starting": starting, "limited": self._limited, "cpu_stall": window.cpu_stall,
            "idle": window.idle, "mem_stall": window.mem_stall, "rate": round(window.rate, 3),
            "progress": sample.progress,
        }, separators=(",", ":"))
        try:
            with open(self.trace_path or "", "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError:
            self.trace_path = None


#: ``$ORCHESTRATOR_PEX_PRESSURE_TRACE=FILE``: append one JSON line per controller step (time on trio's clock, the
#: width and the rule that set it, instances running, whether the width held a start back, the window's CPU stall,
#: idle and memory stall shares, the progress rate and counter) -- to see the width a batch got and why.
TRACE_ENV = "ORCHESTRATOR_PEX_PRESSURE_TRACE"

#: ``$ORCHESTRATOR_PEX_ADMISSION=busy`` keeps the per-instance busy rule even where pressure can be read (benchmarks
#: compare the two side by side); any other value, or none, means: pressure where available.
ADMISSION_ENV = "ORCHESTRATOR_PEX_ADMISSION"


def admission(cap: int, kinds: Iterable[str] = ("generic",)):
    """The admission the scheduler uses: :class:`PressureAdmission` where ``/proc`` reports CPU pressure, else
    :class:`~orchestrator_pex.headroom.Headroom` (the busy rule). ``kinds``: the plan's instance kinds (the largest
    estimated peak memory among them is kept free)."""
    from orchestrator_pex.headroom import Headroom

    if os.environ.get(ADMISSION_ENV) == "busy" or not ProcSampler().usable():
        return Headroom()
    peak = max((PEAK_RSS.get(k, PEAK_RSS["generic"]) for k in kinds), default=PEAK_RSS["generic"])
    return PressureAdmission(cap, peak_rss=peak)
