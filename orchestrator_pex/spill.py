"""Spill: finished instances' records kept on disk, not in memory, until the run writes ``results.json``.

A run of 100,000 instances must not hold 100,000 records (issue 14, P6). The scheduler hands each finished
record, as compact JSON bytes, to :meth:`Spill.put` and keeps only the small integer it returns; :meth:`Spill.get`
gives the bytes back (the results writer, dependencies' placeholders, the live views).

Guarantees:

* **Nothing is lost.** The bytes go to an anonymous temporary file (``tempfile.TemporaryFile``: unlinked at once,
  gone when the process ends, mode 0600, in the run directory — or the system's temporary directory when the
  scheduler has none). If the file cannot be created or written (disk full, read-only), that record
  and every later one are kept in memory instead: memory grows again, records do not go missing. The journal
  (fsync'd) stays the durable copy; the spill is only the run's working memory.
* **Bounded memory.** Per record: two 8-byte integers (offset and length, in ``array`` arrays) while on disk.
  Writes are buffered (:data:`BUFFER` bytes), so a record costs no system call of its own; reads of buffered
  records are served from the buffer.
* **Secrets.** The records are already scrubbed (the scheduler's redactor runs before :meth:`put`), and the file has
  no name, so nothing outlives the run.
"""

from __future__ import annotations

import array
import os
import tempfile
from typing import List, Optional

BUFFER = 1 << 20  #: bytes of records gathered before one write


class Spill:
    """Records as bytes, by the key :meth:`put` returned. Not thread-safe (the scheduler's trio thread only)."""

    def __init__(self, directory: Optional[str] = None) -> None:
        self._directory = directory
        self._file: Optional[int] = None  # the temporary file's descriptor, once opened
        self._failed = False
        self._offsets = array.array("q")  # per key: offset in the file, or -1 - index into _kept
        self._lengths = array.array("q")
        self._written = 0  # bytes in the file
        self._pending: List[bytes] = []  # not written yet: the file's bytes from offset _written on
        self._pending_size = 0
        self._kept: List[bytes] = []  # records that could not be written (see the module doc)

    def put(self, data: bytes) -> int:
        """Keep ``data``; returns its key."""
        key = len(self._offsets)
        self._lengths.append(len(data))
        if self._failed:
            self._offsets.append(-1 - len(self._kept))
            self._kept.append(data)
        else:
            self._offsets.append(self._written + self._pending_size)
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size >= BUFFER:
                self._flush()
        return key

    def get(self, key: int) -> bytes:
        """The bytes kept under ``key``."""
        if self._offsets[key] >= self._written:  # still in the buffer: write it out first
            self._flush()
        offset, length = self._offsets[key], self._lengths[key]
        if offset < 0:
            return self._kept[-1 - offset]
        assert self._file is not None
        data = os.pread(self._file, length, offset)
        while len(data) < length:  # a short read (never on a regular file, but cheap to handle)
            more = os.pread(self._file, length - len(data), offset + len(data))
            if not more:
                raise OSError(f"spill file truncated at {offset + len(data)}")
            data += more
        return data

    def __len__(self) -> int:
        return len(self._offsets)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        base = self._written
        try:
            if self._file is None:
                tmp = tempfile.TemporaryFile(prefix=".records.", dir=self._directory)
                self._file = os.dup(tmp.fileno())
                tmp.close()
            view = memoryview(data)
            while view:
                done = os.pwrite(self._file, view, self._written)
                view = view[done:]
                self._written += done
        except OSError:
            self._fail(data, base)
            return
        self._pending, self._pending_size = [], 0

    def _fail(self, data: bytes, base: int) -> None:
        """Writing ``data`` at ``base`` failed: it, and every later record, is kept in memory instead."""
        self._failed = True
        self._written = base
        for key in range(len(self._offsets) - len(self._pending), len(self._offsets)):
            start = self._offsets[key] - base
            self._offsets[key] = -1 - len(self._kept)
            self._kept.append(data[start:start + self._lengths[key]])
        self._pending, self._pending_size = [], 0

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Drop the file (and the records in it): nothing can be read after this."""
        if self._file is not None:
            try:
                os.close(self._file)
            finally:
                self._file = None

