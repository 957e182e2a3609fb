"""Stall and time (runtime.py's time rules) with real processes and a real SIGSTOP/SIGCONT of the orchestrator.

* silence counts while the process lives, also after it closed its stdout;
* time the orchestrator was stopped is charged neither as silence nor as timeout, and output that waited in the pipe
  is read; a truly silent instance is still stalled.

The test waits for observable state (the instance's first output in its log) before stopping the orchestrator; the
pause itself is a sleep (it has to last longer than the instances' limits), and only statuses are asserted.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator_pex.strictjson import loads_strict

# Prints a line every 0.2 s for about 10 s, then exits 0.
TICKER = ("import time\nfor i in range(50):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
          "print('done', flush=True)\n")
# Says "start", is silent for 9 s, says "end", exits 0.
SLEEPER = "import time\nprint('start', flush=True)\ntime.sleep(9)\nprint('end', flush=True)\n"
# Says hello, closes stdout, and keeps running silently.
CLOSER = "import os, time\nprint('hello', flush=True)\nos.close(1)\ntime.sleep(120)\n"

_STARTED: list = []


@pytest.fixture(autouse=True)
def _stop_orchestrators():
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()


def _inst(name: str, code: str, extra: str) -> str:
    return f'[[instances]]\nname = "{name}"\nargv = [{json.dumps(sys.executable)}, "-c", {json.dumps(code)}]\n{extra}\n'


def _start(tmp_path: Path, batch: str, env) -> subprocess.Popen:
    path = tmp_path / "batch.toml"
    path.write_text("grace_period = 0.5\n[retry]\nbackoff = 0.05\n[defaults]\nretries = 0\n" + batch)
    err = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator_pex", "run", str(path), "--json", "--results-dir", str(tmp_path / "runs")],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    err.close()
    _STARTED.append(proc)
    return proc


def _finish(proc: subprocess.Popen, tmp_path: Path) -> dict:
    out, _ = proc.communicate(timeout=120)
    assert out, (tmp_path / "stderr.txt").read_text(errors="replace")
    doc = loads_strict(out)
    with open(os.path.join(doc["run_dir"], "results.json"), "rb") as f:
        loads_strict(f.read())
    with open(os.path.join(doc["run_dir"], "journal.jsonl"), "rb") as f:
        for line in f.read().splitlines():
            loads_strict(line)
    return doc


def _log(tmp_path: Path, name: str) -> bytes:
    data = b""
    for path in glob.glob(str(tmp_path / "runs" / "*" / "logs" / f"{name}.stdout")):
        with open(path, "rb") as f:
            data += f.read()
    return data


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        assert proc.poll() is None, f"orchestrator exited before: {what}"
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {what}")


def test_closed_stdout_still_stalls(tmp_path, make_cli_env):
    proc = _start(tmp_path, _inst("closer", CLOSER, "stall_timeout = 1\ntimeout = 60"), make_cli_env())
    doc = _finish(proc, tmp_path)
    record = doc["instances"][0]
    assert record["status"] == "stalled", record
    assert record["error"].startswith("stalled: no output for 1s")
    assert proc.returncode == 1


def test_paused_orchestrator_charges_no_silence_or_timeout(tmp_path, make_cli_env):
    """A 7 s pause early on. The ticker runs ~10 s of wall time but ~3 s while the orchestrator runs (timeout 6);
    the sleeper is silent 9 s of wall time but ~2 s while the orchestrator runs (stall_timeout 4); the closer is
    silent while running for longer than its stall_timeout whatever the pause."""
    batch = (_inst("ticker", TICKER, "stall_timeout = 1.5\ntimeout = 6")
             + _inst("sleeper", SLEEPER, "stall_timeout = 4\ntimeout = 60")
             + _inst("closer", CLOSER, "stall_timeout = 2\ntimeout = 100"))
    proc = _start(tmp_path, batch, make_cli_env())
    _wait_for(lambda: b"tick 0" in _log(tmp_path, "ticker") and b"start" in _log(tmp_path, "sleeper"), proc,
              "the ticker's and the sleeper's first output")
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(7)  # the pause itself (longer than the limits it must not be charged to), not an assertion
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    doc = _finish(proc, tmp_path)
    by_name = {r["name"]: r for r in doc["instances"]}
    assert by_name["ticker"]["status"] == "succeeded", by_name["ticker"]
    ticker_log = _log(tmp_path, "ticker")
    assert ticker_log.count(b"tick") == 50 and b"done" in ticker_log  # what waited in the pipe was read
    assert by_name["sleeper"]["status"] == "succeeded", by_name["sleeper"]
    assert by_name["closer"]["status"] == "stalled", by_name["closer"]
