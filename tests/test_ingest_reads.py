"""The stdout read path: an instance's pipe is grown so that one read takes up to ``runtime.CHUNK`` bytes."""

from __future__ import annotations

import fcntl
import os
import sys

import pytest

from orchestrator_pex import runtime

F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


class _Stream:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's (elsewhere: a no-op)")
def test_stdout_pipe_is_grown_to_one_chunk():
    r, w = os.pipe()
    try:
        assert fcntl.fcntl(r, F_GETPIPE_SZ) < runtime.CHUNK  # the default (64 KiB) is smaller
        runtime._grow_pipe(_Stream(r))
        assert fcntl.fcntl(r, F_GETPIPE_SZ) >= runtime.CHUNK
    finally:
        os.close(r)
        os.close(w)


def test_growing_a_closed_or_missing_pipe_is_harmless():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    runtime._grow_pipe(_Stream(r))  # EBADF: refused quietly
    runtime._grow_pipe(None)
    assert runtime.CHUNK >= 64 * 1024
