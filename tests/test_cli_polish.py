"""The command line is strict and helpful: no abbreviated options, "did you mean" for commands, options and values,
one-line errors with exit status 2, exit statuses in --help, hidden commands hidden, correct plurals."""

from __future__ import annotations

import pytest

from orchestrator_pex import cli, errors


def run_cli(capsys, *argv: str):
    with pytest.raises(SystemExit) as info:
        cli.main(list(argv))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.mark.parametrize("argv, expected", [
    (["rnu", "b.toml"], 'unknown command \'rnu\'; did you mean "run"?'),
    (["run", "b.toml", "--dry"], 'unknown option \'--dry\'; did you mean "--dry-run"?'),
    (["run", "b.toml", "--jsno"], 'unknown option \'--jsno\'; did you mean "--json"?'),
    (["runs", "lst"], 'unknown command \'lst\'; did you mean "list"?'),
    (["runs", "list", "--stat", "failed"], 'unknown option \'--stat\'; did you mean "--status"?'),
    (["run", "b.toml", "--progress", "tabel"], 'unknown value for --progress \'tabel\'; did you mean "table"?'),
])
def test_one_line_with_a_suggestion_and_exit_2(capsys, argv, expected):
    code, out, err = run_cli(capsys, *argv)
    assert code == errors.EXIT_USAGE and out == ""
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err


def test_abbreviated_options_are_refused_not_guessed(tmp_path, capsys):
    """`--dry` used to run a dry run (argparse's prefix matching); now it is an error and nothing runs."""
    batch = tmp_path / "b.toml"
    batch.write_text('[[instances]]\nname = "a"\nargv = ["true"]\n')
    code, out, err = run_cli(capsys, "run", str(batch), "--dry")
    assert code == 2 and "nothing is started" not in out
    code, out, err = run_cli(capsys, "run", str(batch), "--concur", "2", "--dry-run")
    assert code == 2 and '"--concurrency"' in err


def test_hidden_commands_are_not_offered(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "agent-sim" not in out
    code, _, err = run_cli(capsys, "agent-simm")
    assert code == 2 and "agent-sim" not in err.replace("agent-simm", "")


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["resume", "--help"], ["demo", "--help"]])
def test_help_lists_every_exit_status(capsys, argv):
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "exit statuses:" in out
    for status, _meaning in errors.EXIT_STATUSES:
        assert f"  {status:>3}  " in out


def test_resume_help_says_what_is_rerun(capsys):
    _, out, _ = run_cli(capsys, "--help")
    assert "rerun what did not finish on its own" in out and "--rerun-failed" in out


@pytest.mark.parametrize("n, text", [(0, "0 instances"), (1, "1 instance"), (2, "2 instances")])
def test_plural(n, text):
    assert errors.plural(n, "instance") == text


def test_validate_says_1_instance(tmp_path, capsys):
    batch = tmp_path / "b.toml"
    batch.write_text('[[instances]]\nname = "a"\nargv = ["true"]\n')
    assert cli.main(["validate", str(batch)]) == 0
    assert ": ok, 1 instance (" in capsys.readouterr().out
