"""The record spill (orchestrator_pex.spill): every record comes back byte for byte, from the buffer, the file, or
memory when the file cannot be written; nothing is left on disk."""

from __future__ import annotations

import os

from orchestrator_pex import spill


def test_records_come_back_from_buffer_and_file(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "BUFFER", 64)
    s = spill.Spill(str(tmp_path))
    data = [f'{{"name":"i{i}","x":"{"y" * (i % 50)}"}}'.encode() for i in range(500)]
    keys = [s.put(d) for d in data]
    assert keys == list(range(500))
    assert len(s) == 500
    assert [s.get(k) for k in reversed(keys)] == list(reversed(data))
    assert s._written > 0 and not s._kept  # most went to the file
    assert os.listdir(tmp_path) == []  # the file has no name
    s.close()


def test_a_failing_file_keeps_records_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "BUFFER", 100)
    s = spill.Spill(str(tmp_path))
    first = [s.put(b"a" * 60) for _ in range(4)]  # written
    calls = []

    def broken(fd, data, offset):
        calls.append(offset)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spill.os, "pwrite", broken)
    later = [s.put(bytes([65 + i]) * 70) for i in range(5)]
    assert calls  # a write was tried and failed
    assert [s.get(k) for k in first] == [b"a" * 60] * 4
    assert [s.get(k) for k in later] == [bytes([65 + i]) * 70 for i in range(5)]
    s.close()


def test_a_directory_that_cannot_hold_the_file_keeps_records_in_memory(tmp_path):
    s = spill.Spill(str(tmp_path / "missing"))
    keys = [s.put(b"x" * (spill.BUFFER // 2 + 1)) for _ in range(3)]
    assert s._failed
    assert all(s.get(k) == b"x" * (spill.BUFFER // 2 + 1) for k in keys)
