"""Dependencies (issue 13) together with the trust branch (resolved executables, forbidden tools, policy on what
really runs) and the boundary branch (one error boundary per instance): filled launches keep both guarantees."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from orchestrator_pex import internal_errors
from orchestrator_pex import plan as plan_mod
from orchestrator_pex import policy as pol
from orchestrator_pex.config import parse_batch
from orchestrator_pex.plan import filled, forbid_tools, make_plan
from orchestrator_pex.scheduler import Scheduler

PY = sys.executable


def _batch(tmp_path: Path, text: str):
    path = tmp_path / "batch.toml"
    path.write_text(textwrap.dedent(text))
    return parse_batch(path.read_bytes(), str(path))


def _tool(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_filled_claude_argv_keeps_the_policy_forbidden_tools(tmp_path):
    b = _batch(tmp_path, """
        claude = "@agent-sim"
        [[instances]]
        name = "a"
        prompt = "first"
        [[instances]]
        name = "b"
        prompt = "go on from {{a.result}}"
        disallowed_tools = ["Write"]
        needs = ["a"]
    """)
    plan = forbid_tools(make_plan(b), ["Bash", "WebFetch"])
    launch = next(one for one in plan.launches if one.name == "b")
    out = filled(plan, launch, {"a": {"result": "the answer"}})
    argv = list(out.argv)
    assert argv[argv.index("-p") + 1] == "go on from the answer"
    assert argv[argv.index("--disallowedTools") + 1] == "Write,Bash,WebFetch"


def test_filled_generic_argv_keeps_the_resolved_program(tmp_path):
    tool = _tool(tmp_path / "bin", "mytool")
    b = _batch(tmp_path, f"""
        [[instances]]
        name = "a"
        argv = ["{PY}", "-c", "pass"]
        [[instances]]
        name = "b"
        argv = ["mytool", "{{{{a.result}}}}"]
        env = {{ PATH = "{tmp_path / 'bin'}" }}
        needs = ["a"]
    """)
    plan = make_plan(b)
    launch = next(one for one in plan.launches if one.name == "b")
    assert launch.argv[0] == str(tool)
    out = filled(plan, launch, {"a": {"result": "x y $(z)"}})
    assert out.argv == (str(tool), "x y $(z)")  # the program make_plan resolved (and the policy checked)


def test_a_placeholder_in_path_is_resolved_again_once_filled(tmp_path):
    tool = _tool(tmp_path / "later", "mytool")
    b = _batch(tmp_path, f"""
        [[instances]]
        name = "a"
        argv = ["{PY}", "-c", "pass"]
        [[instances]]
        name = "b"
        argv = ["mytool"]
        env = {{ PATH = "{{{{a.result}}}}" }}
        needs = ["a"]
    """)
    plan = make_plan(b)
    launch = next(one for one in plan.launches if one.name == "b")
    out = filled(plan, launch, {"a": {"result": str(tmp_path / "later")}})
    assert out.argv == (str(tool),)
    assert plan_mod.find_program(out.argv[0], None, None) == str(tool)


def test_policy_refuses_a_placeholder_that_decides_the_program(tmp_path):
    (tmp_path / "policy.toml").write_text('allowed_executables = ["/usr/*"]\n')
    rules = pol.load_policy(str(tmp_path / "policy.toml"))
    for line in ('argv = ["{{a.result}}"]', 'argv = ["python3"]\nenv = { PATH = "{{a.result}}" }'):
        b = _batch(tmp_path, f'[[instances]]\nname = "a"\nargv = ["/usr/bin/env"]\n'
                             f'[[instances]]\nname = "b"\n{line}\nneeds = ["a"]\n')
        found = pol.check(rules, b, "batch.toml", plan=make_plan(b))
        assert len(found) == 1, found
        assert found[0].startswith(("batch.toml: instances[1].argv[0]: ", "batch.toml: instances[1].env.PATH: "))
        assert "placeholder" in found[0]


async def test_a_bug_while_filling_placeholders_ends_only_that_instance(tmp_path, monkeypatch):
    """The instance error boundary covers filling: the instance is failed (internal error), what needs it decides
    on that record (skipped), the rest of the batch runs."""
    ok = json.dumps([PY, "-c", "print('ok')"])
    text = (f'[[instances]]\nname = "a"\nargv = {ok}\n'
            f'[[instances]]\nname = "b"\nargv = {ok}\nneeds = ["a"]\n'
            f'[[instances]]\nname = "c"\nargv = {ok}\nneeds = ["b"]\n'
            f'[[instances]]\nname = "d"\nargv = {ok}\n')
    plan = make_plan(parse_batch(text.encode(), str(tmp_path / "b.toml")))
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    original = plan_mod.filled

    def faulty(p, launch, records):
        if launch.name == "b":
            raise RuntimeError("injected fill failure")
        return original(p, launch, records)

    monkeypatch.setattr(plan_mod, "filled", faulty)
    records = {r["name"]: r for r in await Scheduler(plan, str(run_dir), sinks=[]).run()}
    assert records["a"]["status"] == records["d"]["status"] == "succeeded"
    assert records["b"]["status"] == "failed" and internal_errors.is_internal(records["b"])
    assert "injected fill failure" in (run_dir / "internal-errors" / "b.txt").read_text()
    assert records["c"]["status"] == "skipped"
