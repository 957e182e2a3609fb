"""User-facing errors are built in errors.py: one ``FILE: KEY: message`` shape, one "did you mean" helper shared by
the batch file, the site policy and the command line, and ``self verify`` through errors.py's types and exit codes."""

from __future__ import annotations

import argparse
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
    with pytest.raises(errors.VerifyError, match=r"^self verify: FAILED: .*SHA256SUMS is missing") as info:
        self_cmd.main(argparse.Namespace(self_command="verify", pex=str(pex), bundle=str(tmp_path), trust=None))
    assert info.value.exit_status == errors.EXIT_FAILED
    assert issubclass(errors.VerifyError, errors.OrchestratorError)
