"""User-facing errors are built in errors.py: one ``FILE: KEY: message`` shape, one "did you mean" helper shared by
the batch file, the site policy and the command line, and ``self verify`` through errors.py's types and exit codes."""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys

import pytest

from orchestrator_pex import errors
from orchestrator_pex.commands import self_cmd
from orchestrator_pex.config import parse_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_located_and_unknown_key():
    assert errors.located("b.toml", "instances[0].argv", "expected a list") \
        == "b.toml: instances[0].argv: expected a list"
    assert errors.located("b.toml", "", "not valid TOML") == "b.toml: not valid TOML"
    assert errors.did_you_mean("concurency", ["concurrency", "stagger"]) == "concurrency"
    assert errors.did_you_mean("zzz", ["concurrency"]) is None
    assert errors.unknown_key("stager", ["stagger", "deadline"]) == 'unknown key; did you mean "stagger"?'
    assert errors.unknown_key("zzz", ["stagger", "deadline"]) == "unknown key; expected one of stagger, deadline"
    err = errors.ConfigError("b.toml", "k", "line\nbreak")
    assert str(err) == "b.toml: k: line\\nbreak" and err.exit_status == errors.EXIT_USAGE


def test_batch_and_policy_suggest_through_the_same_helper(tmp_path):
    with pytest.raises(errors.ConfigError) as info:
        parse_batch(b'concurency = 2\n[[instances]]\nname = "a"\nargv = ["true"]\n', "b.toml")
    assert str(info.value) == 'b.toml: concurency: unknown key; did you mean "concurrency"?'
    from orchestrator_pex import policy

    path = tmp_path / "policy.toml"
    path.write_text("max_concurency = 3\n")
    with pytest.raises(errors.ConfigError) as info:
        policy.load_policy(str(path))
    assert str(info.value) == f'{path}: max_concurency: unknown key; did you mean "max_concurrency"?'


def test_cli_suggests_commands_and_options():
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "orchestrator_pex", "valdate"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == errors.EXIT_USAGE and 'did you mean "validate"?' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_self_verify_errors_are_errors_types(tmp_path, monkeypatch):
    monkeypatch.delenv("PEX", raising=False)
    args = argparse.Namespace(self_command="verify", pex=None, bundle=None, trust=None)
    with pytest.raises(errors.UsageError, match=r"^self verify: not running from a PEX file"):
        self_cmd.main(args)
    with pytest.raises(errors.UsageError, match="expected an action: verify"):
        self_cmd.main(argparse.Namespace(self_command=None))
    pex = tmp_path / "x.pex"
    pex.write_bytes(b"x")
    with pytest.raises(errors.VerifyError, match=r"^self verify: FAILED: .*SHA256SUMS: missing$") as info:
        self_cmd.main(argparse.Namespace(self_command="verify", pex=str(pex), bundle=str(tmp_path), trust=None))
    assert info.value.exit_status == errors.EXIT_FAILED
    assert issubclass(errors.VerifyError, errors.OrchestratorError)


def _error_classes():
    return {name for name, value in vars(errors).items()
            if isinstance(value, type) and issubclass(value, errors.OrchestratorError)}


def test_every_user_error_is_built_from_file_key_and_message():
    """Every construction of an errors.py error in the package passes the three parts (file, key, message), and none
    writes the shape itself: a first part never ends with ": " and a message never starts with an f-string's
    "{...}: " (the file or key written into the text)."""
    classes = _error_classes() - {"Problems"}
    assert {"UsageError", "ConfigError", "VerifyError", "RunDirError", "LockHeld"} <= classes
    package = os.path.join(ROOT, "orchestrator_pex")
    offenders, calls = [], 0
    for folder, _, files in os.walk(package):
        for name in files:
            if not name.endswith(".py") or name == "agent_sim.py":  # the simulated agent imitates another CLI
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) \
                    else None
                if called not in classes:
                    continue
                calls += 1
                where = f"{os.path.relpath(path, ROOT)}:{node.lineno}"
                args = node.args
                if any(isinstance(a, ast.Starred) for a in args):
                    continue  # parts passed on from a (file, key, message) tuple
                if len(args) != 3 or node.keywords:
                    offenders.append(f"{where}: {called} with {len(args)} parts")
                    continue
                first, message = args[0], args[2]
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.endswith(": "):
                    offenders.append(f"{where}: the file part ends with ': '")
                if isinstance(message, ast.JoinedStr) and len(message.values) > 1 \
                        and isinstance(message.values[0], ast.FormattedValue) \
                        and isinstance(message.values[1], ast.Constant) \
                        and str(message.values[1].value).startswith(": "):
                    offenders.append(f"{where}: the message starts with a hand-written '{{...}}: '")
    assert calls > 100  # the walk found the raise sites
    assert offenders == []


def test_errors_keep_their_parts_and_print_one_shape(tmp_path):
    err = errors.UsageError("--at", "", "a cron expression is one line")
    assert (err.file, err.key, err.message) == ("--at", "", "a cron expression is one line")
    assert str(err) == "--at: a cron expression is one line" and err.exit_status == errors.EXIT_USAGE
    held = errors.LockHeld("/l/b.lock", "", "another run\nof this batch")
    assert str(held) == "/l/b.lock: another run\\nof this batch" and held.exit_status == errors.EXIT_LOCKED
    assert errors.RunDirError("r", "results.json", "x").exit_status == errors.EXIT_FAILED
    problems = errors.Problems([errors.Problem("b.toml", "k", "bad"), errors.Problem("b.toml", "", "worse")])
    assert str(problems) == "b.toml: k: bad\nb.toml: worse" and (problems.file, problems.key) == ("b.toml", "k")


def test_validate_reports_a_forbidden_tool_from_the_errors_parts(tmp_path):
    """A site policy's forbidden tool on a Codex instance: validate lists it FILE: KEY: message from the error's
    own parts (checks.py no longer parses the text back)."""
    batch = tmp_path / "b.toml"
    batch.write_text('[[instances]]\nname = "a"\nagent = "codex"\nprompt = "p"\n')
    policy = tmp_path / "policy.toml"
    policy.write_text('forbidden_tools = ["WebFetch"]\n')
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "orchestrator_pex", "validate", str(batch), "--policy", str(policy),
                           "--no-preflight"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == errors.EXIT_USAGE, proc.stderr
    assert "orchestrator-pex: b.toml: instances[0].agent: the site policy forbids tools (WebFetch), which codex " \
           "cannot be told to withhold" in proc.stderr.splitlines()
