"""Untrusted values: what an agent prints is data, and every value taken from it is checked here first.

Every number or string that an agent's output contributes to a record, a ledger or a document passes through one of
these functions before it is stored. Semantics:

* :func:`count` accepts an ``int`` (not ``bool``) with ``0 <= value <= MAX_COUNT``; anything else (negative, float,
  NaN, Infinity, string, huge) is ``None``: the caller treats the value as absent and never as zero spend that could
  lower a total.
* :func:`dollars` accepts a finite ``int``/``float`` (not ``bool``) with ``0 <= value <= MAX_DOLLARS``, as ``float``;
  anything else is ``None``.
* :func:`number` accepts an ``int``/``float`` (not ``bool``) with ``-MAX_NUMBER <= value <= MAX_NUMBER`` (so not NaN
  or Infinity) unchanged; anything else is ``None``. It is for numbers of documents read back (``merge`` inputs):
  their sums stay finite.
* :func:`text` accepts a ``str`` and returns at most ``limit`` characters of it (longer text is cut and ends in
  ``"…"``); anything else is ``None``.
* :func:`name` is :func:`text` for identifiers that become dictionary keys or labels (tool and model names): at most
  :data:`MAX_NAME` characters, control characters replaced by ``"?"``.

The bounds are far above anything a real agent reports (a trillion tokens in one field, a million dollars in one
event) and low enough that sums of them stay exact in a float and finite in JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Optional

MAX_COUNT = 10**12  #: largest token count accepted from one field of one event
MAX_DOLLARS = 1e6  #: largest cost in dollars accepted from one event
MAX_NAME = 200  #: tool and model names are cut to this many characters
MAX_TEXT = 64 * 1024  #: default cap for free text kept in a record (final result, error)
MAX_NUMBER = 1e15  #: largest magnitude of a number read back from a document and summed

# The C scanner json.loads itself uses (same strictness, same objects), called without json.loads' Python wrapper.
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def json_object(line: bytes) -> Optional[Dict[str, Any]]:
    """One line of an agent's output parsed as a JSON object, or ``None`` when it is not one: not JSON, not UTF-8,
    nested too deeply for the parser, or JSON but not an object. Never raises for any of those.

    Exactly :func:`json.loads`: a line that starts with ``{`` and whose second byte is not NUL (UTF-8 by
    :func:`json.detect_encoding`) is decoded as ``json.loads`` decodes it and given straight to the same C scanner
    ``json.loads`` uses, without its per-call Python wrapper; whatever that does not accept whole is decided by
    ``json.loads`` itself."""
    if line[:1] == b"{" and line[1:2] != b"\x00":
        text = ""
        try:
            text = line.decode("utf-8", "surrogatepass")
            event, end = _scan(text, 0)
        except (ValueError, StopIteration, RecursionError):
            end = -1
        if end == len(text):  # the whole line is this one object (anything else: json.loads decides)
            return event if isinstance(event, dict) else None
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


def count(value: Any) -> Optional[int]:
    """``value`` if it is a plausible token count, else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def dollars(value: Any) -> Optional[float]:
    """``value`` as a float if it is a plausible, finite, non-negative amount of money, else ``None``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            return None
        if math.isfinite(number) and 0.0 <= number <= MAX_DOLLARS:
            return number
    return None


def number(value: Any) -> Optional[float]:
    """``value`` unchanged if it is a finite number of sane size (see :data:`MAX_NUMBER`), else ``None``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and -MAX_NUMBER <= value <= MAX_NUMBER:
        return value
    return None


def text(value: Any, limit: int = MAX_TEXT) -> Optional[str]:
    """``value`` cut to ``limit`` characters if it is a string, else ``None``."""
    if not isinstance(value, str):
        return None
    return value if len(value) <= limit else value[: max(0, limit - 1)] + "…"


def name(value: Any) -> Optional[str]:
    """A tool or model name fit to be a key or a label: cut to :data:`MAX_NAME`, control characters replaced."""
    cut = text(value, MAX_NAME)
    if cut is None:
        return None
    if cut.isprintable():  # the usual case, checked in one call
        return cut
    return "".join(c if c.isprintable() else "?" for c in cut)
