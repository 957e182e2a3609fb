"""``orchestrator-pex run``: the results document contract, stdout discipline, run directory, exit statuses.

The results document is what scripts rely on: ``run --json`` prints exactly it on stdout (nothing else) and the
same document is in ``<results-dir>/<run_id>/results.json``, written atomically.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_pex import results

RUN_KEYS = {"run_id", "batch", "started_at", "finished_at", "status", "totals", "instances"}
INSTANCE_KEYS = {
    "name", "status", "exit_code", "started_at", "finished_at", "duration_s", "attempts", "tokens", "cost_usd",
    "cost_source", "model", "tools", "session_id", "num_turns", "result", "error", "api_error_status",
    "stdout_log", "stderr_log",
}
TOKEN_KEYS = {"input", "output", "cache_creation", "cache_read", "total"}
FAKE = Path(__file__).resolve().parent / "support" / "fake_claude"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

BATCH = """
claude = {claude}
concurrency = 4
grace_period = 0.5
[defaults]
timeout = 30
env = { API_TOKEN = "canary-4b1d9e", ANTHROPIC_API_KEY = "sk-ant-canary-77aa" }
[[instances]]
name = "alpha"
prompt = "first task"
env = { AGENT_SIM_SCENARIO = "tool-use" }
[[instances]]
name = "beta"
prompt = "second task"
model = "claude-haiku-4-5"
env = { AGENT_SIM_SCENARIO = "ok" }
[[instances]]
name = "gamma"
argv = ["/bin/true"]
"""


class _Res:
    def __init__(self, proc):
        self.code, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.doc = json.loads(proc.stdout)


@pytest.fixture(scope="module")
def ok_run(tmp_path_factory, make_cli_env):
    """One successful run shared by the contract tests (read-only)."""
    base = tmp_path_factory.mktemp("okrun")
    path = base / "batch.toml"
    path.write_text(BATCH.replace("{claude}", json.dumps(str(FAKE))))
    proc = subprocess.run([sys.executable, "-m", "orchestrator_pex", "run", str(path), "--json", "--results-dir",
                           str(base / "runs")], cwd=base, env=make_cli_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=120)
    return path, _Res(proc)


def test_all_succeeded_exit_0_and_full_contract(ok_run):
    path, res = ok_run
    assert res.code == 0, res.stderr
    doc = res.doc
    assert RUN_KEYS <= set(doc)
    assert doc["status"] == "succeeded" and doc["batch"] == str(path)
    assert ISO.match(doc["started_at"]) and ISO.match(doc["finished_at"])
    assert [r["name"] for r in doc["instances"]] == ["alpha", "beta", "gamma"]  # batch order
    for r in doc["instances"]:
        assert INSTANCE_KEYS <= set(r), INSTANCE_KEYS - set(r)
        assert r["status"] in results.STATUSES
        assert set(r["tokens"]) == TOKEN_KEYS
        assert r["tokens"]["total"] == sum(r["tokens"][k] for k in TOKEN_KEYS - {"total"})
        assert ISO.match(r["started_at"]) and ISO.match(r["finished_at"])
        assert r["started_at"] <= r["finished_at"] and r["duration_s"] >= 0
        assert r["attempts"] == 1
    alpha, beta, gamma = doc["instances"]
    assert alpha["cost_source"] == "result" and alpha["tools"] == {"Bash": 1} and alpha["num_turns"] == 2
    assert beta["model"] == "claude-haiku-4-5" and beta["tools"] == {}
    assert gamma["cost_source"] is None and gamma["session_id"] is None and gamma["exit_code"] == 0


def test_totals_are_the_sum_of_instances(ok_run):
    _, res = ok_run
    doc = res.doc
    totals = doc["totals"]
    assert totals["instances"] == 3
    assert totals["by_status"] == {s: (3 if s == "succeeded" else 0) for s in results.STATUSES}
    for key in TOKEN_KEYS:
        assert totals["tokens"][key] == sum(r["tokens"][key] for r in doc["instances"])
    assert totals["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in doc["instances"]))
    assert totals["tools"] == {"Bash": 1}


def test_stdout_is_exactly_the_document_and_equals_results_json(ok_run):
    _, res = ok_run
    text = res.stdout.decode("utf-8")
    assert text.lstrip().startswith("{") and text.rstrip().endswith("}")
    assert json.loads(text) == res.doc  # json.loads refuses anything after the document
    run_dir = res.doc["run_dir"]
    with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
        assert json.load(f) == res.doc
    leftovers = [n for n in os.listdir(run_dir) if n.startswith(".results.") or n.endswith(".tmp")]
    assert leftovers == []
    assert b"results:" in res.stderr  # the human summary went to stderr


def test_run_directory_layout(ok_run):
    path, res = ok_run
    run_id, run_dir = res.doc["run_id"], res.doc["run_dir"]
    assert re.match(r"^\d{8}T\d{6}Z-batch-[0-9a-f]{4}$", run_id)
    assert run_dir == str(path.parent / "runs" / run_id)
    assert sorted(os.listdir(os.path.join(run_dir, "logs"))) == sorted(
        f"{n}.{s}" for n in ("alpha", "beta", "gamma") for s in ("stdout", "stderr"))
    with open(os.path.join(run_dir, "batch.toml"), "rb") as f:  # the batch that ran, its secret values masked
        masked = path.read_bytes().replace(b"canary-4b1d9e", b"***").replace(b"sk-ant-canary-77aa", b"***")
        assert f.read() == masked


def test_secrets_never_reach_output_results_or_logs(ok_run):
    _, res = ok_run
    assert res.code == 0
    blobs = [res.stdout, res.stderr]
    for root, _, files in os.walk(res.doc["run_dir"]):
        for name in files:
            if name == "batch.toml":
                continue  # the user's own file, copied verbatim
            with open(os.path.join(root, name), "rb") as f:
                blobs.append(f.read())
    for blob in blobs:
        assert b"canary" not in blob


def test_some_instance_failed_exit_1(run_batch, write_batch):
    path = write_batch('claude = {claude}\n[[instances]]\nname = "ok"\nprompt = "p"\n'
                       'env = { AGENT_SIM_SCENARIO = "ok" }\n'
                       '[[instances]]\nname = "bad"\nargv = ["/bin/false"]\n')
    res = run_batch(path)
    assert res.code == 1
    assert res.doc["status"] == "failed" and res.doc["exit_status"] == 1
    assert res.statuses() == {"ok": "succeeded", "bad": "failed"}
    assert res.doc["totals"]["by_status"]["failed"] == 1


def test_json_logs_with_json_keeps_stdout_clean(run_batch, write_batch):
    path = write_batch(BATCH)
    res = run_batch(path, "--json-logs")
    assert res.code == 0
    assert json.loads(res.stdout) == res.doc
    events = [json.loads(line) for line in res.stderr.decode().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("instance_started") == 3 and kinds.count("instance_finished") == 3


def test_results_dir_from_environment_and_default(cli, write_batch, tmp_path):
    path = write_batch('[[instances]]\nname = "g"\nargv = ["/bin/true"]\n')
    proc = cli("run", str(path), "--json", env={"ORCHESTRATOR_PEX_RESULTS_DIR": str(tmp_path / "from-env")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run_dir"].startswith(str(tmp_path / "from-env") + os.sep)
    proc = cli("run", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run_dir"].startswith(str(tmp_path / "orchestrator-runs") + os.sep)


def test_batch_results_dir_is_relative_to_the_batch_file(cli, tmp_path):
    sub = tmp_path / "jobs"
    sub.mkdir()
    (sub / "batch.toml").write_text('results_dir = "out"\n[[instances]]\nname = "g"\nargv = ["/bin/true"]\n')
    proc = cli("run", str(sub / "batch.toml"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run_dir"].startswith(str(sub / "out") + os.sep)


@pytest.mark.parametrize("args", [["--concurrency", "0"], ["--concurrency", "two"], ["--deadline", "-1"],
                                  ["--stagger", "nan"], ["--no-such-flag"]])
def test_bad_command_line_exit_2(cli, write_batch, tmp_path, args):
    path = write_batch('[[instances]]\nname = "g"\nargv = ["/bin/true"]\n')
    proc = cli("run", str(path), "--results-dir", str(tmp_path / "runs"), *args)
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr and proc.stdout == b""
    assert not (tmp_path / "runs").exists()


def test_version_and_no_command(cli):
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.decode().startswith("orchestrator-pex ")
    proc = cli()
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr


def test_init_writes_valid_batches_and_never_overwrites(cli, tmp_path, fake_claude):
    proc = cli("init", str(tmp_path / "b.toml"))
    assert proc.returncode == 0, proc.stderr
    assert cli("validate", str(tmp_path / "b.toml"), "--claude", fake_claude, "--codex", fake_claude,
               "--gemini", fake_claude).returncode == 0  # validate checks each agent too: one that answers --version
    before = (tmp_path / "b.toml").read_bytes()
    proc = cli("init", str(tmp_path / "b.toml"), "--demo")
    assert proc.returncode == 2 and b"already exists" in proc.stderr
    assert (tmp_path / "b.toml").read_bytes() == before
    assert cli("init", str(tmp_path / "demo.toml"), "--demo").returncode == 0
    proc = cli("validate", str(tmp_path / "demo.toml"))
    assert proc.returncode == 0 and b"10 instances (8 claude, 1 codex, 1 gemini)" in proc.stdout
    proc = cli("init", "-")
    assert proc.returncode == 0 and proc.stdout == before


# -- atomic write, in process ------------------------------------------------------------------------------------------


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    results.write_atomic(str(target), {"v": 1})
    assert json.loads(target.read_text()) == {"v": 1}

    def broken_dump(obj, f, **kwargs):
        f.write('{"v": 2, "half')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.strictjson, "dump", broken_dump)
    from orchestrator_pex.errors import RunDirError

    with pytest.raises(RunDirError, match="results.json: cannot write: No space left on device"):
        results.write_atomic(str(target), {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_not_started_record_and_document_shape():
    rec = results.not_started("x", "why")
    doc = results.build_document({"run_id": "r", "batch": "b", "started_at": None, "finished_at": None,
                                  "status": "failed"}, [rec])
    assert list(doc)[:6] == ["schema_version", "run_id", "batch", "started_at", "finished_at", "status"]
    assert json.loads(json.dumps(doc)) == doc
    assert doc["totals"]["by_status"]["not-started"] == 1
    assert INSTANCE_KEYS <= set(rec) and rec["attempts"] == 0 and rec["error"] == "why"


def test_results_dir_that_cannot_be_created_exit_2(cli, write_batch, tmp_path):
    (tmp_path / "a-file").write_text("")
    path = write_batch('[[instances]]\nname = "g"\nargv = ["/bin/true"]\n')
    proc = cli("run", str(path), "--json", "--results-dir", str(tmp_path / "a-file" / "runs"))
    assert proc.returncode == 2 and proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "cannot create the run directory" in lines[0] and "Not a directory" in lines[0]
