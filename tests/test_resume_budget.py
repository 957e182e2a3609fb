"""A resumed run counts what the run already spent against the batch budget (retries and reruns are never free)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FAKE = Path(__file__).resolve().parent / "support" / "fake_claude"

BATCH = """
claude = {claude}
concurrency = 1
grace_period = 0.5
[budget]
max_tokens = 20000
mode = "block"
[defaults]
env = {{ AGENT_SIM_SCENARIO = "tool-use" }}
[[instances]]
name = "first"
prompt = "one"
[[instances]]
name = "second"
prompt = "two"
[[instances]]
name = "third"
prompt = "three"
"""


def _cli(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "orchestrator_pex", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120)


def test_resume_does_not_reset_the_batch_budget(tmp_path, make_cli_env):
    batch = tmp_path / "batch.toml"
    batch.write_text(BATCH.format(claude=json.dumps(str(FAKE))))
    env = make_cli_env()
    first = _cli("run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"), cwd=tmp_path, env=env)
    assert first.returncode == 3, first.stderr.decode()
    doc = json.loads(first.stdout)
    statuses = {r["name"]: r["status"] for r in doc["instances"]}
    assert statuses == {"first": "succeeded", "second": "budget-stopped", "third": "not-started"}
    spent = doc["totals"]["tokens"]["total"]
    assert spent > 20000

    again = _cli("resume", doc["run_dir"], "--rerun-failed", "--json", cwd=tmp_path, env=env)
    assert again.returncode == 3, again.stderr.decode()
    after = json.loads(again.stdout)
    statuses = {r["name"]: r["status"] for r in after["instances"]}
    assert statuses["first"] == "succeeded"
    assert statuses["second"] == "budget-stopped" and statuses["third"] == "not-started"  # not started again
    assert after["totals"]["tokens"]["total"] == spent  # nothing more was spent


def test_a_rerun_instance_keeps_what_its_earlier_sessions_spent(tmp_path, make_cli_env):
    batch = tmp_path / "batch.toml"
    batch.write_text(f'claude = {json.dumps(str(FAKE))}\n[[instances]]\nname = "crashy"\nprompt = "x"\n'
                     'env = { AGENT_SIM_SCENARIO = "crash" }\n')
    env = make_cli_env()
    first = json.loads(_cli("run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"),
                            cwd=tmp_path, env=env).stdout)
    before = first["instances"][0]
    assert before["status"] == "failed" and before["tokens"]["total"] > 0 and before["attempts"] == 1

    again = _cli("resume", first["run_dir"], "--rerun-failed", "--json", cwd=tmp_path, env=env)
    after = json.loads(again.stdout)["instances"][0]
    assert after["status"] == "failed" and after["attempts"] == 2
    assert after["tokens"]["total"] == 2 * before["tokens"]["total"]
    assert after["cost_usd"] == round(2 * before["cost_usd"], 6)
    assert after["started_at"] == before["started_at"]
    with open(Path(first["run_dir"]) / "results.json") as f:  # the file agrees (and so does the journal replay)
        assert json.load(f)["instances"][0]["tokens"] == after["tokens"]
