"""Strict JSON out: every document and journal line the orchestrator writes is RFC 8259 JSON.

``json.dumps`` writes bare ``NaN``/``Infinity`` for non-finite floats unless told not to; no parser but Python's
accepts them. :func:`dumps` and :func:`dump` always pass ``allow_nan=False`` and first make the value fit, so they
never raise for a non-finite float: where one occurs (in a value, anywhere in nested dicts, lists and tuples) it is
written as ``null``. The value is only walked when the fast first attempt finds such a float, so ordinary documents
cost one ``json.dumps``. Other encoding errors (an unsupported type without ``default``) still raise as before.
"""

from __future__ import annotations

import json
import math
from typing import IO, Any


def sanitize(value: Any) -> Any:
    """A copy of ``value`` with every non-finite float replaced by ``None`` (dicts, lists and tuples walked)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, allow_nan=False, **kwargs)``, non-finite floats written as ``null``."""
    kwargs["allow_nan"] = False
    try:
        return json.dumps(value, **kwargs)
    except ValueError:  # "Out of range float values are not JSON compliant"
        return json.dumps(sanitize(value), **kwargs)


def dump(value: Any, f: IO[str], **kwargs: Any) -> None:
    """:func:`dumps` written to ``f`` (the text is built first: nothing half-written on error)."""
    f.write(dumps(value, **kwargs))


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity`` (for checking what was written)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)
