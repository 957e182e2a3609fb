"""Policy holds on what actually runs (issue 9, part 6): resolved executables and directories, the agent executable,
one tool per tools entry, forbidden tools passed on as --disallowedTools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator_pex import policy as pol
from orchestrator_pex import tools
from orchestrator_pex.config import parse_batch
from orchestrator_pex.errors import ConfigError
from orchestrator_pex.plan import make_plan

FAKE = str(Path(__file__).resolve().parent / "support" / "fake_claude")


def _batch(tmp_path, text):
    path = tmp_path / "batch.toml"
    path.write_text(textwrap.dedent(text))
    return parse_batch(path.read_bytes(), str(path))


def _policy(tmp_path, text):
    path = tmp_path / "policy.toml"
    path.write_text(textwrap.dedent(text))
    return pol.load_policy(str(path))


def _tool(directory: Path, name: str, body: str = "exit 0") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _violations(tmp_path, policy_text, batch_text):
    b = _batch(tmp_path, batch_text)
    return pol.check(_policy(tmp_path, policy_text), b, "batch.toml", plan=make_plan(b))


def test_dotdot_inside_an_allowed_glob_is_resolved_before_matching(tmp_path):
    _tool(tmp_path / "tools", "ok")
    allowed = f'allowed_executables = ["{tmp_path}/tools/*"]'
    assert _violations(tmp_path, allowed, f'[[instances]]\nname = "a"\nargv = ["{tmp_path}/tools/ok"]\n') == []
    walk = f"{tmp_path}/tools/../../../../../../../../bin/sh"
    found = _violations(tmp_path, allowed, f'[[instances]]\nname = "a"\nargv = ["{walk}"]\n')
    assert len(found) == 1 and found[0].startswith("batch.toml: instances[0].argv[0]: ")
    assert os.path.realpath("/bin/sh") in found[0] and "not allowed by policy" in found[0]


def test_a_symlink_in_an_allowed_directory_is_judged_by_its_target(tmp_path):
    (tmp_path / "tools").mkdir()
    os.symlink("/bin/sh", tmp_path / "tools" / "innocent")
    found = _violations(tmp_path, f'allowed_executables = ["{tmp_path}/tools/*"]',
                        f'[[instances]]\nname = "a"\nargv = ["{tmp_path}/tools/innocent"]\n')
    assert len(found) == 1 and "instances[0].argv[0]" in found[0]


def test_a_pattern_naming_a_link_still_allows_the_link(tmp_path):
    real = _tool(tmp_path / "real", "python3.99")
    (tmp_path / "bin").mkdir()
    os.symlink(real, tmp_path / "bin" / "python3")
    assert _violations(tmp_path, f'allowed_executables = ["{tmp_path}/bin/python3"]',
                       f'[[instances]]\nname = "a"\nargv = ["{tmp_path}/bin/python3"]\n') == []


def test_the_instance_path_decides_which_program_is_checked_and_run(tmp_path):
    good = _tool(tmp_path / "good", "mytool")
    evil = _tool(tmp_path / "evil", "mytool")
    allowed = f'allowed_executables = ["{tmp_path}/good/*"]'
    text = f'[[instances]]\nname = "a"\nargv = ["mytool"]\nenv = {{ PATH = "{good.parent}" }}\n'
    assert _violations(tmp_path, allowed, text) == []
    assert make_plan(_batch(tmp_path, text)).launches[0].argv[0] == str(good)
    text = f'[[instances]]\nname = "a"\nargv = ["mytool"]\nenv = {{ PATH = "{evil.parent}:{good.parent}" }}\n'
    assert make_plan(_batch(tmp_path, text)).launches[0].argv[0] == str(evil)  # what the child would exec
    found = _violations(tmp_path, allowed, text)
    assert len(found) == 1 and str(evil) in found[0]


def test_a_program_that_cannot_be_found_is_not_allowed(tmp_path):
    found = _violations(tmp_path, 'allowed_executables = ["*"]',
                        '[[instances]]\nname = "a"\nargv = ["no-such-program-xyz"]\nenv = { PATH = "/nonexistent" }\n')
    assert len(found) == 1 and "(not found)" in found[0]


def test_the_agent_executable_is_covered(tmp_path):
    text = '[[instances]]\nname = "a"\nprompt = "p"\n'
    found = _violations(tmp_path, 'allowed_executables = ["/usr/bin/python3"]', 'claude = "/bin/bash"\n' + text)
    assert len(found) == 1 and found[0].startswith('batch.toml: claude: agent executable "/bin/bash')
    assert "not allowed by policy" in found[0]
    assert _violations(tmp_path, f'allowed_executables = ["{FAKE}"]', f"claude = {json.dumps(FAKE)}\n" + text) == []
    # the built-in demo agent is this orchestrator's own code
    assert _violations(tmp_path, 'allowed_executables = ["/usr/bin/python3"]', 'claude = "@agent-sim"\n' + text) == []
    # only generic instances: the agent is never run, so not checked
    assert _violations(tmp_path, 'allowed_executables = ["/bin/*", "/usr/bin/*"]',
                       'claude = "/nonexistent"\n[[instances]]\nname = "g"\nargv = ["/bin/true"]\n') == []


def test_cwd_is_resolved_and_the_instance_runs_in_the_resolved_directory(tmp_path):
    (tmp_path / "work").mkdir()
    os.symlink("/etc", tmp_path / "work" / "escape")
    allowed = f'allowed_cwd_prefixes = ["{tmp_path}/work"]'
    text = '[[instances]]\nname = "a"\nargv = ["/bin/true"]\ncwd = "work/escape"\n'
    found = _violations(tmp_path, allowed, text)
    assert len(found) == 1 and "instances[0].cwd" in found[0]
    assert make_plan(_batch(tmp_path, text)).launches[0].cwd == os.path.realpath("/etc")


@pytest.mark.parametrize("spec", ["Read", "Bash(git diff:*)", "Bash(npm run test, lint)", "mcp__github__get_issue",
                                  "WebFetch(domain:example.com)", "Edit(/src/**)"])
def test_single_tool_entries_are_valid(spec):
    assert tools.problem(spec) is None


@pytest.mark.parametrize("spec", ["Read,Bash", "Read Bash", "Read\tBash", " Read", "Bash(git", "Bash)",
                                  "Bash(a(b) c)", "Bash(x) Read", "Bash(x),Read", "", "Read\n"])
def test_entries_the_cli_would_split_are_refused_at_validation(tmp_path, spec):
    assert tools.problem(spec) is not None
    for key in ("allowed_tools", "disallowed_tools"):
        with pytest.raises(ConfigError) as info:
            _batch(tmp_path, f'[[instances]]\nname = "a"\nprompt = "p"\n{key} = [{json.dumps(spec)}]\n')
        assert info.value.key == f"instances[0].{key}[0]"
    with pytest.raises(ConfigError) as info:
        _batch(tmp_path, f'[defaults]\nallowed_tools = ["Read", {json.dumps(spec)}]\n'
                         '[[instances]]\nname = "a"\nprompt = "p"\n')
    assert info.value.key == "defaults.allowed_tools[1]"


def test_a_smuggled_tool_no_longer_passes_a_forbidding_policy(tmp_path):
    with pytest.raises(ConfigError):
        _batch(tmp_path, '[[instances]]\nname = "a"\nprompt = "p"\nallowed_tools = ["Read,Bash"]\n')


@pytest.mark.parametrize("spec", ["Bash,Read", "Bash Read", "Bash(git:*)"])
def test_policy_forbidden_tools_are_plain_names(tmp_path, spec):
    with pytest.raises(ConfigError) as info:
        _policy(tmp_path, f"forbidden_tools = [{json.dumps(spec)}]")
    assert info.value.key == "forbidden_tools"


def _cli(*args, cwd, env=None):
    env = dict(env or os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return subprocess.run([sys.executable, "-m", "orchestrator_pex", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120)


def test_dry_run_shows_the_resolved_program_and_the_policy_disallowed_tools(tmp_path):
    tool = _tool(tmp_path / "bin", "mytool")
    (tmp_path / "batch.toml").write_text(textwrap.dedent(f"""
        claude = {json.dumps(FAKE)}
        [[instances]]
        name = "c"
        prompt = "p"
        disallowed_tools = ["Write"]
        [[instances]]
        name = "g"
        argv = ["mytool", "x"]
        env = {{ PATH = "{tool.parent}" }}
    """))
    (tmp_path / "policy.toml").write_text('forbidden_tools = ["WebFetch", "Write"]\n')
    out = _cli("run", "batch.toml", "--dry-run", "--policy", "policy.toml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    assert f"argv: {tool} x" in text
    assert "--disallowedTools Write,WebFetch" in text


def test_the_executed_program_is_the_one_the_policy_checked(tmp_path):
    marker = tmp_path / "marker"
    good = _tool(tmp_path / "good", "mytool", f'echo good >> "{marker}"')
    _tool(tmp_path / "evil", "mytool", f'echo evil >> "{marker}"')
    (tmp_path / "batch.toml").write_text(textwrap.dedent(f"""
        [[instances]]
        name = "g"
        argv = ["mytool"]
        env = {{ PATH = "{good.parent}" }}
    """))
    (tmp_path / "policy.toml").write_text(f'allowed_executables = ["{tmp_path}/good/*"]\n')
    env = dict(os.environ, PATH=f"{tmp_path / 'evil'}:{os.environ.get('PATH', '')}")  # the orchestrator's PATH
    out = _cli("run", "batch.toml", "--policy", "policy.toml", "--results-dir", str(tmp_path / "runs"),
               cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr.decode()
    assert marker.read_text() == "good\n"
    # an instance PATH that puts the other program first is refused before anything starts
    (tmp_path / "batch.toml").write_text(textwrap.dedent(f"""
        [[instances]]
        name = "g"
        argv = ["mytool"]
        env = {{ PATH = "{tmp_path / 'evil'}:{good.parent}" }}
    """))
    marker.unlink()
    out = _cli("run", "batch.toml", "--policy", "policy.toml", "--results-dir", str(tmp_path / "runs"),
               cwd=tmp_path, env=env)
    assert out.returncode == 2 and b"Traceback" not in out.stderr
    assert b"instances[0].argv[0]" in out.stderr
    assert not marker.exists()
