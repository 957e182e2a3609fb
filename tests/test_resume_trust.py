"""Resume trusts only what it can verify, and spend survives a SIGKILL of the orchestrator (issue 9, parts 7 and 9).

Real processes throughout: ``python -m orchestrator_pex run`` / ``resume`` from this checkout, generic instances
that are small Python scripts written into the test's directory.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator_pex import journal

GOOD = """
concurrency = 1
grace_period = 0.5
[[instances]]
name = "only"
argv = [{python}, "-c", "import sys; open(sys.argv[1], 'a').write('ran\\\\n')", {marker}]
"""

# An agent that prints two assistant messages with usage, says so, then sleeps until killed; the second time it
# starts (a resume) it ends at once with a result of its own.
SPENDER = r'''
import json, os, sys, time
state = sys.argv[1]
second = os.path.exists(state)
open(state, "a").write("start\n")
def say(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()
if second:
    say({"type": "assistant", "message": {"id": "msg_again", "model": "claude-sonnet-4-5",
         "usage": {"input_tokens": 7, "output_tokens": 3}, "content": []}})
    say({"type": "result", "subtype": "success", "is_error": False, "result": "done", "total_cost_usd": 0.01,
         "usage": {"input_tokens": 7, "output_tokens": 3}})
    sys.exit(0)
for i, (inp, out) in enumerate(((1000, 200), (3000, 400))):
    say({"type": "assistant", "message": {"id": "msg_%d" % i, "model": "claude-sonnet-4-5",
         "usage": {"input_tokens": inp, "output_tokens": out}, "content": [{"type": "tool_use", "name": "Bash",
         "id": "t%d" % i, "input": {}}]}})
open(state + ".ready", "w").close()
while True:
    time.sleep(60)
'''

SPEND_BATCH = """
concurrency = 1
grace_period = 0.5
[[instances]]
name = "spender"
argv = [{python}, {script}, {state}]
"""


def _cli(*args, cwd, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "orchestrator_pex", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def _run_ok(tmp_path, env, marker):
    batch = tmp_path / "batch.toml"
    batch.write_text(GOOD.format(python=json.dumps(sys.executable), marker=json.dumps(str(marker))))
    out = _cli("run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"), cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr.decode()
    run_dir = Path(json.loads(out.stdout)["run_dir"])
    marker.unlink()
    return batch, run_dir


def _mark_interrupted(run_dir: Path) -> None:
    """Make the journal say the instance was running when the orchestrator died (so resume would rerun it)."""
    path = run_dir / journal.JOURNAL_NAME
    lines = [line for line in path.read_text().splitlines()
             if json.loads(line)["event"] not in ("instance_finished", "run_finished")]
    path.write_text("\n".join(lines) + "\n")
    (run_dir / "results.json").unlink()


def _one_line_refusal(out, path) -> None:
    err = out.stderr.decode()
    assert out.returncode == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and "refusing to resume" in lines[0], err


@pytest.mark.parametrize("target", ["run_dir", "batch_copy", "journal", "results"])
@pytest.mark.parametrize("how", ["nobody", "mode666", "symlink"])
def test_resume_refuses_what_another_user_could_have_written(tmp_path, make_cli_env, target, how):
    if how == "nobody" and os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root") if os.environ.get("CI") != "true" else pytest.fail(
            "CI runs as root")
    env = make_cli_env()
    marker = tmp_path / "marker"
    batch, run_dir = _run_ok(tmp_path, env, marker)
    _mark_interrupted(run_dir)
    if target == "results":
        (run_dir / "results.json").write_text("{}")
    path = {"run_dir": run_dir, "batch_copy": run_dir / "batch.toml", "journal": run_dir / journal.JOURNAL_NAME,
            "results": run_dir / "results.json"}[target]
    if how == "nobody":
        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    elif how == "mode666":
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    else:
        real = path.with_name(path.name + ".real")
        os.rename(path, real)
        os.symlink(real, path)
    out = _cli("resume", str(path if target == "run_dir" else run_dir), cwd=tmp_path, env=env)
    _one_line_refusal(out, path)
    assert not marker.exists()  # nothing ran


def test_resume_refuses_a_swapped_batch_copy_and_runs_nothing(tmp_path, make_cli_env):
    env = make_cli_env()
    marker = tmp_path / "marker"
    evil = tmp_path / "evil-marker"
    batch, run_dir = _run_ok(tmp_path, env, marker)
    _mark_interrupted(run_dir)
    copy = run_dir / "batch.toml"
    # same owner, same mode: only the recorded batch_sha256 can tell
    copy.write_text(GOOD.format(python=json.dumps(sys.executable), marker=json.dumps(str(evil))))
    os.chmod(copy, 0o644)
    out = _cli("resume", str(run_dir), cwd=tmp_path, env=env)
    _one_line_refusal(out, copy)
    assert "batch_sha256" in out.stderr.decode()
    assert not evil.exists() and not marker.exists()
    dry = _cli("resume", str(run_dir), "--dry-run", cwd=tmp_path, env=env)  # not even a dry run reads it
    assert dry.returncode == 2 and not evil.exists()


def test_an_untouched_interrupted_run_still_resumes(tmp_path, make_cli_env):
    env = make_cli_env()
    marker = tmp_path / "marker"
    batch, run_dir = _run_ok(tmp_path, env, marker)
    _mark_interrupted(run_dir)
    out = _cli("resume", str(run_dir), "--json", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr.decode()
    assert marker.read_text() == "ran\n"


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 60.0) -> None:
    end = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "orchestrator ended"
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def _kill_and_wait_for_instance(proc: subprocess.Popen, run_dir: Path) -> None:
    """SIGKILL the orchestrator; then wait until the guardian has ended the instance (the lock is free)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _run_dir(results: Path) -> Path:
    dirs = [p for p in results.iterdir() if p.is_dir()]
    assert len(dirs) == 1
    return dirs[0]


def _start_spender(tmp_path, env):
    script = tmp_path / "spender.py"
    script.write_text(SPENDER)
    state = tmp_path / "state"
    batch = tmp_path / "batch.toml"
    batch.write_text(SPEND_BATCH.format(python=json.dumps(sys.executable), script=json.dumps(str(script)),
                                        state=json.dumps(str(state))))
    results = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator_pex", "run", str(batch), "--results-dir",
                             str(results)], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, state, results


def _strict(text: str):
    def no_constants(name):
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=no_constants)


def test_spend_of_a_sigkilled_attempt_reaches_the_record_and_ledger_once(tmp_path, make_cli_env):
    env = make_cli_env()
    proc, state, results = _start_spender(tmp_path, env)
    try:
        _wait_for(Path(str(state) + ".ready"), proc)
        _kill_and_wait_for_instance(proc, results)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    run_dir = _run_dir(results)
    events = [_strict(line) for line in (run_dir / journal.JOURNAL_NAME).read_text().splitlines()]
    started = [e for e in events if e["event"] == "instance_started"]
    assert started and started[0]["stdout_offset"] == 0
    assert not any(e["event"] == "instance_finished" for e in events)
    log = (run_dir / "logs" / "spender.stdout").read_text()
    assert log.count('"msg_0"') == 1 and log.count('"msg_1"') == 1  # what the killed attempt spent: 4600 tokens

    # the record of a run shown before any resume already holds it
    shown = _cli("runs", "show", str(run_dir), "--json", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr.decode()
    rec = {r["name"]: r for r in _strict(shown.stdout)["instances"]}["spender"]
    assert rec["status"] == "cancelled" and rec["tokens"]["total"] == 4600

    out = _cli("resume", str(run_dir), "--json", "--wait-lock", "60", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr.decode()
    doc = _strict(out.stdout)
    rec = doc["instances"][0]
    # killed attempt (1000+200 + 3000+400) plus the rerun (7+3), each counted once
    assert rec["tokens"]["input"] == 4007 and rec["tokens"]["output"] == 603, rec
    assert rec["tokens"]["total"] == 4610
    assert rec["attempts"] == 2
    assert rec["tools"].get("Bash") == 2
    assert rec["cost_usd"] > 0.01  # the rerun's own 0.01 plus an estimate for the killed attempt
    assert doc["totals"]["tokens"]["total"] == 4610
    assert doc["totals"]["cost_usd"] == pytest.approx(rec["cost_usd"])
    on_disk = _strict((run_dir / "results.json").read_text())
    assert on_disk["instances"][0]["tokens"]["total"] == 4610

    # a second resume changes nothing: nothing to rerun, nothing counted again
    again = _cli("resume", str(run_dir), "--json", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr.decode()
    assert _strict(again.stdout)["instances"][0]["tokens"]["total"] == 4610


def test_spend_is_counted_once_when_the_resume_itself_is_killed(tmp_path, make_cli_env):
    env = make_cli_env()
    proc, state, results = _start_spender(tmp_path, env)
    try:
        _wait_for(Path(str(state) + ".ready"), proc)
        _kill_and_wait_for_instance(proc, results)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    run_dir = _run_dir(results)
    # the resume's attempt would end at once; make it spend and hang like the first by forgetting the state file
    os.unlink(state)
    os.unlink(str(state) + ".ready")
    resume = subprocess.Popen([sys.executable, "-m", "orchestrator_pex", "resume", str(run_dir), "--wait-lock", "60"],
                              cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        _wait_for(Path(str(state) + ".ready"), resume)
        _kill_and_wait_for_instance(resume, results)
    finally:
        if resume.poll() is None:
            resume.kill()
            resume.wait()
        if resume.stderr:
            resume.stderr.close()
    events = [_strict(line) for line in (run_dir / journal.JOURNAL_NAME).read_text().splitlines()]
    offsets = [e["stdout_offset"] for e in events if e["event"] == "instance_started"]
    assert len(offsets) == 2 and offsets[0] == 0 < offsets[1]
    out = _cli("resume", str(run_dir), "--json", "--wait-lock", "60", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr.decode()
    rec = _strict(out.stdout)["instances"][0]
    # two killed attempts of 4600 tokens each, then the final one of 10
    assert rec["tokens"]["total"] == 2 * 4600 + 10, rec
    assert rec["attempts"] == 3
    assert _strict(out.stdout)["totals"]["tokens"]["total"] == 2 * 4600 + 10
