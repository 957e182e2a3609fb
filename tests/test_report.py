"""Report forms on stderr: plain timestamped lines (pipes, cron), JSON lines (--json-logs), a live table (a TTY).

The TTY form is exercised for real: the orchestrator's stderr is the slave side of a pseudo-terminal.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys

import pytest

from orchestrator_pex.report import Console, fmt_duration, fmt_tokens, summary_table

ISO_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")

BATCH = """
claude = {claude}
grace_period = 0.5
[[instances]]
name = "alpha"
prompt = "p"
env = { AGENT_SIM_SCENARIO = "tool-use" }
[[instances]]
name = "broken"
prompt = "p"
env = { AGENT_SIM_SCENARIO = "crash" }
[[instances]]
name = "gen"
argv = ["/bin/true"]
"""


def test_non_tty_lines_are_timestamped_without_escape_codes(run_batch, write_batch):
    res = run_batch(write_batch(BATCH))
    assert res.code == 1
    text = res.stderr.decode()
    assert "\x1b" not in text
    assert "(None)" not in text  # an instance without accounting (generic) has no cost source to show
    lines = text.splitlines()
    table_at = next(i for i, line in enumerate(lines) if line.startswith("NAME "))
    events = lines[:table_at]
    assert events and all(ISO_PREFIX.match(line) for line in events), events
    bodies = [ISO_PREFIX.sub("", line) for line in events]
    assert bodies[0].startswith("run ") and " started: 3 instances from " in bodies[0]
    assert "alpha: started" in bodies and "broken: started" in bodies
    assert any(b.startswith("alpha: succeeded — ") and "(result)" in b for b in bodies)
    assert any(b.startswith("broken: failed — ") and "(estimate)" in b and "exit status 3" in b for b in bodies)
    assert bodies[-1].startswith("run finished: failed — 3 instances")
    table = lines[table_at:]
    assert [row.split()[0] for row in table[1:4]] == ["alpha", "broken", "gen"]
    assert table[4].startswith("TOTAL") and table[-1].startswith("results: ")


def test_json_logs_one_object_per_line(run_batch, write_batch):
    res = run_batch(write_batch(BATCH), "--json-logs")
    assert res.code == 1
    text = res.stderr.decode()
    assert "\x1b" not in text
    events = [json.loads(line) for line in text.splitlines()]
    for e in events:
        assert isinstance(e, dict) and {"ts", "event"} <= set(e)
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", e["ts"])
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    finished = {e["name"]: e["record"] for e in events if e["event"] == "instance_finished"}
    assert finished == {r["name"]: r for r in res.doc["instances"]}
    assert events[-1]["totals"] == res.doc["totals"] and events[-1]["exit_status"] == 1


def _run_on_pty(cmd, cwd, env, timeout=60.0) -> tuple:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=slave)
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError("no output from the pty")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave fd is closed
                break
            if not data:
                break
            chunks.append(data)
        out = proc.stdout.read()
        proc.wait(timeout=timeout)
    finally:
        os.close(master)
        proc.stdout.close()
    return proc.returncode, out, b"".join(chunks)


def test_tty_draws_a_table_with_escape_codes(tmp_path, write_batch, make_cli_env):
    path = write_batch(BATCH)
    env = make_cli_env({"TERM": "xterm-256color"})
    code, out, tty = _run_on_pty(
        [sys.executable, "-m", "orchestrator_pex", "run", str(path), "--json", "--results-dir", str(tmp_path / "r")],
        tmp_path, env)
    assert code == 1
    text = tty.decode("utf-8", "replace")
    assert "\x1b[" in text
    assert re.search(r"NAME\s+STATE\s+TIME\s+TOKENS\s+COST\s+MODEL\s+CACHE\s+TOOLS\s+ATT", text)
    assert re.search(r"\[[#.]+\] \d/3 done · ", text)  # the header: progress bar, done/total
    assert json.loads(out)["status"] == "failed"  # stdout stays the clean document
    assert b"\x1b" not in out


def test_tty_with_dumb_terminal_falls_back_to_lines(tmp_path, write_batch, make_cli_env):
    path = write_batch(BATCH)
    code, _, tty = _run_on_pty(
        [sys.executable, "-m", "orchestrator_pex", "run", str(path), "--results-dir", str(tmp_path / "r")],
        tmp_path, make_cli_env({"TERM": "dumb"}))
    assert code == 1
    assert b"\x1b" not in tty
    assert re.search(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z run ", tty)


# -- in process --------------------------------------------------------------------------------------------------------


def _record(name="a", status="succeeded", **over):
    rec = {"name": name, "status": status, "exit_code": 0, "duration_s": 75.2, "attempts": 1,
           "tokens": {"input": 1200, "output": 40, "cache_creation": 300, "cache_read": 15000, "total": 16540},
           "cost_usd": 0.0123, "cost_source": "result", "model": "claude-sonnet-4-5", "tools": {"Bash": 2},
           "api_error_status": None, "error": None}
    rec.update(over)
    return rec


async def test_lines_console_format_and_scrubbing():
    buf = io.StringIO()
    console = Console("lines", buf, scrub=lambda s: s.replace("hunter2", "***"))
    await console.emit({"event": "instance_started", "name": "a", "attempt": 2})
    await console.emit({"event": "instance_retry", "name": "a", "attempt": 1, "api_error_status": 529, "delay_s": 0.5})
    await console.emit({"event": "instance_finished", "name": "b",
                        "record": _record("b", "api-error", api_error_status=529, error="token hunter2 rejected")})
    console.note("budget nearly used; password hunter2")
    await console.emit({"event": "something_unknown"})
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4 and all(ISO_PREFIX.match(line) for line in lines)
    bodies = [ISO_PREFIX.sub("", line) for line in lines]
    assert bodies[0] == "a: started (attempt 2)"
    assert bodies[1] == "a: API error 529, retrying in 0.5s (attempt 2)"
    assert bodies[2] == "b: api-error — api 529 — 1m15s, 17k tokens, $0.0123 (result) — token *** rejected"
    assert bodies[3] == "warning: budget nearly used; password ***"
    assert "hunter2" not in buf.getvalue()


async def test_json_console_is_one_object_per_event():
    buf = io.StringIO()
    console = Console("json", buf)
    await console.emit({"event": "instance_started", "name": "a", "attempt": 1, "at": "x"})
    console.note("careful")
    objs = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [o["event"] for o in objs] == ["instance_started", "warning"]
    assert objs[1]["message"] == "careful" and all("ts" in o for o in objs)


def test_summary_table():
    doc = {"status": "failed", "instances": [_record("alpha"), _record("beta", "api-error", api_error_status=401,
                                                                      cost_source=None, model=None)],
           "totals": {"tokens": {"input": 2400, "output": 80, "cache_creation": 600, "cache_read": 30000,
                                 "total": 33080}, "cost_usd": 0.0246, "tools": {"Bash": 4}}}
    rows = summary_table(doc).splitlines()
    assert rows[0].split() == ["NAME", "STATUS", "MODEL", "TIME", "TOKENS", "CACHE", "TOOLS", "COST", "SOURCE"]
    # TOKENS is every token (input, output, cache), CACHE the cached part of it: the same words as the live view
    assert rows[1].split() == ["alpha", "succeeded", "claude-sonnet-4-5", "1m15s", "17k", "15k", "2", "$0.0123",
                               "result"]
    assert rows[2].split() == ["beta", "api-error", "(401)", "-", "1m15s", "17k", "15k", "2", "$0.0123", "-"]
    assert rows[3].split() == ["TOTAL", "failed", "33k", "31k", "4", "$0.0246"]


@pytest.mark.parametrize("n, text", [(0, "0"), (9999, "9999"), (10_000, "10k"), (13_049, "13k"),
                                     (999_499, "999k"), (1_000_000, "1.0M"), (25_300_000, "25.3M")])
def test_fmt_tokens(n, text):
    assert fmt_tokens(n) == text


@pytest.mark.parametrize("s, text", [(None, "-"), (0, "0s"), (59.9, "59s"), (60, "1m00s"), (3599, "59m59s"),
                                     (3725, "1h02m")])
def test_fmt_duration(s, text):
    assert fmt_duration(s) == text
