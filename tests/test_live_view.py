"""The live view fits any terminal: never taller or wider than the screen, running instances first, stable order.

In process: :func:`render_table` over synthetic snapshots of every size. For real: the orchestrator runs 200
instances inside tmux (Debian's tmux) at 80x24 and 200x50, and the scrollback afterwards holds the event lines and
the final summary table once — no redrawn copies of the live view.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_pex.progress import Progress, Row, from_journal
from orchestrator_pex.report import header_lines, progress_event, render_table
from tests.support import procs
from tests.support.components import missing

NOW = 1_800_000_000.0
STATES = ["succeeded", "running", "pending", "failed", "retrying", "timed-out"]


def snapshot(n: int, **over) -> Progress:
    rows = []
    for i in range(n):
        state = STATES[i % len(STATES)]
        pending = state == "pending"
        rows.append(Row(
            name=f"instance-with-a-long-name-{i:05d}", state=state, model=None if pending else "claude-sonnet-4-5",
            started_at=None if pending else NOW - 100 - i, finished_at=None, attempts=0 if pending else 1 + i % 2,
            tokens=0 if pending else 12_000 + i, cache=0 if pending else 10_000, tools=0 if pending else i % 5,
            cost_usd=0.0 if pending else 0.01 * i, budget="40%tok" if i % 7 == 0 and not pending else None,
        ))
    defaults = dict(rows=tuple(rows), started_at=NOW - 300, tokens=sum(r.tokens for r in rows),
                    cost_usd=sum(r.cost_usd for r in rows), budget_cost_usd=500.0)
    defaults.update(over)
    return Progress(**defaults)


@pytest.mark.parametrize("width, height", [(80, 24), (200, 50), (40, 10), (120, 30), (20, 4), (300, 100)])
@pytest.mark.parametrize("n", [1, 7, 30, 200, 5000])
def test_never_taller_or_wider_than_the_terminal(width, height, n):
    lines = render_table(snapshot(n), width, height, NOW)
    assert len(lines) <= max(4, height)
    assert all(len(line) < max(21, width) for line in lines), max(map(len, lines))
    assert "done" in lines[0]


def test_running_first_then_failures_then_successes_then_pending_in_batch_order():
    p = snapshot(12)
    lines = render_table(p, 200, 100, NOW)
    body = [line.split()[:2] for line in lines[3:]]
    states = [state for _, state in body]
    assert states == ["running", "retrying", "running", "retrying", "failed", "timed-out", "failed", "timed-out",
                      "succeeded", "succeeded", "pending", "pending"]
    running = [name for name, state in body if state in ("running", "retrying")]
    assert running == sorted(running)  # batch order inside a group


def test_what_does_not_fit_is_folded_into_one_count_line():
    lines = render_table(snapshot(200), 80, 24, NOW)
    assert len(lines) == 24
    assert lines[-1].startswith("… ") and " more: " in lines[-1]
    folded = int(lines[-1].split()[1])
    assert folded == 200 - (24 - 4)  # two header lines, the column titles, the fold line


def test_columns_are_dropped_by_priority_as_the_terminal_narrows():
    wide = render_table(snapshot(10), 200, 40, NOW)[2].split()
    narrow = render_table(snapshot(10), 60, 40, NOW)[2].split()
    assert wide == ["NAME", "STATE", "TIME", "TOKENS", "COST", "BUDGET", "MODEL", "CACHE", "TOOLS", "ATT"]
    assert narrow[:2] == ["NAME", "STATE"] and set(narrow) < set(wide)
    assert "TOKENS" in narrow and "ATT" not in narrow


def test_pending_rows_show_dashes_not_zeros():
    line = next(line for line in render_table(snapshot(6), 200, 40, NOW) if " pending" in line and "-0000" in line)
    assert "$0.0000" not in line and " 0 " not in line


def test_header_shows_progress_eta_tokens_and_spend_against_the_budget():
    first, second = header_lines(snapshot(6), NOW, 200)
    assert first.startswith("[") and "3/6 done" in first and "5m00s elapsed" in first and "ETA 5m00s" in first
    assert "tokens" in first and "of $500 budget" in first
    assert second == "1 running · 1 retrying · 1 failed · 1 timed-out · 1 succeeded · 1 pending"


def test_progress_event_is_plain_json_numbers():
    event = progress_event(snapshot(6), NOW)
    assert event["event"] == "progress" and event["done"] == 3  # succeeded, failed, timed-out
    assert event["total"] == 6 and event["running"] == 2 and event["eta_s"] == pytest.approx(300.0)
    assert event["by_state"] == {"succeeded": 1, "running": 1, "pending": 1, "failed": 1, "retrying": 1,
                                 "timed-out": 1}


def test_from_journal_knows_running_retrying_pending_and_finished():
    record = {"name": "a", "status": "succeeded", "tokens": {"total": 5, "cache_read": 1, "cache_creation": 1},
              "cost_usd": 0.5, "attempts": 1, "tools": {"Bash": 2}, "started_at": "2026-11-29T10:00:00.000Z",
              "finished_at": "2026-11-29T10:00:05.000Z", "model": "m"}
    events = [
        {"event": "run_started", "started_at": "2026-11-29T10:00:00.000Z"},
        {"event": "instance_started", "name": "a", "attempt": 1, "at": "2026-11-29T10:00:00.000Z"},
        {"event": "instance_started", "name": "b", "attempt": 1, "at": "2026-11-29T10:00:01.000Z"},
        {"event": "instance_started", "name": "c", "attempt": 1, "at": "2026-11-29T10:00:01.000Z"},
        {"event": "instance_retry", "name": "c", "attempt": 1},
        {"event": "instance_finished", "name": "a", "record": record},
    ]
    p = from_journal(events, ["a", "b", "c", "d"])
    assert [(r.name, r.state) for r in p.rows] == [("a", "succeeded"), ("b", "running"), ("c", "retrying"),
                                                  ("d", "pending")]
    assert p.done == 1 and p.tokens == 5 and p.cost_usd == 0.5 and not p.finished


# -- for real, in tmux ------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is not installed (.ci/run installs Debian's tmux)")
        missing("tmux is not installed (apt-get install tmux)")
    return path


@pytest.mark.parametrize("width, height", [(80, 24), (200, 50)])
def test_live_view_in_real_tmux_leaves_one_final_table_in_scrollback(tmp_path, write_batch, make_cli_env,
                                                                      width, height):
    tmux = _tmux()
    lines = ["concurrency = 16", "grace_period = 1"]
    for i in range(200):
        lines += ["[[instances]]", f'name = "job-{i:03d}"', f'argv = ["sleep", "0.{1 + i % 3}"]']
    batch = write_batch("\n".join(lines) + "\n")
    socket = f"opx-{os.getpid()}-{width}"
    conf = tmp_path / "tmux.conf"
    conf.write_text("set -g history-limit 100000\nset -g remain-on-exit on\n")
    done = tmp_path / "exit"
    env = make_cli_env({"TERM": "xterm-256color"})
    command = (f"{sys.executable} -m orchestrator_pex run {batch} --results-dir {tmp_path / 'r'}; "
               f"echo $? > {done}")
    base = [tmux, "-L", socket, "-f", str(conf)]
    subprocess.run([*base, "new-session", "-d", "-x", str(width), "-y", str(height), command], env=env, check=True,
                   cwd=tmp_path)
    server = int(subprocess.run([*base, "display-message", "-p", "#{pid}"], capture_output=True, text=True,
                                check=True).stdout)
    try:
        def finished() -> bool:
            # pane_dead: the command exited and tmux has read its output to the end (remain-on-exit keeps the pane)
            dead = subprocess.run([*base, "display-message", "-p", "#{pane_dead}"], capture_output=True, text=True,
                                  check=True).stdout.strip()
            return done.exists() and dead == "1"

        procs.wait_until(finished, "the run inside tmux to finish and tmux to read all of its output", timeout=120)
        screen = subprocess.run([*base, "capture-pane", "-p", "-J", "-S", "-", "-E", "-"], capture_output=True,
                                text=True, check=True).stdout
    finally:
        os.kill(server, signal.SIGTERM)
    assert done.read_text().strip() == "0"
    rows = screen.splitlines()
    assert sum(1 for r in rows if r.split()[:2] == ["NAME", "STATUS"]) == 1  # the final summary table, once
    assert sum(1 for r in rows if r.startswith("TOTAL ")) == 1
    assert not any(r.split()[:2] == ["NAME", "STATE"] for r in rows), "a copy of the live view stayed behind"
    assert not any(" done · " in r for r in rows), "a copy of the live view's header stayed behind"
    assert sum(1 for r in rows if re.match(r"job-\d{3}\s+succeeded\s", r)) == 200  # each summary row once
    assert sum(1 for r in rows if re.match(r"job-\d{3}: succeeded", r)) == 200  # each event line once
    assert any(r.startswith("run ") and " started: 200 instances from " in r for r in rows)
