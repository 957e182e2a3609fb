"""Recovering the spend of attempts that never recorded an end, from their part of the raw stdout log."""

from __future__ import annotations

import json
import os

from orchestrator_pex import recovery


def _assistant(msg_id: str, inp: int, out: int) -> bytes:
    return json.dumps({"type": "assistant", "message": {"id": msg_id, "model": "claude-sonnet-4-5",
                       "usage": {"input_tokens": inp, "output_tokens": out}, "content": []}}).encode() + b"\n"


def _run_dir(tmp_path, data: bytes) -> str:
    (tmp_path / "logs").mkdir(mode=0o755)
    log = tmp_path / "logs" / "a.stdout"
    log.write_bytes(data)
    os.chmod(log, 0o644)
    return str(tmp_path)


def test_each_unfinished_attempt_reads_only_its_part_of_the_log(tmp_path):
    first = _assistant("m1", 100, 10) + _assistant("m2", 200, 20)
    second = _assistant("m3", 1000, 100)
    run_dir = _run_dir(tmp_path, first + second)
    starts = [{"event": "instance_started", "stdout_offset": 0}, {"event": "instance_started",
                                                                   "stdout_offset": len(first)}]
    record, problems = recovery.recover(run_dir, "a", starts, None)
    assert problems == [] and record is not None
    assert record["tokens"]["input"] == 1300 and record["tokens"]["output"] == 130 and record["attempts"] == 2
    # only the later attempt unfinished (the first one ended in a record that holds it): 1100 tokens, not 1430
    earlier = {"tokens": {"input": 300, "output": 30, "cache_read": 0, "cache_creation": 0, "total": 330},
               "cost_usd": 0.5, "attempts": 1, "tools": {}, "cost_source": "result"}
    record, _ = recovery.recover(run_dir, "a", starts[1:], earlier)
    assert record["tokens"]["total"] == 1430 and record["attempts"] == 2 and record["cost_usd"] > 0.5


def test_old_journals_without_offsets_read_the_whole_log(tmp_path):
    run_dir = _run_dir(tmp_path, _assistant("m1", 100, 10) + _assistant("m2", 200, 20))
    record, _ = recovery.recover(run_dir, "a", [{"event": "instance_started"}], None)
    assert record["tokens"]["total"] == 330


def test_over_long_and_torn_lines_are_skipped_never_raised(tmp_path):
    data = b"x" * 5000 + b"\n" + _assistant("m1", 100, 10) + b'{"type": "assistant", "mess'
    path = tmp_path / "log"
    path.write_bytes(data)
    attempt = recovery.read_attempt(str(path), 0, None, max_line=1000)
    assert attempt.acct.total_tokens == 110
    assert attempt.skipped_lines == 2  # the over-long line and the torn last one


def test_an_untrusted_log_is_not_read(tmp_path):
    run_dir = _run_dir(tmp_path, _assistant("m1", 100, 10))
    os.chmod(tmp_path / "logs" / "a.stdout", 0o666)
    record, problems = recovery.recover(run_dir, "a", [{"event": "instance_started", "stdout_offset": 0}], None)
    assert record is None and len(problems) == 1 and "writable by other users" in problems[0]
