"""Headroom: the busy rule — may one more instance start now? Bounded by the concurrency cap.

Used where the machine does not report CPU pressure (macOS; Linux without ``/proc/pressure/cpu``) or with
``$ORCHESTRATOR_PEX_ADMISSION=busy``; elsewhere :mod:`orchestrator_pex.pressure` decides.

Policy (Linux): start the next instance while fewer instances are *busy* than there are CPUs and memory stays
above a safety margin. An instance is busy while it is starting (no output yet) or while it used at least a
quarter of a CPU over the last sample. Instances waiting on the API are not busy, so with a slow API the batch
widens up to the cap; with a fast API (start-up CPU dominates) it stays near the number of CPUs.
Memory: never start one when ``MemAvailable`` minus the estimated peak of one instance would fall under the
reserve (``max(512 MiB, 5 % of RAM)``). Elsewhere (macOS: no ``/proc``), only the not-yet-started rule and the cap
apply; the memory check is skipped.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Tuple

from orchestrator_pex import procfs

BUSY_CPU = 0.25  # fraction of one CPU that makes a running instance count as busy
SAMPLE_EVERY = 0.1  # seconds between CPU samples
PEAK_RSS = {"claude": 256 << 20, "codex": 128 << 20, "gemini": 256 << 20,  # estimated peak memory of one instance
            "generic": 64 << 20}
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def mem_available() -> Optional[Tuple[int, int]]:
    """(MemAvailable, MemTotal) in bytes from /proc/meminfo, or None where there is none."""
    try:
        with open("/proc/meminfo", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    values = {}
    for line in data.split(b"\n"):
        key, _, rest = line.partition(b":")
        if key in (b"MemAvailable", b"MemTotal"):
            values[key] = int(rest.split()[0]) * 1024
    if len(values) < 2:
        return None
    return values[b"MemAvailable"], values[b"MemTotal"]


def _cpu_ticks(pid: int) -> Optional[int]:
    found = procfs.stat(pid)
    return None if found is None else found.cpu_ticks


class Headroom:
    """Samples running instances and answers :meth:`allows`. Cheap: at most one /proc read per pid per sample, and
    none while the instances still starting (no output yet: busy without measuring) already number the CPUs."""

    def __init__(self, cpus: Optional[int] = None) -> None:
        self.cpus = cpus or cpu_count()
        self._last: Dict[int, Tuple[float, int]] = {}  # pid -> (time, ticks) of the previous sample
        self._busy: Dict[int, bool] = {}
        self._sampled_at = -1e9
        self._proc = os.path.isdir("/proc/self")

    def busy_count(self, now: float, running: Iterable[Tuple[Optional[int], bool]],
                   enough: Optional[int] = None) -> int:
        """``running``: (pid, has_output) of each running attempt; pid None for one not spawned yet.

        ``enough``: when at least that many are still starting (busy without measuring), return that count at once,
        reading no ``/proc`` file (the caller only asks whether the count reaches ``enough``)."""
        running = list(running)
        if enough is not None:
            starting = sum(1 for pid, has_output in running if pid is None or not has_output)
            if starting >= enough:
                return starting
        resample = now - self._sampled_at >= SAMPLE_EVERY
        if resample:
            self._sampled_at = now
        busy = 0
        seen = {}
        for pid, has_output in running:
            if not has_output or pid is None:
                busy += 1
                continue
            if not self._proc:
                continue
            if resample:
                ticks = _cpu_ticks(pid)
                prev = self._last.get(pid)
                if ticks is not None:
                    self._last[pid] = (now, ticks)
                    if prev is not None and now > prev[0]:
                        self._busy[pid] = (ticks - prev[1]) / _TICKS / (now - prev[0]) >= BUSY_CPU
                    else:
                        self._busy[pid] = True  # first sample after output: assume busy until measured
            seen[pid] = True
            busy += self._busy.get(pid, True)
        if resample:
            for pid in list(self._last):
                if pid not in seen:
                    del self._last[pid]
                    self._busy.pop(pid, None)
        return busy

    def allows(self, now: float, running: Iterable[Tuple[Optional[int], bool]], kind: str, progress: int = 0) -> bool:
        """May one more instance of ``kind`` start? (``progress`` is for :mod:`orchestrator_pex.pressure`.)"""
        running = list(running)
        if not running:
            return True
        if self.busy_count(now, running, enough=self.cpus) >= self.cpus:
            return False
        mem = mem_available()
        if mem is not None:
            available, total = mem
            reserve = max(512 << 20, total // 20)
            if available - PEAK_RSS.get(kind, PEAK_RSS["generic"]) < reserve:
                return False
        return True
