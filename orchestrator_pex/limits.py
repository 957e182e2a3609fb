"""Bounds on every number and size a user gives: batch-file keys and command-line flags share them.

Standard library only (command modules import it while parsing arguments). Every bound is far above any real use
and low enough that what it bounds stays finite and exact (sums in a float, JSON numbers) and that nothing waits,
reads or allocates without end:

* :data:`MAX_BATCH_BYTES` -- a batch file larger than this is refused unread.
* :data:`MAX_DEPTH` -- deepest nesting of arrays/tables (TOML) or arrays/objects (JSON) in a batch file.
* :data:`MAX_SECONDS` -- longest duration (``timeout``, ``stall_timeout``, ``deadline``, ``stagger``,
  ``grace_period``, ``backoff``, ``backoff_max``; ``--stagger``, ``--deadline``): 366 days.
* :data:`MAX_DOLLARS` -- largest dollar budget (``max_cost_usd``).
* :data:`MAX_COUNT` -- largest token budget or ``max_turns``.
* :data:`MAX_CONCURRENCY` -- largest ``concurrency`` / ``--concurrency``.
* :data:`MAX_RETRIES` -- largest ``retries``.
* :data:`MAX_WAIT_SECONDS` -- longest ``--wait-lock``: a day.
* :data:`MAX_KEEP`, :data:`MAX_DAYS` -- ``runs prune --keep`` / ``--older-than``.
* :data:`MAX_SHARDS` -- largest shard count (``--shard I/N`` and the scheduler environment variables); choosing a
  shard costs time proportional to the count.

Every refused value is one line naming the flag (or file and key) and exit status 2.
"""

from __future__ import annotations

import argparse
from typing import Callable

MAX_BATCH_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32
MAX_SECONDS = 366 * 86400.0
MAX_DOLLARS = 1e9
MAX_COUNT = 10**15
MAX_CONCURRENCY = 100_000
MAX_RETRIES = 1000
MAX_WAIT_SECONDS = 86400.0
MAX_KEEP = 10**9
MAX_DAYS = 36600.0
MAX_SHARDS = 100_000


def parse_int(text: str, minimum: int, maximum: int) -> int | None:
    """``text`` as an integer in ``[minimum, maximum]``, else None (also for text too long to convert)."""
    text = text.strip()
    if len(text) > 30:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if minimum <= value <= maximum else None


def parse_float(text: str, minimum: float, maximum: float, *, open_min: bool = False) -> float | None:
    """``text`` as a finite number in ``[minimum, maximum]`` (``(minimum, maximum]`` with ``open_min``), else None.

    NaN and infinities are always refused."""
    if len(text) > 60:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    low_ok = value > minimum if open_min else value >= minimum
    return value if low_ok and value <= maximum else None


def int_argument(minimum: int, maximum: int, expected: str) -> Callable[[str], int]:
    """An argparse ``type=``: :func:`parse_int`, else ``expected <expected>, got '...'`` (exit 2, one line)."""
    def convert(text: str) -> int:
        value = parse_int(text, minimum, maximum)
        if value is None:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text[:40]!r}")
        return value

    return convert


def float_argument(minimum: float, maximum: float, expected: str, *, open_min: bool = False) -> Callable[[str], float]:
    """An argparse ``type=``: :func:`parse_float`, else ``expected <expected>, got '...'`` (exit 2, one line)."""
    def convert(text: str) -> float:
        value = parse_float(text, minimum, maximum, open_min=open_min)
        if value is None:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text[:40]!r}")
        return value

    return convert
