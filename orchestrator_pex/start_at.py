"""``--start-at``: when a batch may begin. Accepts ``2am``, ``11:30pm``, ``14:30``, ``30m``/``2h``/``90s`` and ISO 8601.

A clock time means its next occurrence in local time (today if still ahead, else tomorrow). An ISO 8601 time without
an offset is local time. Bounds: a relative delay or an ISO time must lie within :data:`MAX_HORIZON` (366 days) of
now, in either direction (a time in the past means "start now"); anything else -- ``99999999999h``,
``0001-01-01T00:00:00``, a year beyond 9999 -- is refused with one line (exit 2), never a traceback.
"""

from __future__ import annotations

import datetime
import re

from orchestrator_pex.errors import UsageError, one_line

MAX_HORIZON = datetime.timedelta(days=366)  #: furthest a start time may be from now, either way

_RELATIVE = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)\s*(s|m|h)")  # always fullmatch
_CLOCK = re.compile(r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?")  # always fullmatch


def parse_start_at(text: str, now: datetime.datetime) -> datetime.datetime:
    """The moment ``text`` names, as an aware datetime; ``now`` must be aware (local time zone).

    Raises :class:`UsageError` (``--start-at: ...``) for anything :func:`start_moment` refuses.
    """
    try:
        return start_moment(text, now)
    except ValueError as exc:
        raise UsageError("--start-at", "", str(exc)) from None


def start_moment(text: str, now: datetime.datetime) -> datetime.datetime:
    """Like :func:`parse_start_at` but raising ``ValueError`` with the reason (for messages naming a batch key)."""
    shown = one_line(repr(text[:80]))
    if one_line(text) != text:  # a control character (a trailing newline included) is never part of a time
        raise ValueError(f"control characters are not allowed, got {shown}")
    value = text.strip().lower()
    m = _RELATIVE.fullmatch(value)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
        if seconds > MAX_HORIZON.total_seconds():
            raise ValueError(f"{shown} is more than {MAX_HORIZON.days} days from now")
        return now + datetime.timedelta(seconds=seconds)
    m = _CLOCK.fullmatch(value)
    if m and (m.group(2) is not None or m.group(3) is not None):
        hour, minute, half = int(m.group(1)), int(m.group(2) or 0), m.group(3)
        if half:
            if not 1 <= hour <= 12:
                raise ValueError(f"bad hour in {shown}")
            hour = hour % 12 + (12 if half == "pm" else 0)
        if hour > 23 or minute > 59:
            raise ValueError(f"bad clock time {shown}")
        at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return at if at > now else at + datetime.timedelta(days=1)
    try:
        at = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        at = at if at.tzinfo else at.astimezone()
        off = abs(at - now)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"expected 2am, 14:30, 30m or an ISO 8601 time, got {shown}") from None
    if off > MAX_HORIZON:
        raise ValueError(f"{shown} is more than {MAX_HORIZON.days} days from now")
    return at
