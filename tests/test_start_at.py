"""``--start-at``: clock times (next occurrence), relative delays, ISO 8601; anything else is a usage error (exit 2)."""

from __future__ import annotations

import datetime
import json

import pytest

from orchestrator_pex.errors import UsageError
from orchestrator_pex.start_at import parse_start_at

TZ = datetime.timezone(datetime.timedelta(hours=2))
NOW = datetime.datetime(2026, 11, 24, 10, 0, 30, 123456, tzinfo=TZ)


def at(day: int, hour: int, minute: int = 0) -> datetime.datetime:
    return datetime.datetime(2026, 11, day, hour, minute, tzinfo=TZ)


@pytest.mark.parametrize("text, expected", [
    ("2am", at(25, 2)),  # already past today: tomorrow
    ("2AM", at(25, 2)),
    (" 2 am ", at(25, 2)),
    ("14:30", at(24, 14, 30)),
    ("11:30pm", at(24, 23, 30)),
    ("11:30 PM", at(24, 23, 30)),
    ("12am", at(25, 0)),
    ("12pm", at(24, 12)),
    ("12:05am", at(25, 0, 5)),
    ("9:15", at(25, 9, 15)),
    ("10:00", at(25, 10)),  # 10:00:00 is before 10:00:30: tomorrow
    ("10:01", at(24, 10, 1)),
    ("00:00", at(25, 0)),
    ("23:59", at(24, 23, 59)),
])
def test_clock_times_are_the_next_occurrence(text, expected):
    got = parse_start_at(text, NOW)
    assert got == expected
    assert got.tzinfo is not None and got > NOW


@pytest.mark.parametrize("text, delta", [
    ("30m", datetime.timedelta(minutes=30)),
    ("2h", datetime.timedelta(hours=2)),
    ("90s", datetime.timedelta(seconds=90)),
    ("1.5h", datetime.timedelta(minutes=90)),
    ("0.5m", datetime.timedelta(seconds=30)),
    ("45 M", datetime.timedelta(minutes=45)),
])
def test_relative_delays(text, delta):
    assert parse_start_at(text, NOW) == NOW + delta


def test_iso_8601_with_zone():
    got = parse_start_at("2026-11-25T08:00:00Z", NOW)
    assert got == datetime.datetime(2026, 11, 25, 8, 0, tzinfo=datetime.timezone.utc)
    got = parse_start_at("2026-11-25T08:00:00+05:30", NOW)
    assert got.utcoffset() == datetime.timedelta(hours=5, minutes=30) and got.hour == 8


def test_iso_8601_without_zone_is_local_time():
    got = parse_start_at("2026-11-25T08:00", NOW)
    assert got.tzinfo is not None
    assert got.replace(tzinfo=None) == datetime.datetime(2026, 11, 25, 8, 0)
    assert got == datetime.datetime(2026, 11, 25, 8, 0).astimezone()


@pytest.mark.parametrize("text", ["tomorrow", "", "25:00", "13pm", "0am", "10:75", "14", "-5m", "5 minutes",
                                  "2026-13-01T00:00", "2am tomorrow", "m30"])
def test_bad_input_is_a_usage_error(text):
    with pytest.raises(UsageError) as info:
        parse_start_at(text, NOW)
    assert info.value.exit_status == 2
    assert "--start-at" in str(info.value)


# -- through the command line ------------------------------------------------------------------------------------------


def test_bad_start_at_on_the_command_line(cli, write_batch, tmp_path):
    path = write_batch('[[instances]]\nname = "g"\nargv = ["/bin/true"]\n')
    proc = cli("run", str(path), "--results-dir", str(tmp_path / "runs"), "--start-at", "teatime")
    assert proc.returncode == 2
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "--start-at" in lines[0] and "'teatime'" in lines[0]
    assert not (tmp_path / "runs").exists()


def _soon(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def _started(doc: dict) -> datetime.datetime:
    return datetime.datetime.fromisoformat(doc["instances"][0]["started_at"].replace("Z", "+00:00"))


def test_start_at_delays_the_first_launch(run_batch, write_batch):
    path = write_batch('[[instances]]\nname = "g"\nargv = ["/bin/true"]\n')
    when = _soon(1.0)
    res = run_batch(path, "--start-at", when.isoformat())
    assert res.code == 0, res.stderr
    assert _started(res.doc) >= when.replace(microsecond=when.microsecond // 1000 * 1000)
    assert b"waiting until" in res.stderr


def test_start_at_from_the_batch_file(run_batch, write_batch):
    when = _soon(1.0)
    path = write_batch(f'start_at = {json.dumps(when.isoformat())}\n[[instances]]\nname = "g"\nargv = ["/bin/true"]\n')
    res = run_batch(path)
    assert res.code == 0, res.stderr
    assert _started(res.doc) >= when.replace(microsecond=when.microsecond // 1000 * 1000)
