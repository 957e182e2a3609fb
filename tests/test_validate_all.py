"""Issue 11 part 3: ``validate`` runs everything ``run`` checks before it starts anything and reports every problem at
once, one line each (``FILE: KEY: message``), in file order, exit 2; ``run`` refuses the same batch with the same
lines and starts nothing. Unknown model names are a warning. The main cases run the real command line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from orchestrator_pex import checks, config, errors

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PREFIX = "orchestrator-pex: batch.toml: "

#: Six different mistakes, one per instance (the fifth is one only as root: bypassPermissions).
SIX_MISTAKES = """\
claude = {claude}
[[instances]]
name = "typo"
argv = [PYTHON, "-c", "open('started', 'w').close()"]
timout = 5
[[instances]]
name = "negative"
prompt = "p"
timeout = -1
[[instances]]
name = "orphan"
prompt = "p"
needs = ["nobody"]
[[instances]]
name = "lost"
argv = ["true"]
env = { PATH = EMPTY_DIR }
[[instances]]
name = "yolo"
prompt = "p"
permission_mode = "bypassPermissions"
[[instances]]
name = "fetcher"
prompt = "p"
allowed_tools = ["WebFetch"]
"""

#: (key, start of the message) of each of the six, in file order.
EXPECTED = [
    ("instances[0].timout", 'unknown key; did you mean "timeout"?'),
    ("instances[1].timeout", "expected a positive number of seconds, got -1"),
    ("instances[2].needs[0]", 'no instance is named "nobody"'),
    ("instances[3].argv", "program not found or not executable: true"),
    ("instances[4].permission_mode", "bypassPermissions cannot be used as root"),
    ("instances[5].allowed_tools[0]", '"WebFetch" is forbidden by policy'),
]


@pytest.fixture
def six(tmp_path, write_batch):
    """The six-mistake batch and a policy forbidding WebFetch; returns (batch path, policy path)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    text = SIX_MISTAKES.replace("PYTHON", json.dumps(sys.executable)).replace("EMPTY_DIR", json.dumps(str(empty)))
    policy = tmp_path / "policy.toml"
    policy.write_text('forbidden_tools = ["WebFetch"]\n')
    return write_batch(text), policy


def _files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _expected_lines(policy: Path):
    lines = []
    for key, message in EXPECTED:
        if key.endswith("permission_mode") and not IS_ROOT:
            continue  # not a mistake for another user: run would not refuse it either
        lines.append((PREFIX + f"{key}: {message}").replace("policy", f"policy {policy}"))
    return lines


def test_six_mistakes_six_lines_in_one_round_and_nothing_written(cli, tmp_path, six):
    batch, policy = six
    before = _files(tmp_path)
    proc = cli("validate", str(batch), "--policy", str(policy))
    err = proc.stderr.decode()
    assert proc.returncode == errors.EXIT_USAGE, err
    assert proc.stdout == b"" and "Traceback" not in err
    lines = err.splitlines()
    expected = _expected_lines(policy)
    assert len(lines) == len(expected) == (6 if IS_ROOT else 5), err
    for line, start in zip(lines, expected):  # in file order, one line each
        assert line.startswith(start), (line, start)
    assert _files(tmp_path) == before  # nothing written, nothing started


def test_run_refuses_the_same_batch_with_the_same_lines_and_starts_nothing(cli, tmp_path, six):
    batch, policy = six
    validated = cli("validate", str(batch), "--policy", str(policy))
    proc = cli("run", str(batch), "--policy", str(policy), "--results-dir", str(tmp_path / "runs"))
    assert proc.returncode == errors.EXIT_USAGE
    assert proc.stderr == validated.stderr and proc.stdout == b""
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "started").exists()  # the one runnable program was never started


def test_fixing_every_line_gives_a_clean_batch(cli, write_batch):
    batch = write_batch('claude = {claude}\n[[instances]]\nname = "a"\nprompt = "p"\nmodel = "claude-sonnet-4-5"\n'
                        '[[instances]]\nname = "b"\nargv = ["true"]\nneeds = ["a"]\n')
    proc = cli("validate", str(batch))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    assert proc.stdout.decode() == f"{batch}: ok, 2 instances (1 claude, 1 generic)\n"


def test_unknown_model_is_a_warning_not_an_error(cli, write_batch):
    batch = write_batch('claude = {claude}\n[defaults]\nmodel = "gpt-nine"\n[[instances]]\nname = "a"\nprompt = "p"\n'
                        '[[instances]]\nname = "b"\nprompt = "p"\nmodel = "claude-fable-1"\n'
                        '[[instances]]\nname = "c"\nprompt = "p"\nmodel = "sonnet"\n')
    proc = cli("validate", str(batch))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().startswith(f"{batch}: ok, 3 instances")
    lines = proc.stderr.decode().splitlines()
    assert [line.split(": warning: ")[0] for line in lines] == [
        PREFIX + "defaults.model", PREFIX + "instances[1].model"]  # an alias (sonnet) is known
    assert 'unknown model "gpt-nine"' in lines[0] and 'unknown model "claude-fable-1"' in lines[1]
    # run says the same before it starts (here: a dry run, which starts nothing)
    dry = cli("run", str(batch), "--dry-run")
    assert dry.returncode == 0 and dry.stderr == proc.stderr


def test_an_unknown_model_and_a_real_problem_exit_2_with_both(cli, write_batch):
    batch = write_batch('claude = {claude}\n[[instances]]\nname = "a"\nprompt = "p"\nmodel = "gpt-nine"\n'
                        'timeout = "soon"\n')
    proc = cli("validate", str(batch))
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2
    assert lines[0].startswith(PREFIX + "instances[0].model: warning: unknown model")
    assert lines[1] == PREFIX + 'instances[0].timeout: expected a positive number of seconds, got "soon"'


def test_lines_are_bounded(cli, write_batch):
    text = "claude = {claude}\n" + "".join(
        f'[[instances]]\nname = "i{i}"\nargv = ["true"]\ntimeout = -{i + 1}\n' for i in range(60))
    proc = cli("validate", str(write_batch(text)))
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2
    assert len(lines) == errors.MAX_PROBLEM_LINES + 1
    assert lines[0] == PREFIX + "instances[0].timeout: expected a positive number of seconds, got -1"
    assert lines[49] == PREFIX + "instances[49].timeout: expected a positive number of seconds, got -50"
    assert lines[-1] == "orchestrator-pex: ... and 10 more problems"


def test_missing_agent_is_reported_with_the_rest(cli, write_batch):
    proc = cli("validate", str(write_batch('claude = "/nonexistent/claude"\nconcurrency = 0\n'
                                           '[[instances]]\nname = "a"\nprompt = "p"\n')))
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2
    assert lines[0].startswith(PREFIX + "claude: agent executable not found: /nonexistent/claude")
    assert lines[1] == PREFIX + "concurrency: expected a positive integer, got 0"


def test_no_preflight_checks_only_the_batch_and_the_policy(cli, write_batch):
    batch = write_batch('claude = "/nonexistent/claude"\n[[instances]]\nname = "a"\nprompt = "p"\ncwd = "gone"\n')
    assert cli("validate", str(batch)).returncode == 2
    proc = cli("validate", str(batch), "--no-preflight")
    assert proc.returncode == 0, proc.stderr


# -- in-process: the rules of collecting --------------------------------------------------------------------------


def _examine(tmp_path, text: str, **options):
    path = tmp_path / "batch.toml"
    path.write_text(text)
    return checks.examine(str(path), **options)


def test_an_instance_without_a_valid_name_stops_before_planning(tmp_path):
    """The documented rule: no plan can be made, so only the batch file's own problems are reported."""
    found = _examine(tmp_path, 'claude = "/nonexistent/claude"\n[[instances]]\nprompt = "p"\ntimeout = 0\n'
                               '[[instances]]\nname = "b"\nargv = ["/nonexistent/prog"]\nretries = -1\n')
    assert found.plan is None
    assert [(p.key, p.message) for p in found.problems] == [
        ("instances[0].name", "required key is missing"),  # a missing key: where its table starts
        ("instances[0].timeout", "expected a positive number of seconds, got 0"),
        ("instances[1].retries", "expected an integer, 0 or more, got -1"),
    ]


def test_problems_are_in_file_order_across_stages(tmp_path):
    text = ('claude = "@agent-sim"\n[[instances]]\nname = "a"\nargv = ["/nonexistent/prog"]\n'
            '[[instances]]\nname = "b"\nprompt = "p"\nneeds = ["a", "a"]\n[defaults]\nretries = "x"\n')
    found = _examine(tmp_path, text)
    assert [p.key for p in found.problems] == ["instances[0].argv", "instances[1].needs[1]", "defaults.retries"]


def test_a_consequence_is_not_reported_twice(tmp_path):
    found = _examine(tmp_path, '[[instances]]\nname = "a"\nprompt = 7\n[[instances]]\nname = "b"\nargv = ["true"]\n'
                               'needs = ["b"]\n', preflight=False)
    assert [(p.key, p.message) for p in found.problems] == [
        ("instances[0].prompt", "expected a string, got 7"),  # not also "expected exactly one of prompt or argv"
        ("instances[1].needs[0]", '"b" is the instance itself'),  # not also the cycle b -> b
    ]
    found = _examine(tmp_path, '[[instances]]\nname = "a"\nprompt = "p"\nallowed_tools = ["Read\\tBash"]\n',
                     preflight=False)
    assert [p.key for p in found.problems] == ["instances[0].allowed_tools[0]"]  # once, not by each check


def test_load_batch_raises_every_problem(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text('concurrency = 0\n[[instances]]\nname = "a"\nprompt = "p"\nmax_turns = 0\n')
    with pytest.raises(errors.Problems) as info:
        config.load_batch(str(path))
    assert [p.key for p in info.value.problems] == ["concurrency", "instances[0].max_turns"]
    assert isinstance(info.value, errors.ConfigError) and info.value.key == "concurrency"
