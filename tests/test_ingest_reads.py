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


def _collect(stream) -> list:
    import trio

    async def main() -> list:
        return [chunk async for chunk in runtime._chunks(stream)]

    return trio.run(main)


def test_every_byte_read_in_chunks_of_at_most_chunk(tmp_path):
    """A fast writer: everything it printed (several full chunks and a tail) is read, in order, each read at most
    CHUNK bytes, until EOF."""
    import trio

    data = os.urandom(3 * runtime.CHUNK + 5)

    async def main() -> list:
        r, w = os.pipe()
        stream = trio.lowlevel.FdStream(r)
        chunks = []

        async def writer() -> None:
            with os.fdopen(w, "wb", buffering=0) as f:
                await trio.to_thread.run_sync(f.write, data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            async for chunk in runtime._chunks(stream):
                chunks.append(chunk)
        await stream.aclose()
        return chunks

    chunks = trio.run(main)
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= runtime.CHUNK for c in chunks)


def test_slow_stream_costs_one_read_per_chunk(monkeypatch):
    """A stream that prints now and then: each chunk is one successful read after one wait (no read that finds the
    pipe empty), plus the read that sees EOF."""
    import trio

    reads = []
    real_read, real_readv = os.read, os.readv

    def counting_read(fd: int, n: int) -> bytes:
        try:
            data = real_read(fd, n)
        except BlockingIOError:
            reads.append(None)
            raise
        reads.append(len(data))
        return data

    def counting_readv(fd: int, buffers) -> int:
        try:
            n = real_readv(fd, buffers)
        except BlockingIOError:
            reads.append(None)
            raise
        reads.append(n)
        return n

    lines = [b'{"type":"system","subtype":"init"}\n', b'{"type":"assistant"}\n', b'{"type":"result"}\n']

    async def main() -> list:
        r, w = os.pipe()
        stream = trio.lowlevel.FdStream(r)
        out = trio.lowlevel.FdStream(w)
        chunks = []

        async def writer() -> None:
            for line in lines:
                await out.send_all(line)
                await trio.sleep(0.02)
            await out.aclose()

        monkeypatch.setattr(os, "read", counting_read)
        monkeypatch.setattr(os, "readv", counting_readv)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            async for chunk in runtime._chunks(stream):
                chunks.append(chunk)
        monkeypatch.undo()
        await stream.aclose()
        return chunks

    chunks = trio.run(main)
    assert b"".join(chunks) == b"".join(lines)
    assert None not in reads  # never a read of an empty pipe
    assert len(reads) == len(chunks) + 1 and reads[-1] == 0  # one read per chunk, then EOF


def test_stream_without_a_descriptor_is_read_with_receive_some():
    class Memory:
        def __init__(self, parts: list) -> None:
            self.parts = parts

        async def receive_some(self, n: int) -> bytes:
            assert n == runtime.CHUNK
            return self.parts.pop(0) if self.parts else b""

    assert _collect(Memory([b"a\n", b"b"])) == [b"a\n", b"b"]


def test_streams_sharing_the_read_buffer_keep_their_own_bytes():
    """Every stream of a run reads into one buffer: chunks are copies, so many streams read at once (and a chunk
    kept while others are read) each keep exactly their own bytes."""
    import trio

    streams = {i: [os.urandom(100 + 37 * i) + b"\n" for _ in range(20)] for i in range(8)}

    async def main() -> dict:
        got: dict = {i: [] for i in streams}

        async def one(i: int) -> None:
            r, w = os.pipe()
            reader, out = trio.lowlevel.FdStream(r), trio.lowlevel.FdStream(w)

            async def writer() -> None:
                for part in streams[i]:
                    await out.send_all(part)
                    await trio.sleep(0.001 * (i % 3))
                await out.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                async for chunk in runtime._chunks(reader):
                    got[i].append(chunk)
            await reader.aclose()

        async with trio.open_nursery() as nursery:
            for i in streams:
                nursery.start_soon(one, i)
        return got

    got = trio.run(main)
    for i, parts in streams.items():
        assert b"".join(got[i]) == b"".join(parts)
