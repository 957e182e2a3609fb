"""Plan and preflight: the exact argv of each instance, paths, and the checks made before anything starts.

Argv building is checked in-process against exact tuples; preflight and ``--dry-run`` run the real command line and
check that a refused run creates nothing (no run directory) and starts nothing (an agent that records its calls).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from orchestrator_pex.config import parse_batch
from orchestrator_pex.errors import UsageError
from orchestrator_pex.plan import claude_argv, make_plan, preflight, resolve_agent
from tests.support.components import require

AGENT = "/opt/claude/bin/claude"


def plan_of(text: str, path: str = "/srv/jobs/batch.toml", claude=None):
    return make_plan(parse_batch(text.encode(), path), claude)


def test_claude_argv_exact_with_every_option():
    plan = plan_of(f"""
claude = "{AGENT}"
[defaults]
model = "claude-sonnet-4-5"
permission_mode = "acceptEdits"
allowed_tools = ["Bash(git log:*)", "Read"]
disallowed_tools = ["WebFetch"]
max_turns = 7
append_system_prompt = "be brief"
[[instances]]
name = "a"
prompt = "fix the tests"
session_id = "0d6f0b1e-3c1b-4a53-9b33-1c1e0f4d2a10"
""")
    (launch,) = plan.launches
    assert launch.kind == "claude"
    assert launch.argv == (
        AGENT, "-p", "fix the tests", "--output-format", "stream-json", "--verbose",
        "--model", "claude-sonnet-4-5", "--permission-mode", "acceptEdits", "--max-turns", "7",
        "--session-id", "0d6f0b1e-3c1b-4a53-9b33-1c1e0f4d2a10", "--append-system-prompt", "be brief",
        "--allowedTools", "Bash(git log:*),Read", "--disallowedTools", "WebFetch",
    )


def test_claude_argv_minimal_and_resume():
    # "abc" is not a UUID: Claude Code gets the stable uuid5 of it (see test_agents.py for the derivation)
    plan = plan_of(f'claude = "{AGENT}"\n[[instances]]\nname = "a"\nprompt = "/review"\nresume = "abc"\n')
    assert plan.launches[0].argv == (AGENT, "-p", "/review", "--output-format", "stream-json", "--verbose",
                                     "--resume", "fba5b97c-27cc-54d5-a398-b8217b439e6b")


def test_prompt_starting_with_dash_goes_after_double_dash():
    plan = plan_of(f'claude = "{AGENT}"\n[[instances]]\nname = "a"\nprompt = "--help me"\nmodel = "m"\n')
    argv = plan.launches[0].argv
    assert argv == (AGENT, "-p", "--output-format", "stream-json", "--verbose", "--model", "m", "--", "--help me")


def test_instance_values_override_defaults_in_argv():
    plan = plan_of(f"""
claude = "{AGENT}"
[defaults]
model = "claude-sonnet-4-5"
allowed_tools = ["Read"]
[[instances]]
name = "a"
prompt = "p"
model = "claude-opus-4-1"
allowed_tools = []
""")
    argv = plan.launches[0].argv
    assert argv[argv.index("--model") + 1] == "claude-opus-4-1"
    assert "--allowedTools" not in argv


def test_generic_argv_passthrough_and_env():
    plan = plan_of(f"""
claude = "{AGENT}"
[defaults]
model = "ignored-for-generic"
env = {{ A = "1" }}
[[instances]]
name = "g"
argv = ["/usr/bin/env", "-0", "--weird arg", "$HOME", "a;b"]
env = {{ B = "2" }}
""")
    (launch,) = plan.launches
    assert launch.kind == "generic"
    assert launch.argv == ("/usr/bin/env", "-0", "--weird arg", "$HOME", "a;b")
    assert launch.env_add == {"A": "1", "B": "2"}


def test_relative_cwd_resolves_against_batch_folder(tmp_path):
    plan = plan_of("""
[[instances]]
name = "rel"
argv = ["/bin/true"]
cwd = "work/sub"
[[instances]]
name = "up"
argv = ["/bin/true"]
cwd = "../other"
[[instances]]
name = "abs"
argv = ["/bin/true"]
cwd = "/var/tmp"
[[instances]]
name = "none"
argv = ["/bin/true"]
""", path="/srv/jobs/batch.toml")
    assert [launch.cwd for launch in plan.launches] == ["/srv/jobs/work/sub", "/srv/other", "/var/tmp", None]


def test_defaults_cwd_also_resolves_against_batch_folder():
    plan = plan_of('[defaults]\ncwd = "w"\n[[instances]]\nname = "a"\nargv = ["/bin/true"]\n', path="/b/x.toml")
    assert plan.launches[0].cwd == "/b/w"


def test_agent_resolution(tmp_path, monkeypatch):
    assert resolve_agent("bin/claude", "/srv/jobs") == ("/srv/jobs/bin/claude",)
    assert resolve_agent("/abs/claude", "/srv/jobs") == ("/abs/claude",)
    assert resolve_agent("no-such-agent-xyz", "/srv/jobs") == ("no-such-agent-xyz",)
    tool = tmp_path / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert resolve_agent("mytool", "/srv/jobs") == (str(tool),)
    sim = resolve_agent("@agent-sim", "/srv/jobs")
    assert sim[0] == sys.executable and sim[-1] == "agent-sim"


def test_command_line_claude_is_relative_to_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    plan = plan_of('claude = "batchdir/claude"\n[[instances]]\nname = "a"\nprompt = "p"\n', claude="mine/claude")
    assert plan.agent == (str(tmp_path / "mine" / "claude"),)
    plan = plan_of('claude = "batchdir/claude"\n[[instances]]\nname = "a"\nprompt = "p"\n')
    assert plan.agent == ("/srv/jobs/batchdir/claude",)


def test_claude_argv_function_directly():
    from orchestrator_pex.config import Instance

    inst = Instance(name="x", prompt="-", allowed_tools=("A", "B"))
    assert claude_argv(("c",), inst) == ("c", "-p", "--output-format", "stream-json", "--verbose",
                                         "--allowedTools", "A,B", "--", "-")


# -- preflight ---------------------------------------------------------------------------------------------------------


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def _one_line_exit_2(proc, *fragments):
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and proc.stdout == b""
    for fragment in fragments:
        assert fragment in err, err


def test_missing_agent_exit_2_and_nothing_created(cli, write_batch, tmp_path):
    path = write_batch('claude = "/nonexistent/claude"\n[[instances]]\nname = "a"\nprompt = "p"\n')
    proc = cli("run", str(path), "--json", "--results-dir", str(tmp_path / "runs"))
    _one_line_exit_2(proc, "agent executable not found: /nonexistent/claude")
    assert len(proc.stderr.decode().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_agent_failing_version_exit_2(cli, write_batch, tmp_path):
    _script(tmp_path / "broken", "import sys\nsys.exit(4)\n")
    path = write_batch('claude = "./broken"\n[[instances]]\nname = "a"\nprompt = "p"\n')
    proc = cli("run", str(path), "--results-dir", str(tmp_path / "runs"))
    _one_line_exit_2(proc, "agent failed `--version` (exit status 4)")
    assert not (tmp_path / "runs").exists()


def test_agent_not_answering_version_in_time(tmp_path):
    _script(tmp_path / "slow", "import time\ntime.sleep(30)\n")
    plan = plan_of(f'claude = "{tmp_path}/slow"\n[[instances]]\nname = "a"\nprompt = "p"\n',
                   path=str(tmp_path / "b.toml"))
    with pytest.raises(UsageError, match="did not answer --version within 0.5s"):
        preflight(plan, timeout=0.5)


def test_preflight_lists_every_problem(cli, write_batch, tmp_path):
    path = write_batch("""
[[instances]]
name = "a"
argv = ["/nonexistent/prog"]
[[instances]]
name = "b"
argv = ["/bin/true"]
cwd = "missing-dir"
""")
    proc = cli("run", str(path), "--results-dir", str(tmp_path / "runs"))
    _one_line_exit_2(proc, "orchestrator-pex: batch.toml: instances[0].argv: program not found or not executable: "
                     "/nonexistent/prog", f"instances[1].cwd: no such directory: {tmp_path}/missing-dir")
    assert len(proc.stderr.decode().splitlines()) == 2  # one line each, every line FILE: KEY: message
    lines = proc.stderr.decode().splitlines()
    assert all(line.startswith("orchestrator-pex: batch.toml: instances[") for line in lines)
    assert not (tmp_path / "runs").exists()


def test_only_generic_instances_need_no_agent(run_batch, write_batch):
    path = write_batch('claude = "/nonexistent/claude"\n[[instances]]\nname = "g"\nargv = ["/bin/true"]\n')
    res = run_batch(path)
    assert res.code == 0, res.stderr
    assert res.doc["agent_version"] is None
    assert res.inst("g")["status"] == "succeeded"


def test_agent_version_recorded_in_results(run_batch, write_batch):
    path = write_batch('claude = {claude}\n[[instances]]\nname = "a"\nprompt = "p"\n'
                       'env = { AGENT_SIM_SCENARIO = "ok" }\n')
    res = run_batch(path)
    assert res.code == 0, res.stderr
    assert res.doc["agent_version"] == "2.1.330 (agent-sim, orchestrator-pex demo agent)"
    with open(os.path.join(res.doc["run_dir"], "results.json")) as f:
        assert json.load(f)["agent_version"] == res.doc["agent_version"]


def test_builtin_demo_agent_runs(run_batch, write_batch):
    path = write_batch('claude = "@agent-sim"\n[[instances]]\nname = "a"\nprompt = "hello demo"\n'
                       'env = { AGENT_SIM_SCENARIO = "ok" }\n')
    res = run_batch(path)
    assert res.code == 0, res.stderr
    assert res.inst("a")["result"] == "Done: hello demo"


def test_dash_prompt_reaches_the_agent(run_batch, write_batch):
    path = write_batch('claude = {claude}\n[[instances]]\nname = "a"\nprompt = "-v --not-an-option"\n'
                       'env = { AGENT_SIM_SCENARIO = "ok" }\n')
    res = run_batch(path)
    assert res.code == 0, res.stderr
    assert res.inst("a")["result"] == "Done: -v --not-an-option"


def test_bypass_permissions_as_root_refused(cli, write_batch, tmp_path):
    require(os.geteuid() == 0, "the refusal applies to root: this test must run as root")
    path = write_batch('claude = {claude}\n[[instances]]\nname = "ok"\nprompt = "p"\n'
                       '[[instances]]\nname = "yolo"\nprompt = "p"\npermission_mode = "bypassPermissions"\n')
    proc = cli("run", str(path), "--json", "--results-dir", str(tmp_path / "runs"))
    _one_line_exit_2(proc, "instances[1].permission_mode: bypassPermissions cannot be used as root")
    assert not (tmp_path / "runs").exists()


def test_dry_run_prints_argv_and_redacted_env_and_starts_nothing(cli, tmp_path):
    calls = tmp_path / "calls.log"
    agent = _script(tmp_path / "agent", f"open({str(calls)!r}, 'a').write('called\\n')\nprint('1.0')\n")
    path = tmp_path / "batch.toml"
    path.write_text(f"""
claude = "{agent}"
[defaults]
env = {{ API_TOKEN = "canary-defaults-7f3a", ANTHROPIC_API_KEY = "sk-ant-canary-9c1e" }}
[[instances]]
name = "one"
prompt = "do the thing"
model = "claude-sonnet-4-5"
env = {{ API_TOKEN = "canary-instance-51d2", PLAIN = "visible-value" }}
timeout = 30
[[instances]]
name = "two"
argv = ["/bin/echo", "hello world"]
cwd = "."
""")
    proc = cli("run", str(path), "--dry-run", "--results-dir", str(tmp_path / "runs"))
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "canary" not in out + err
    plan = make_plan(parse_batch(path.read_bytes(), str(path)))
    lines = out.splitlines()
    for launch in plan.launches:
        assert f"  argv: {shlex.join(launch.argv)}" in lines
    assert "  env:  API_TOKEN=***" in lines
    assert "  env:  ANTHROPIC_API_KEY=***" in lines
    assert "  env:  PLAIN=visible-value" in lines
    assert f"  cwd:  {tmp_path}" in lines
    assert not calls.exists()  # not even --version was asked
    assert not (tmp_path / "runs").exists()


# -- placeholders filled through the agent's dialect (graph x agents) ------------------------------------------------


def test_filled_rebuilds_argv_through_each_agents_dialect_and_maps_a_filled_session_name():
    from orchestrator_pex.agents import session_uuid
    from orchestrator_pex.plan import FillError, filled

    plan = plan_of(f"""
claude = "{AGENT}"
codex = "/opt/codex"
gemini = "/opt/gemini"
[[instances]]
name = "plan step/1"
prompt = "plan"
[[instances]]
name = "claude-next"
prompt = "go on: {{{{plan step/1.result}}}}"
needs = ["plan step/1"]
resume = "{{{{plan step/1.session_id}}}}"
[[instances]]
name = "codex-next"
agent = "codex"
prompt = "go on"
needs = ["plan step/1"]
resume = "{{{{plan step/1.session_id}}}}"
[[instances]]
name = "gemini-next"
agent = "gemini"
prompt = "go on"
needs = ["plan step/1"]
resume = "{{{{plan step/1.session_id}}}}"
""")
    # before filling, the argv shows the placeholder as written (mapped only once filled)
    assert all("{{plan step/1.session_id}}" in one.argv for one in plan.launches[1:])
    records = {"plan step/1": {"session_id": "not a uuid", "result": "the plan", "status": "succeeded"}}
    claude, codex, gemini = (filled(plan, one, records) for one in plan.launches[1:])
    # Claude Code takes only UUIDs: the filled value is mapped after filling
    assert claude.argv[claude.argv.index("--resume") + 1] == session_uuid("not a uuid")
    assert "go on: the plan" in claude.argv and claude.argv[0] == AGENT
    # Codex and Gemini: their own dialect's argv (not Claude's), with their own executables
    assert codex.argv[0] == "/opt/codex" and codex.argv[codex.argv.index("resume") + 1] == "not a uuid"
    assert gemini.argv[0] == "/opt/gemini" and gemini.argv[gemini.argv.index("--resume") + 1] == "not a uuid"
    assert codex.env_add == plan.launches[2].env_add and gemini.env_add == plan.launches[3].env_add
    # a filled value that would read as an option is refused (the instance fails), never passed
    hostile = {"plan step/1": {"session_id": "--dangerously-bypass-approvals-and-sandbox", "status": "succeeded"}}
    for one in plan.launches[2:]:
        with pytest.raises(FillError, match="starts with"):
            filled(plan, one, hostile)
    mapped = filled(plan, plan.launches[1], hostile)
    assert mapped.argv[mapped.argv.index("--resume") + 1] == session_uuid("--dangerously-bypass-approvals-and-sandbox")
