"""Scheduled for real: the line `schedule cron` prints, installed as an /etc/cron.d file, fires under a real cron
daemon (Debian's ``cron -f``, in a private mount namespace: see deploylib.CronDaemon) and runs a batch whose real
Claude Code CLI authenticates from the batch's env file against the mock API, which answers 401 to any other key.
The results land where the docs say (``<results-dir>/<run_id>/results.json``) and the key is nowhere in them.

The scheduled "PEX" is a zipapp of this checkout (deploylib.fake_pex) run by the test venv's interpreter, so the
test needs no PEX build; the command line is exactly the one `schedule cron` prints for it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.deploy.deploylib import REPO, CronDaemon, fake_pex
from tests.support.procs import pids_with_env

pytestmark = pytest.mark.deploy

_spec = importlib.util.spec_from_file_location("cron_mock_anthropic", REPO / "tests" / "support" / "mock_anthropic.py")
mock_anthropic = importlib.util.module_from_spec(_spec)
assert _spec.loader is not None
sys.modules[_spec.name] = mock_anthropic
_spec.loader.exec_module(mock_anthropic)


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: nothing may be skipped)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def claude_bin() -> str:
    if shutil.which("npm") is None:
        _missing("npm is not installed: cannot install the real Claude Code CLI")
    proc = subprocess.run([str(REPO / "scripts" / "install-claude")], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"scripts/install-claude failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def cron_available() -> None:
    why = CronDaemon.unavailable()
    if why:
        _missing(why)


def write_scheduled_batch(tmp: Path, claude: str, base_url: str, key: str) -> Path:
    env_file = tmp / "nightly.env"
    env_file.write_text(f"# secrets of the nightly batch\nANTHROPIC_API_KEY={key}\n")
    env_file.chmod(0o600)
    home = tmp / "agent-home"
    home.mkdir()
    batch = tmp / "nightly.toml"
    env = {"ANTHROPIC_BASE_URL": base_url, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "CLAUDE_CODE_MAX_RETRIES": "1", "DISABLE_AUTOUPDATER": "1", "HOME": str(home)}
    batch.write_text(
        f"claude = {json.dumps(claude)}\n"
        'env_file = "nightly.env"\n'
        "[defaults]\n"
        "env = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items()) + " }\n"
        "timeout = 120\n"
        "[[instances]]\n"
        'name = "nightly-check"\n'
        'prompt = "Say done. [mock:text]"\n'
        'tags = ["nightly"]\n')
    return batch


def schedule_line(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_", "ORCHESTRATOR_PEX_"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "orchestrator_pex", "schedule", "cron", *args], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def wait_for_scheduled_run(cron: CronDaemon, results: Path, pex_root: Path, timeout: float = 200) -> Path:
    """The run directory of the first run cron starts; cron is stopped as soon as one started (no second firing)
    and every process of the run is gone before this returns."""
    deadline = time.monotonic() + timeout
    run_dir = None
    while time.monotonic() < deadline:
        assert cron.alive(), (cron.scratch / "cron.out").read_text(errors="replace")
        runs = [p for p in results.glob("*") if p.is_dir()] if results.is_dir() else []
        if runs:
            run_dir = runs[0]
            break
        time.sleep(0.5)
    cron.stop()
    assert run_dir is not None, "cron did not start the scheduled run within a minute and a bit"
    doc = None
    while time.monotonic() < deadline:
        path = run_dir / "results.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = None
        if doc and doc.get("finished_at") and not pids_with_env("PEX_ROOT", str(pex_root)):
            break
        time.sleep(0.5)
    for pid in pids_with_env("PEX_ROOT", str(pex_root)):  # stragglers of the scheduled run: stop them by PID
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert doc and doc.get("finished_at"), f"the scheduled run did not finish: {run_dir}"
    return run_dir


def assert_authenticated_run(run_dir: Path, results: Path, mock, key: str, log: Path) -> None:
    assert [p.name for p in results.iterdir()] == [run_dir.name], "exactly one scheduled run"
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["status"] == "succeeded" and doc["exit_status"] == 0, json.dumps(doc, indent=1)[:3000]
    record = doc["instances"][0]
    assert record["name"] == "nightly-check" and record["status"] == "succeeded" and record["tags"] == ["nightly"]
    assert record["api_error_status"] is None and record["tokens"]["total"] > 0
    messages = [r for r in mock.records if r["kind"] == "messages"]
    assert messages and all(r["key_ok"] for r in messages), "every model request carried the env file's key"
    assert not [r for r in mock.records if r["kind"] == "rejected_key" and "/v1/messages" in r["path"]]
    for path in [*run_dir.rglob("*"), log]:
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    assert f"results: {run_dir / 'results.json'}" in log.read_text(), log.read_text()[-2000:]


def test_schedule_cron_line_fires_under_a_real_cron_daemon_and_authenticates_from_the_env_file(
        tmp_path, claude_bin, cron_available):
    key = f"sk-ant-cron-{uuid.uuid4().hex}"
    with mock_anthropic.MockAnthropic(mode="text", api_key=key) as mock:
        batch = write_scheduled_batch(tmp_path, claude_bin, mock.base_url, key)
        results, pex_root, log = tmp_path / "results", tmp_path / "pex-root", tmp_path / "cron.log"
        proc = schedule_line("--at", "* * * * *", "--user", "root", "--pex", str(fake_pex(tmp_path)),
                             "--python", sys.executable, "--results-dir", str(results), "--pex-root", str(pex_root),
                             "--env-file", str(tmp_path / "nightly.env"), "--log", str(log), str(batch))
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        line = proc.stdout.strip()
        assert "\n" not in line and key not in line and " --env-file " in line
        cron_dir = tmp_path / "cron.d"
        cron_dir.mkdir()
        entry = cron_dir / "orchestrator-pex-nightly"
        entry.write_text(line + "\n")
        entry.chmod(0o644)
        with CronDaemon(cron_dir, tmp_path) as cron:
            run_dir = wait_for_scheduled_run(cron, results, pex_root)
        assert not cron.alive()
        assert_authenticated_run(run_dir, results, mock, key, log)


def test_the_cron_file_the_ansible_role_installs_fires_and_authenticates_from_the_role_env_file(
        tmp_path, claude_bin, cron_available, ansible_bin):
    from tests.deploy.deploylib import run_playbook

    key = f"sk-ant-role-{uuid.uuid4().hex}"
    root = tmp_path / "host"
    with mock_anthropic.MockAnthropic(mode="text", api_key=key) as mock:
        batch = write_scheduled_batch(tmp_path, claude_bin, mock.base_url, key).read_text()
        batch = batch.replace('env_file = "nightly.env"\n', "")  # the role passes its own env file
        host = {
            "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
            "orchestrator_pex_pex_src": str(fake_pex(tmp_path)), "orchestrator_pex_version": "test-1",
            "orchestrator_pex_python": sys.executable,
            "orchestrator_pex_prefix": str(root / "opt"), "orchestrator_pex_config_dir": str(root / "etc"),
            "orchestrator_pex_results_dir": str(root / "results"), "orchestrator_pex_pex_root": str(root / "pex-root"),
            "orchestrator_pex_cron_dir": str(root / "cron.d"), "orchestrator_pex_cron_log": str(root / "cron.log"),
            "orchestrator_pex_secrets": {"ANTHROPIC_API_KEY": key},
            "orchestrator_pex_batches": [{"name": "nightly", "content": batch}],
            "orchestrator_pex_schedules": [{"batch": "nightly", "at": "* * * * *"}],
        }
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(json.dumps({"orchestrators": {"hosts": {"orch": host}}}))
        play = run_playbook(ansible_bin, "site.yml", inventory, tmp_path)
        assert play.rc == 0 and play.failed() == 0, play
        assert key not in play.stdout + play.stderr, "no_log: the key must not appear in Ansible's output"
        env_file = root / "etc" / "orchestrator-pex.env"
        assert env_file.stat().st_mode & 0o777 == 0o600 and env_file.stat().st_uid == os.geteuid()
        assert f"ANTHROPIC_API_KEY='{key}'" in env_file.read_text()
        again = run_playbook(ansible_bin, "site.yml", inventory, tmp_path)
        assert again.rc == 0 and again.recap["orch"]["changed"] == 0, again
        # tasks_from: run (run-now.yml) uses the same env file
        now_results = tmp_path / "now-results"
        now = run_playbook(ansible_bin, "run-now.yml", inventory, tmp_path, "-e", "batch=nightly",
                           "-e", json.dumps({"orchestrator_pex_results_dir": str(now_results)}))
        assert now.rc == 0 and now.failed() == 0, now
        assert key not in now.stdout + now.stderr
        assert "succeeded" in now.stdout.split("TASK [Report]")[1]
        mock.reset()
        entry = root / "cron.d" / "orchestrator-pex-nightly"
        text = entry.read_text()
        assert f" --env-file {env_file} " in text and key not in text
        results, pex_root = root / "results", root / "pex-root"
        with CronDaemon(root / "cron.d", tmp_path) as cron:
            run_dir = wait_for_scheduled_run(cron, results, pex_root)
        assert_authenticated_run(run_dir, results, mock, key, root / "cron.log")
