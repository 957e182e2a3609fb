"""Internal errors: what the orchestrator keeps when its own code fails (a bug, not bad input or a dying agent).

The error boundaries (one per instance in :mod:`orchestrator_pex.scheduler`, one for the run in
:mod:`orchestrator_pex.runner`, one for the process in :mod:`orchestrator_pex.cli`) turn an unexpected exception
into a record, a saved traceback and one line for the user. Guarantees of this module:

* :func:`save` writes the full traceback to ``<run_dir>/internal-errors/<label>.txt`` (``label`` is an instance's
  log stem — :func:`orchestrator_pex.results.log_stem`, which never starts with ``_`` — or ``_run`` for the run
  itself). The file is created with mode 0600
  and without following a symlink planted at its name; secret values are masked when a ``scrub`` function is given.
  It never raises: if the file cannot be written it returns ``None`` (the caller still reports the error).
* :func:`save_anywhere` is the same for a failure outside any run directory: a fresh ``mkstemp`` file (0600, unique
  name) in the temporary directory.
* :func:`summary` is the one-line description (``ExceptionType: message``), at most :data:`MAX_SUMMARY`
  characters, control characters replaced by ``?``; for an exception group, its first leaf exception.
* :data:`PREFIX` (``"internal error:"``) starts every ``error`` a boundary writes into a record; ``resume`` reruns
  such instances by default (:func:`is_internal`).
"""

from __future__ import annotations

import os
import tempfile
import traceback
from typing import Callable, Optional

PREFIX = "internal error:"
DIRNAME = "internal-errors"
RUN_LABEL = "_run"  #: the run's own traceback file: ``internal-errors/_run.txt``
MAX_SUMMARY = 300


def leaf(exc: BaseException) -> BaseException:
    """The first non-group exception inside ``exc`` (nested exception groups from trio nurseries)."""
    while getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]  # type: ignore[attr-defined]  # an ExceptionGroup (checked by getattr above)
    return exc


def summary(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` (its first leaf), one line, bounded."""
    inner = leaf(exc)
    text = f"{type(inner).__name__}: {inner}" if str(inner) else type(inner).__name__
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def format_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # noqa: BLE001 - formatting must not become a second failure
        return f"{summary(exc)}\n(traceback could not be formatted)\n"


def is_internal(record: object) -> bool:
    """Whether a results record was written by an error boundary (its ``error`` starts with :data:`PREFIX`)."""
    error = record.get("error") if isinstance(record, dict) else None
    return isinstance(error, str) and error.startswith(PREFIX)


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(text)


def save(run_dir: str, label: str, exc: BaseException, scrub: Optional[Callable[[str], str]] = None) -> Optional[str]:
    """Write ``exc``'s traceback to ``<run_dir>/internal-errors/<label>.txt``; its path, or None if it cannot."""
    text = format_traceback(exc)
    try:
        if scrub is not None:
            text = scrub(text)
        directory = os.path.join(run_dir, DIRNAME)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, f"{label}.txt")
        _write_private(path, text)
        return path
    except Exception:  # noqa: BLE001 - disk full, permissions, a bad scrubber: the caller reports without a file
        return None


def save_anywhere(exc: BaseException) -> Optional[str]:
    """Write ``exc``'s traceback to a new private file in the temporary directory; its path, or None."""
    try:
        fd, path = tempfile.mkstemp(prefix="orchestrator-pex-internal-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(format_traceback(exc))
        return path
    except Exception:  # noqa: BLE001 - last resort: saving the traceback must never raise
        return None
