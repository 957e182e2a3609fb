"""End to end: secret values from the run's environment and from a batch ``env`` table never reach stdout, stderr
or any file the run writes (results, logs, journal, batch copy), while the output around them is kept."""

from __future__ import annotations

import json
import sys

import pytest

CANARY_ENV = "sk-ant-api03-ENVCANARY-" + "Zq81" * 10  # ANTHROPIC_API_KEY in the orchestrator's environment
CANARY_BATCH = "batch-canary-" + "Pw7x" * 6  # DB_PASSWORD in the batch's env table
CANARY_USER = "user-listed-canary-93a1f"  # ACME_LICENSE, secret only through ORCHESTRATOR_PEX_SECRET_NAMES
CANARIES = (CANARY_ENV, CANARY_BATCH, CANARY_USER)

PRINTER = (
    "import os, sys\n"
    "print('key=' + os.environ['ANTHROPIC_API_KEY'])\n"
    "print('pw=' + os.environ['DB_PASSWORD'], file=sys.stderr)\n"
    "print('lic=' + os.environ['ACME_LICENSE'])\n"
    "sys.stdout.flush()\n"
    "raise SystemExit('failed with ' + os.environ['DB_PASSWORD'])\n"
)


def forms(value: str):
    return [value.encode(), json.dumps(value).encode()[1:-1]]


def leaks(data: bytes):
    return [c for c in CANARIES if any(f in data for f in forms(c))]


def batch_text(fake: str) -> str:
    return f"""
claude = {json.dumps(fake)}
concurrency = 2

[defaults]
permission_mode = "acceptEdits"
allowed_tools = ["Bash"]
env = {{ DB_PASSWORD = "{CANARY_BATCH}", ACME_LICENSE = "{CANARY_USER}" }}

[[instances]]
name = "agent"
prompt = "echo {CANARY_USER}"

[[instances]]
name = "printer"
argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(PRINTER)}]
"""


@pytest.fixture
def canary_env():
    return {"ANTHROPIC_API_KEY": CANARY_ENV, "ORCHESTRATOR_PEX_SECRET_NAMES": "ACME_LICENSE",
            "AGENT_SIM_SCENARIO": "tool-use"}


def test_canaries_reach_no_output_and_no_file(cli, fake_claude, tmp_path, canary_env):
    batch = tmp_path / "batch.toml"
    batch.write_text(batch_text(fake_claude))
    proc = cli("run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"), env=canary_env, timeout=120)
    assert proc.returncode == 1, proc.stderr.decode(errors="replace")  # the printer fails on purpose
    doc = json.loads(proc.stdout)
    statuses = {r["name"]: r["status"] for r in doc["instances"]}
    assert statuses == {"agent": "succeeded", "printer": "failed"}
    assert leaks(proc.stdout) == [] and leaks(proc.stderr) == []

    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != batch]
    assert written, "the run wrote no files"
    for path in written:
        assert leaks(path.read_bytes()) == [], f"secret value in {path.relative_to(tmp_path)}"

    # Not vacuous: the lines around the secrets were kept, masked.
    logs = b"".join(p.read_bytes() for p in written if p.parent.name == "logs")
    assert b"key=***" in logs and b"pw=***" in logs and b"lic=***" in logs
    agent = next(r for r in doc["instances"] if r["name"] == "agent")
    assert agent["result"] == "Done: echo ***"


def test_dry_run_masks_secret_values(cli, fake_claude, tmp_path, canary_env):
    batch = tmp_path / "batch.toml"
    batch.write_text(batch_text(fake_claude))
    proc = cli("run", str(batch), "--dry-run", env=canary_env)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = proc.stdout + proc.stderr
    assert leaks(out) == []
    assert b"DB_PASSWORD" in out


def test_batch_copy_holds_no_secret_values(cli, fake_claude, tmp_path, canary_env):
    batch = tmp_path / "batch.toml"
    batch.write_text(batch_text(fake_claude))
    cli("run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"), env=canary_env, timeout=120)
    copies = [p for p in (tmp_path / "runs").rglob(batch.name) if p.is_file()]
    assert copies
    for path in copies:
        assert leaks(path.read_bytes()) == [], f"secret value in {path.relative_to(tmp_path)}"
