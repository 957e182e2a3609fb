"""The one reader of Linux's ``/proc`` for processes: a pid's stat line, its children, and whether it is gone.

Guarantees:

* :func:`stat` parses ``/proc/PID/stat`` after the *last* ``)`` (a command name may hold spaces and parentheses),
  and returns None, never raises, when the file cannot be read or parsed (no ``/proc``: macOS; the process gone).
* :func:`gone_or_zombie` is the one definition of a process that no longer runs: its state is ``Z`` (zombie) or
  ``X`` (dead), or, without ``/proc``, ``kill(pid, 0)`` finds no such process. A process of another user
  (``EPERM``) is alive.
* :func:`children` lists the direct children of this process from ``/proc/self/task/*/children`` (empty without).

The guardian's own program (``guardian.GUARDIAN_SOURCE``) runs with ``python -I -S`` and cannot import this
module; its ``alive`` repeats the same definition in a few lines.
"""

from __future__ import annotations

import os
from typing import List, Optional

import attrs

#: process states of a process that no longer runs (zombie, dead)
ENDED_STATES = frozenset({"Z", "X"})


@attrs.frozen
class ProcStat:
    """The fields of ``/proc/PID/stat`` the orchestrator uses."""

    state: str  #: one letter: R, S, D, Z, X, T, ...
    pgid: int
    utime: int  #: clock ticks in user mode
    stime: int  #: clock ticks in kernel mode

    @property
    def cpu_ticks(self) -> int:
        return self.utime + self.stime


def stat(pid: int) -> Optional[ProcStat]:
    """``pid``'s stat line, or None where it cannot be read or parsed."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return ProcStat(state=fields[0].decode("ascii", "replace"), pgid=int(fields[2]),
                        utime=int(fields[11]), stime=int(fields[12]))
    except (OSError, IndexError, ValueError):
        return None


def gone_or_zombie(pid: int) -> bool:
    """Has ``pid`` stopped running (zombie, dead, or no such process)? See the module docstring."""
    found = stat(pid)
    if found is not None:
        return found.state in ENDED_STATES
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    except (OSError, OverflowError, ValueError):
        return True
    return False


def children() -> List[int]:
    """The pids of this process's direct children (all threads'), or ``[]`` where ``/proc`` does not list them."""
    pids: List[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                pids.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return pids
