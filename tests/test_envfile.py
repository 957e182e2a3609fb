"""Env files (--env-file, batch env_file): syntax, refusal of unsafe files, precedence, every value masked."""

from __future__ import annotations

import json
import os
import sys

import pytest

from orchestrator_pex import envfile
from orchestrator_pex.errors import EXIT_USAGE, ConfigError

SECRET = "s3cr3t-value-from-env-file"


def test_parse_syntax():
    text = ("# comment\n\n  ; also a comment\nA=1\n B = spaced \nC=\"double # kept\"\nD='single \\ kept'\n"
            "E=x # not a comment\nA=last wins\nF=\nG=''\n")
    assert envfile.parse(text, "f") == {"A": "last wins", "B": "spaced", "C": "double # kept",
                                        "D": "single \\ kept", "E": "x # not a comment", "F": "", "G": ""}


@pytest.mark.parametrize("line,problem", [("export A=1", "expected KEY=VALUE"), ("NOEQUALS", "expected KEY=VALUE"),
                                          ("1A=x", "expected KEY=VALUE"), ('A="a\\nb"', "backslash"),
                                          ("A='open", "unterminated quote")])
def test_bad_lines_name_the_line_and_never_the_value(line, problem):
    with pytest.raises(ConfigError) as err:
        envfile.parse(f"OK=1\n{line}\n", "/x/secrets.env")
    assert str(err.value).startswith("/x/secrets.env: line 2: ") and problem in str(err.value)
    value = line.partition("=")[2]
    if len(value) > 3:
        assert value not in str(err.value)


def test_unsafe_files_are_refused(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text("A=1\n")
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=r"accessible to group or others \(mode 0640\); chmod 600"):
        envfile.load(str(path))
    path.chmod(0o600)
    assert envfile.load(str(path)) == {"A": "1"}
    link = tmp_path / "link.env"
    link.symlink_to(path)
    with pytest.raises(ConfigError, match="symbolic link"):
        envfile.load(str(link))
    with pytest.raises(ConfigError, match="cannot read env file"):
        envfile.load(str(tmp_path / "missing.env"))
    if os.geteuid() == 0:  # a file owned by someone else
        os.chown(path, 12345, 12345)
        with pytest.raises(ConfigError, match="owned by uid 12345"):
            envfile.load(str(path))


def _probe_batch(write_batch, out, env_file_line=""):
    code = ("import os, sys; open(sys.argv[1], 'w').write(os.environ.get('API_THING', '-') + '|' + "
            "os.environ.get('OVERRIDDEN', '-') + '|' + os.environ.get('FROM_PROCESS', '-')); "
            "print(os.environ['API_THING'])")
    return write_batch(f"""
{env_file_line}
[defaults]
env = {{ OVERRIDDEN = "from-defaults" }}
[[instances]]
name = "probe"
argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(code)}, {json.dumps(str(out))}]
""")


def test_values_reach_instances_with_documented_precedence_and_are_masked_everywhere(write_batch, run_batch,
                                                                                     tmp_path, cli):
    env_path = tmp_path / "secrets.env"
    env_path.write_text(f"API_THING={SECRET}\nOVERRIDDEN=from-file\nFROM_PROCESS=from-file\n")
    env_path.chmod(0o600)
    out = tmp_path / "probe.out"
    batch = _probe_batch(write_batch, out, 'env_file = "secrets.env"')
    result = run_batch(batch, env={"FROM_PROCESS": "from-process"})
    assert result.code == 0, result.stderr
    # process env < env file < [defaults].env < instance env
    assert out.read_text() == f"{SECRET}|from-defaults|from-file"
    run_dir = tmp_path / "runs" / result.doc["run_id"]
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert b"***" in (run_dir / "logs" / "probe.stdout").read_bytes()
    assert SECRET.encode() not in result.stdout + result.stderr
    dry = cli("run", str(batch), "--dry-run")
    assert dry.returncode == 0 and SECRET.encode() not in dry.stdout
    assert b"API_THING=***" in dry.stdout and b"env file: " in dry.stdout


def test_cli_env_file_overrides_the_batch_and_bad_files_exit_2_in_one_line(write_batch, run_batch, tmp_path, cli):
    out = tmp_path / "probe.out"
    batch = _probe_batch(write_batch, out, 'env_file = "missing.env"')
    missing = cli("validate", str(batch))
    assert missing.returncode == EXIT_USAGE and b"missing.env: cannot read env file" in missing.stderr
    other = tmp_path / "other.env"
    other.write_text(f"API_THING={SECRET}\n")
    other.chmod(0o644)
    for command in (["run", str(batch)], ["run", str(batch), "--dry-run"], ["validate", str(batch)]):
        proc = cli(*command, "--env-file", str(other))
        err = proc.stderr.decode()
        assert proc.returncode == EXIT_USAGE and len(err.strip().splitlines()) == 1, err
        assert "other.env: env file is accessible to group or others" in err and SECRET not in err
    other.chmod(0o600)
    result = run_batch(batch, "--env-file", str(other))
    assert result.code == 0, result.stderr
    assert out.read_text().startswith(SECRET + "|")


def test_resume_reads_the_env_file_again(write_batch, cli, tmp_path):
    """A resumed run gets the env file's values too (the batch copy's env_file, or --env-file)."""
    env_path = tmp_path / "secrets.env"
    env_path.write_text(f"API_THING={SECRET}\n")
    env_path.chmod(0o600)
    out = tmp_path / "probe.out"
    gate = tmp_path / "gate"
    code = ("import os, sys; gate = sys.argv[2]\n"
            "if not os.path.exists(gate): open(gate, 'w').close(); sys.exit(3)\n"
            "open(sys.argv[1], 'w').write(os.environ.get('API_THING', '-'))")
    batch = write_batch(f"""
env_file = "secrets.env"
[[instances]]
name = "once-failing"
argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(code)}, {json.dumps(str(out))}, {json.dumps(str(gate))}]
retries = 0
""")
    runs = tmp_path / "runs"
    first = cli("run", str(batch), "--json", "--results-dir", str(runs))
    doc = json.loads(first.stdout)
    assert first.returncode == 1 and doc["instances"][0]["status"] == "failed"
    env_path.chmod(0o644)  # checked again on resume
    refused = cli("resume", str(runs / doc["run_id"]), "--rerun-failed")
    assert refused.returncode == EXIT_USAGE and b"chmod 600" in refused.stderr
    env_path.chmod(0o600)
    again = cli("resume", str(runs / doc["run_id"]), "--rerun-failed", "--json")
    assert again.returncode == 0, again.stderr
    assert out.read_text() == SECRET
    assert SECRET.encode() not in again.stdout + again.stderr
