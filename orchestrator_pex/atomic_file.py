"""Replacing a file atomically and durably: the one implementation behind results.json, merged documents, the HTML
report and the metrics file.

Guarantees of :func:`replace`: the new content is written to a temporary file created (mode 0600, or ``mode``) in
the target's own folder, flushed and ``fsync``-ed, then renamed over the target, and the folder is ``fsync``-ed
(where the file system allows it). A reader sees the old file or the new one, never a torn one. On any failure
(``OSError`` from the file system, or whatever ``write`` raises) the temporary file is removed, the old file is
untouched and the exception propagates: callers turn it into their one-line error.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, Callable, Optional


def replace(path: str, write: Callable[[IO[str]], object], prefix: str = ".tmp.", mode: Optional[int] = None) -> None:
    """Replace ``path`` with what ``write`` writes (UTF-8 text) to a temporary file beside it; see the module doc."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the file's own fsync still holds
    finally:
        os.close(dfd)


def write_text(path: str, text: str, prefix: str = ".tmp.", mode: Optional[int] = None) -> None:
    """:func:`replace` with ``text``."""
    replace(path, lambda f: f.write(text), prefix=prefix, mode=mode)
