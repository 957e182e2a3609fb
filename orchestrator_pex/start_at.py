"""``--start-at``: when a batch may begin. Accepts ``2am``, ``11:30pm``, ``14:30``, ``30m``/``2h``/``90s`` and ISO 8601.

A clock time means its next occurrence in local time (today if still ahead, else tomorrow).
"""

from __future__ import annotations

import datetime
import re

from orchestrator_pex.errors import UsageError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h)$")
_CLOCK = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*(am|pm)?$")


def parse_start_at(text: str, now: datetime.datetime) -> datetime.datetime:
    """The moment ``text`` names, as an aware datetime; ``now`` must be aware (local time zone)."""
    value = text.strip().lower()
    m = _RELATIVE.match(value)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
        return now + datetime.timedelta(seconds=seconds)
    m = _CLOCK.match(value)
    if m and (m.group(2) is not None or m.group(3) is not None):
        hour, minute, half = int(m.group(1)), int(m.group(2) or 0), m.group(3)
        if half:
            if not 1 <= hour <= 12:
                raise UsageError(f"--start-at: bad hour in {text!r}")
            hour = hour % 12 + (12 if half == "pm" else 0)
        if hour > 23 or minute > 59:
            raise UsageError(f"--start-at: bad clock time {text!r}")
        at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return at if at > now else at + datetime.timedelta(days=1)
    try:
        at = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--start-at: expected 2am, 14:30, 30m or an ISO 8601 time, got {text!r}"
        ) from None
    return at if at.tzinfo else at.astimezone()
