"""The one process scanner of the test suite (Linux ``/proc``).

One definition of "alive": a process is alive while ``/proc/PID/stat`` exists and its state is neither ``Z``
(zombie: dead, waiting to be reaped by its parent) nor ``X`` (dead). Every test that asks "did anything outlive the
run?" asks it through :func:`pids_with_env` / :func:`alive`, so they cannot disagree on what a zombie is.

Tests mark the processes they start with a unique environment variable (``NAME=VALUE``), inherited by everything
those processes start; :func:`pids_with_env` finds the live ones. :func:`wait_until` polls an observable condition
instead of sleeping for a guessed time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable, List, Optional, Sequence, TypeVar

T = TypeVar("T")

DEAD_STATES = (b"Z", b"X")


def stat_fields(pid: int) -> Optional[List[bytes]]:
    """The fields of ``/proc/PID/stat`` after the command name (state first, then ppid, ...); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return fields or None


def state(pid: int) -> Optional[bytes]:
    """The one-letter process state (``R``, ``S``, ``Z``, ...), or None if the process does not exist."""
    fields = stat_fields(pid)
    return fields[0] if fields else None


def parent(pid: int) -> Optional[int]:
    fields = stat_fields(pid)
    return int(fields[1]) if fields and len(fields) > 1 else None


def alive(pid: int) -> bool:
    """The process exists and is neither a zombie nor dead."""
    s = state(pid)
    return s is not None and s not in DEAD_STATES


def is_zombie_or_gone(pid: int) -> bool:
    """True if ``pid`` does not exist or is a zombie (dead, only waiting to be reaped by its parent)."""
    return not alive(pid)


def all_pids() -> List[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def environ(pid: int) -> List[bytes]:
    """``NAME=VALUE`` entries of the process's environment (empty if unreadable or gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def cmdline(pid: int) -> bytes:
    """The command line, arguments joined by spaces (empty if unreadable or gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return b""


def pids_with_env(name: str, value: str) -> List[int]:
    """Live (not zombie, not dead) processes whose environment contains exactly ``name=value``."""
    needle = f"{name}={value}".encode()
    return [pid for pid in all_pids() if needle in environ(pid) and alive(pid)]


def wait_until(predicate: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.02,
               proc: Optional[subprocess.Popen] = None) -> T:
    """Poll ``predicate`` until it returns something true (returned); AssertionError naming ``what`` after
    ``timeout`` seconds, or as soon as ``proc`` (the process expected to bring the condition about) has exited.
    The timeout only bounds a hang: nothing asserts how long the wait took."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process {proc.pid} exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def kill_pids(pids: Sequence[int]) -> None:
    """Clean-up after a failed test: SIGKILL processes a test found still alive (by pid, one by one)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
