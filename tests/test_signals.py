"""SIGINT/SIGTERM to a running orchestrator: exit 130/143, results written, running instances cancelled, nothing left.

The orchestrator runs in its own session (so the test's signals reach only it). Tests wait for observable state —
the agents' first output in the run directory's logs, a line on stderr — before signalling, never for a fixed time.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import procs

# Generic instance that reports SIGTERM in a file and otherwise ignores it; says "ready" on stdout and in a file.
STUBBORN = r'''
import signal, sys, time
def on_term(*_):
    with open(sys.argv[1], "a") as f:
        f.write("term\n")
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
open(sys.argv[1] + ".ready", "w").close()
while True:
    time.sleep(1)
'''


def wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = 30.0):
    """Poll until ``predicate()`` holds; fail if it never does or the orchestrator exits first."""
    return procs.wait_until(predicate, what, timeout=timeout, proc=proc)


def log_has(results_dir: Path, name: str, needle: bytes) -> bool:
    for path in glob.glob(str(results_dir / "*" / "logs" / f"{name}.stdout")):
        with open(path, "rb") as f:
            if needle in f.read():
                return True
    return False


_STARTED: list = []


@pytest.fixture(autouse=True)
def _stop_leftover_orchestrators():
    """If a test failed half-way, end the orchestrator it started: SIGTERM (it then ends its instances), SIGKILL
    (its own session: its group id is its pid) if it is still there after a while."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()


def start(tmp_path: Path, batch: str, env, *args: str) -> subprocess.Popen:
    path = tmp_path / "batch.toml"
    path.write_text(batch)
    err = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator_pex", "run", str(path), "--json", "--results-dir",
         str(tmp_path / "runs"), *args],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, start_new_session=True,
    )
    err.close()
    _STARTED.append(proc)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 60) -> dict:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return json.loads(out)


def results_json(doc: dict) -> dict:
    with open(os.path.join(doc["run_dir"], "results.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_batch(tmp_path, fake_claude, make_cli_env, marker, marked_pids, signum, code):
    batch = f'claude = {json.dumps(fake_claude)}\nconcurrency = 2\ngrace_period = 0.5\n' \
            f'[defaults]\nenv = {{ ORCH_TEST_MARKER = "{marker}", AGENT_SIM_SCENARIO = "hang" }}\n' + "".join(
                f'[[instances]]\nname = "h{i}"\nprompt = "p"\n' for i in range(4))
    proc = start(tmp_path, batch, make_cli_env())
    wait_for(lambda: len(marked_pids(marker)) == 2, "h0 and h1 started", proc)
    os.kill(proc.pid, signum)
    doc = finish(proc)
    assert proc.returncode == code
    assert doc["status"] == "interrupted" and doc["exit_status"] == code
    statuses = {r["name"]: r["status"] for r in doc["instances"]}
    assert statuses == {"h0": "cancelled", "h1": "cancelled", "h2": "not-started", "h3": "not-started"}
    assert results_json(doc) == doc
    assert "interrupted" in doc["instances"][2]["error"]
    assert marked_pids(marker) == []


def test_sigterm_ignoring_instance_killed_after_grace_on_interrupt(tmp_path, make_cli_env, marker, marked_pids):
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    batch = f'grace_period = 0.5\n[[instances]]\nname = "s"\n' \
            f'argv = [{json.dumps(sys.executable)}, "{tmp_path}/stubborn.py", "{tmp_path}/terms.log"]\n' \
            f'env = {{ ORCH_TEST_MARKER = "{marker}" }}\n'
    proc = start(tmp_path, batch, make_cli_env())
    wait_for(lambda: (tmp_path / "terms.log.ready").exists(), "stubborn instance ready", proc)
    os.kill(proc.pid, signal.SIGINT)
    doc = finish(proc)
    assert proc.returncode == 130
    (rec,) = doc["instances"]
    assert rec["status"] == "cancelled" and rec["exit_code"] == -signal.SIGKILL
    assert (tmp_path / "terms.log").read_text().startswith("term\n")  # it was asked politely first
    assert marked_pids(marker) == []


def test_second_signal_kills_without_waiting_for_grace(tmp_path, make_cli_env, marker, marked_pids):
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    batch = f'grace_period = 600\n[[instances]]\nname = "s"\n' \
            f'argv = [{json.dumps(sys.executable)}, "{tmp_path}/stubborn.py", "{tmp_path}/terms.log"]\n' \
            f'env = {{ ORCH_TEST_MARKER = "{marker}" }}\n'
    proc = start(tmp_path, batch, make_cli_env())
    wait_for(lambda: (tmp_path / "terms.log.ready").exists(), "stubborn instance ready", proc)
    os.kill(proc.pid, signal.SIGINT)
    wait_for(lambda: (tmp_path / "terms.log").exists(), "first signal handled (SIGTERM sent to the instance)", proc)
    os.kill(proc.pid, signal.SIGINT)
    doc = finish(proc, timeout=60)  # far below the 600 s grace: only the second signal can end it this soon
    assert proc.returncode == 130
    (rec,) = doc["instances"]
    assert rec["status"] == "cancelled" and rec["exit_code"] == -signal.SIGKILL
    assert marked_pids(marker) == []


def test_raw_log_is_written_while_the_instance_runs(tmp_path, make_cli_env, marker, marked_pids):
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    batch = f'grace_period = 0.5\n[[instances]]\nname = "s"\n' \
            f'argv = [{json.dumps(sys.executable)}, "{tmp_path}/stubborn.py", "{tmp_path}/terms.log"]\n' \
            f'env = {{ ORCH_TEST_MARKER = "{marker}" }}\n'
    proc = start(tmp_path, batch, make_cli_env())
    try:
        wait_for(lambda: (tmp_path / "terms.log.ready").exists(), "instance printed its line", proc)
        wait_for(lambda: log_has(tmp_path / "runs", "s", b"ready"), "line in the raw log", proc, timeout=3)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        finish(proc)
    assert marked_pids(marker) == []


def test_interrupt_during_retry_backoff_cancels_the_instance(tmp_path, fake_claude, make_cli_env):
    batch = f'claude = {json.dumps(fake_claude)}\ngrace_period = 0.5\n[retry]\nbackoff = 600\n' \
            '[[instances]]\nname = "o"\nprompt = "p"\nretries = 3\nenv = { AGENT_SIM_SCENARIO = "api-529" }\n'
    proc = start(tmp_path, batch, make_cli_env(), "--json-logs")
    wait_for(lambda: b'"instance_retry"' in (tmp_path / "stderr.txt").read_bytes(), "first retry scheduled", proc)
    os.kill(proc.pid, signal.SIGINT)
    doc = finish(proc)  # far below the 600 s back-off: the interrupt cut it short
    assert proc.returncode == 130
    (rec,) = doc["instances"]
    assert rec["attempts"] == 1 and rec["api_error_status"] == 529
    assert rec["status"] == "cancelled"


def test_interrupt_while_the_launcher_waits_out_a_stagger(tmp_path, fake_claude, make_cli_env, marker, marked_pids):
    batch = f'claude = {json.dumps(fake_claude)}\nstagger = 600\ngrace_period = 0.5\n' \
            f'[defaults]\nenv = {{ ORCH_TEST_MARKER = "{marker}", AGENT_SIM_SCENARIO = "hang" }}\n' \
            '[[instances]]\nname = "first"\nprompt = "p"\n[[instances]]\nname = "second"\nprompt = "p"\n'
    proc = start(tmp_path, batch, make_cli_env())
    wait_for(lambda: len(marked_pids(marker)) == 1, "first instance started", proc)
    os.kill(proc.pid, signal.SIGTERM)
    doc = finish(proc)  # far below the 600 s stagger
    assert proc.returncode == 143
    assert [r["status"] for r in doc["instances"]] == ["cancelled", "not-started"]
    assert marked_pids(marker) == []


def test_interrupt_while_waiting_for_start_at(tmp_path, make_cli_env):
    batch = '[[instances]]\nname = "later"\nargv = ["/bin/true"]\n'
    proc = start(tmp_path, batch, make_cli_env(), "--start-at", "2h")
    wait_for(lambda: b"waiting until" in (tmp_path / "stderr.txt").read_bytes(), "waiting for --start-at", proc)
    os.kill(proc.pid, signal.SIGTERM)
    doc = finish(proc)
    assert proc.returncode == 143
    assert [r["status"] for r in doc["instances"]] == ["not-started"]
    assert results_json(doc) == doc
