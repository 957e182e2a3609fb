"""Issue 9, "input is checked completely before anything starts": every hostile batch file, flag or run directory
gives exactly one line on stderr naming the file (or flag) and key, a documented exit status, and no traceback.

Most cases run ``orchestrator_pex.cli.main`` in-process (fast); a few run the real command line. Secret hygiene
cases check that a secret cannot be recovered from what is written, however the batch file spells it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_pex import cli, config, errors, secrets

#: An agent that is found and answers --version: `validate` checks the agent too, so a batch's problem stays the
#: only line.
FAKE_CLAUDE = str(Path(__file__).resolve().parent / "support" / "fake_claude")
OK_INSTANCE = '[[instances]]\nname = "a"\nargv = ["/bin/true"]\n'


def run_main(capsys, *args: str):
    """``cli.main(args)`` in-process: (exit status, stdout, stderr)."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code, err: str, status: int, prefix: str) -> str:
    assert code == status, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def write(tmp_path: Path, text: str, name: str = "batch.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- 1. strings that reach argv, env or a file name --------------------------------------------------------------

BAD_STRINGS = [
    pytest.param('[[instances]]\nname = "a"\nargv = ["/bin/echo", "a\\u0000b"]\n', "instances[0].argv", id="nul-argv"),
    pytest.param('[[instances]]\nname = "a"\nprompt = "hi\\u0000"\n', "instances[0].prompt", id="nul-prompt"),
    pytest.param('[[instances]]\nname = "a"\nprompt = "p"\nenv = { X = "v\\u0000" }\n', "instances[0].env.X",
                 id="nul-env-value"),
    pytest.param('[[instances]]\nname = "a"\nprompt = "p"\nmodel = "m\\u001b[31m"\n', "instances[0].model",
                 id="escape-in-model"),
    pytest.param('[[instances]]\nname = "a"\nprompt = "p"\ncwd = "/tmp\\n/x"\n', "instances[0].cwd", id="newline-cwd"),
    pytest.param('[[instances]]\nname = "a"\nprompt = "p"\nsession_id = "s\\t1"\n', "instances[0].session_id",
                 id="tab-session-id"),
    pytest.param('[[instances]]\nname = "a"\nprompt = "p"\nallowed_tools = ["Bash\\n"]\n',
                 "instances[0].allowed_tools", id="newline-tool-name"),
    pytest.param('claude = "cl\\u007fude"\n' + OK_INSTANCE, "claude", id="del-in-claude"),
    pytest.param('results_dir = "r\\u0085"\n' + OK_INSTANCE, "results_dir", id="c1-in-results-dir"),
    pytest.param('[[instances]]\nname = "a"\nprompt = "p"\nenv = { "A\\n" = "v" }\n', "instances[0].env",
                 id="newline-env-name"),
    pytest.param('[[instances]]\nname = "a\\n"\nprompt = "p"\n', "instances[0].name", id="name-trailing-newline"),
    pytest.param('[[instances]]\nname = "a"\nprompt = "p"\n"k\\u0000" = 1\n', "instances[0].k\\u0000",
                 id="nul-in-key"),
]


@pytest.mark.parametrize("text,key", BAD_STRINGS)
def test_control_characters_are_refused_with_one_line(tmp_path, capsys, text, key):
    path = write(tmp_path, text)
    code, out, err = run_main(capsys, "validate", str(path), "--claude", FAKE_CLAUDE)
    assert_one_line(code, err, errors.EXIT_USAGE, f"orchestrator-pex: batch.toml: {key}")
    assert out == ""


def test_lone_surrogate_in_zen_command_is_refused(tmp_path, capsys):
    path = tmp_path / "batch.json"
    path.write_bytes(b'{"instances": [{"name": "a", "command": "x\\ud800"}]}')
    code, out, err = run_main(capsys, "validate", str(path), "--claude", FAKE_CLAUDE)
    line = assert_one_line(code, err, errors.EXIT_USAGE, "orchestrator-pex: batch.json: instances[0].command:")
    assert "lone surrogate" in line and "\\ud800" in line


def test_multiline_text_keeps_newline_and_tab(tmp_path):
    """Tab, newline and CR are legitimate in prompt, description, append_system_prompt, argv and env values."""
    path = write(tmp_path, '[[instances]]\nname = "a"\nprompt = "line 1\\n\\tline 2\\r\\n"\ndescription = "d\\nd"\n'
                           'append_system_prompt = "x\\ty"\n[[instances]]\nname = "b"\n'
                           'argv = ["/bin/echo", "a\\nb"]\nenv = { PEM = "-----\\nABC\\n-----" }\n')
    batch = config.load_batch(str(path))
    assert batch.instances[0].prompt == "line 1\n\tline 2\r\n"
    assert batch.instances[1].argv == ("/bin/echo", "a\nb")
    assert batch.instances[1].env == {"PEM": "-----\nABC\n-----"}


def test_run_refuses_nul_before_creating_anything(tmp_path):
    """The real command line: exit 2, one line, and no run directory (nothing was started)."""
    path = write(tmp_path, '[[instances]]\nname = "a"\nargv = ["/bin/echo", "a\\u0000b"]\n')
    proc = subprocess.run([sys.executable, "-m", "orchestrator_pex", "run", str(path), "--results-dir",
                           str(tmp_path / "runs")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert_one_line(proc.returncode, proc.stderr, 2, "orchestrator-pex: batch.toml: instances[0].argv[1]:")
    assert not (tmp_path / "runs").exists()


# -- 2. finite and bounded numbers and times ---------------------------------------------------------------------

BAD_NUMBERS = [
    pytest.param("timeout = inf", "instances[0].timeout", id="timeout-inf"),
    pytest.param("timeout = 1e400", "instances[0].timeout", id="timeout-overflow"),
    pytest.param("timeout = 1e12", "instances[0].timeout", id="timeout-huge"),
    pytest.param("stall_timeout = 99999999999", "instances[0].stall_timeout", id="stall-huge"),
    pytest.param("max_tokens = 1000000000000000000000000000000", "instances[0].max_tokens", id="tokens-huge"),
    pytest.param("max_cost_usd = 1e300", "instances[0].max_cost_usd", id="cost-huge"),
    pytest.param("max_turns = 9223372036854775807", "instances[0].max_turns", id="turns-huge"),
    pytest.param("retries = 1000000", "instances[0].retries", id="retries-huge"),
]


@pytest.mark.parametrize("line,key", BAD_NUMBERS)
def test_instance_numbers_are_finite_and_bounded(tmp_path, capsys, line, key):
    path = write(tmp_path, f'[[instances]]\nname = "a"\nprompt = "p"\n{line}\n')
    code, _, err = run_main(capsys, "validate", str(path), "--claude", FAKE_CLAUDE)
    assert_one_line(code, err, 2, f"orchestrator-pex: batch.toml: {key}: expected")


@pytest.mark.parametrize("line,key", [
    ("concurrency = 1000000000000000000000000000000", "concurrency"),
    ("deadline = inf", "deadline"),
    ("stagger = 1e300", "stagger"),
    ("grace_period = nan", "grace_period"),
    ('start_at = "99999999999h"', "start_at"),
    ('start_at = "0001-01-01T00:00:00"', "start_at"),
    ('start_at = "9999-12-31T23:59:59"', "start_at"),
    ("[retry]\nbackoff_max = inf", "retry.backoff_max"),
    ("[budget]\nmax_cost_usd = 1e308", "budget.max_cost_usd"),
])
def test_batch_numbers_and_times_are_bounded(tmp_path, capsys, line, key):
    path = write(tmp_path, line + "\n" + OK_INSTANCE if not line.startswith("[") else OK_INSTANCE + line + "\n")
    code, _, err = run_main(capsys, "validate", str(path), "--claude", FAKE_CLAUDE)
    assert_one_line(code, err, 2, f"orchestrator-pex: batch.toml: {key}: ")


def test_integer_too_long_to_convert_is_one_line(tmp_path, capsys):
    path = write(tmp_path, OK_INSTANCE + "max_tokens = " + "9" * 5000 + "\n")
    code, _, err = run_main(capsys, "validate", str(path), "--claude", FAKE_CLAUDE)
    assert_one_line(code, err, 2, "orchestrator-pex: batch.toml: not valid TOML")


def test_values_at_the_bounds_are_accepted(tmp_path):
    from orchestrator_pex import limits

    path = write(tmp_path, f"concurrency = {limits.MAX_CONCURRENCY}\ndeadline = {limits.MAX_SECONDS}\n"
                           'start_at = "8760h"\n[[instances]]\nname = "a"\nprompt = "p"\n'
                           f"max_tokens = {limits.MAX_COUNT}\nretries = {limits.MAX_RETRIES}\n")
    batch = config.load_batch(str(path))
    assert batch.concurrency == limits.MAX_CONCURRENCY and batch.instances[0].max_tokens == limits.MAX_COUNT


BAD_FLAGS = [
    ("run", "B", "--stagger", "inf"),
    ("run", "B", "--stagger", "nan"),
    ("run", "B", "--deadline", "1e300"),
    ("run", "B", "--concurrency", str(10**30)),
    ("run", "B", "--concurrency", "0"),
    ("run", "B", "--wait-lock", "nan"),
    ("run", "B", "--wait-lock", "inf"),
    ("run", "B", "--wait-lock", "-1"),
    ("resume", "R", "--wait-lock", "nan"),
    ("resume", "R", "--stagger", "inf"),
    ("runs", "prune", "--keep", "-1"),
    ("runs", "prune", "--older-than", "nan"),
    ("runs", "prune", "--older-than", "inf"),
]


@pytest.mark.parametrize("argv", BAD_FLAGS, ids=lambda a: " ".join(a))
def test_numeric_flags_are_finite_and_bounded(tmp_path, capsys, argv):
    argv = [str(write(tmp_path, OK_INSTANCE)) if a == "B" else str(tmp_path) if a == "R" else a for a in argv]
    code, out, err = run_main(capsys, *argv)
    line = assert_one_line(code, err, 2, f"orchestrator-pex {argv[0]}")
    assert f"argument {argv[-2]}:" in line and out == ""


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00", "99999999999h", "9999-12-31T23:59:59+14:00", "2am\n"])
def test_start_at_flag_is_bounded(tmp_path, capsys, when):
    code, _, err = run_main(capsys, "run", str(write(tmp_path, OK_INSTANCE)), "--start-at", when,
                            "--results-dir", str(tmp_path / "runs"))
    assert_one_line(code, err, 2, "orchestrator-pex: --start-at: ")
    assert not (tmp_path / "runs").exists()


# -- 3. caps before parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_non_regular_batch_files_are_refused_unread(tmp_path, capsys, kind):
    if kind == "dev-zero":
        path = "/dev/zero"
    elif kind == "fifo":
        path = str(tmp_path / "batch.toml")
        os.mkfifo(path)  # no writer: reading it would block forever
    else:
        path = str(tmp_path / "dir.toml")
        os.mkdir(path)
    code, _, err = run_main(capsys, "validate", path)
    assert_one_line(code, err, 2, f"orchestrator-pex: {path}: ")
    assert "regular file" in err


def test_oversized_batch_file_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(config, "MAX_BATCH_BYTES", 1000)
    path = write(tmp_path, OK_INSTANCE + "#" * 2000 + "\n")
    code, _, err = run_main(capsys, "validate", str(path), "--claude", FAKE_CLAUDE)
    assert_one_line(code, err, 2, f"orchestrator-pex: {path}: too large")


@pytest.mark.parametrize("name,text", [
    ("batch.toml", "x = " + "[" * 400 + "]" * 400 + "\n" + OK_INSTANCE),
    ("batch.toml", "x = " + "{a = " * 400 + "1" + "}" * 400 + "\n" + OK_INSTANCE),
    ("batch.toml", "a" + ".a" * 400 + " = 1\n" + OK_INSTANCE),
    ("batch.json", '{"instances": ' + "[" * 5000 + "]" * 5000 + "}"),
    ("batch.json", '{"x": ' + '{"a": ' * 400 + "1" + "}" * 400 + ', "instances": []}'),
])
def test_deep_nesting_is_refused_before_parsing(tmp_path, capsys, name, text):
    code, _, err = run_main(capsys, "validate", str(write(tmp_path, text, name)))
    line = assert_one_line(code, err, 2, f"orchestrator-pex: {name}: ")
    assert "nested too deeply" in line


def test_brackets_inside_strings_and_comments_do_not_count(tmp_path):
    text = 'x = "' + "[" * 100 + '" # ' + "{" * 100 + "\n" + "y = '''" + "[" * 100 + "'''\n" + OK_INSTANCE
    with pytest.raises(config.ConfigError, match="unknown key"):  # parsed fine; then x is simply unknown
        config.parse_batch(text.encode(), "batch.toml")


# -- 4/5. one-line errors for runs, prune, resume, merge, schedule -------------------------------------------------


def _fake_run(path: Path, run_id: str, **extra) -> None:
    path.mkdir(parents=True)
    doc = {"run_id": run_id, "status": "succeeded", "batch": "/b.toml", "started_at": "2020-01-01T00:00:00Z",
           "instances": [], **extra}
    (path / "results.json").write_text(json.dumps(doc))


def test_prune_never_follows_a_symlinked_run_dir(tmp_path, capsys):
    res, outside = tmp_path / "res", tmp_path / "outside"
    _fake_run(outside / "victim", "victim")
    _fake_run(res / "old", "old")
    res.joinpath("link").symlink_to(outside / "victim")
    code, out, err = run_main(capsys, "runs", "prune", "--keep", "0", "--results-dir", str(res))
    assert code == 0 and "Traceback" not in err
    assert (outside / "victim" / "results.json").is_file()  # untouched
    assert not (res / "old").exists() and (res / "link").is_symlink()
    code, out, err = run_main(capsys, "runs", "list", "--results-dir", str(res), "--json")
    assert code == 0 and json.loads(out) == []


@pytest.mark.damages_documents
def test_runs_commands_survive_hostile_run_dirs(tmp_path, capsys):
    res = tmp_path / "res"
    _fake_run(res / "r1", "r1", instances=5, cost_usd="x")
    _fake_run(res / "r2", "r2", instances=[{"name": [], "status": {}, "duration_s": "x", "error": 5}])
    (res / "r3").mkdir()
    (res / "r3" / "results.json").write_text('{"instances": [], "batch": NaN}')
    (res / "r4").mkdir()
    (res / "r4" / "journal.jsonl").write_bytes(b'{"event":"run_started","run_id":5,"started_at":[]}\n\x00\xff\n')
    for argv in (["list"], ["list", "--json"], ["show", "r1"], ["show", "r2"], ["show", "r2", "--json"],
                 ["show", "r4"], ["prune", "--keep", "0", "--dry-run"]):
        code, out, err = run_main(capsys, "runs", *argv, "--results-dir", str(res))
        assert code == 0, (argv, err)
        assert "Traceback" not in err
        if "--json" in argv:
            json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


def test_runs_prune_failure_is_one_line(tmp_path, capsys, monkeypatch):
    res = tmp_path / "res"
    _fake_run(res / "r1", "r1")

    def refuse(path, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(shutil, "rmtree", refuse)
    code, _, err = run_main(capsys, "runs", "prune", "--keep", "0", "--results-dir", str(res))
    assert_one_line(code, err, errors.EXIT_FAILED, f"orchestrator-pex: {res / 'r1'}: cannot remove")


@pytest.mark.damages_documents
@pytest.mark.parametrize("content", [b'{"batch": "b", "instances": [], "x": NaN}', b"[1]",
                                     b'{"batch": "b", "instances": [1]}', b'{"batch": "b", "instances": [{}]}',
                                     b"[" * 100000])
def test_merge_refuses_hostile_documents_with_one_line(tmp_path, capsys, content):
    path = tmp_path / "results.json"
    path.write_bytes(content)
    code, out, err = run_main(capsys, "merge", str(path))
    assert_one_line(code, err, 2, f"orchestrator-pex: {path}: ")
    assert out == ""


def test_merge_refuses_a_device(capsys):
    code, _, err = run_main(capsys, "merge", "/dev/zero")
    assert_one_line(code, err, 2, "orchestrator-pex: /dev/zero: not a regular file")


@pytest.mark.parametrize("argv", [
    ["cron", "--at", "0 2 * * *", "--user", "root\n* * * * * root rm -rf /", "--pex", "/x.pex", "/b.toml"],
    ["cron", "--at", "0 2 * * *\n", "--pex", "/x.pex", "/b.toml"],
    ["cron", "--at", "0 2 * * *", "--pex", "/x.pex", "/b\n* * * * * evil.toml"],
    ["systemd", "--on-calendar", "daily\n", "--pex", "/x.pex", "/b.toml"],
    ["systemd", "--on-calendar", "daily", "--user", "root\n", "--pex", "/x.pex", "/b.toml"],
])
def test_schedule_refuses_line_injection(capsys, argv):
    code, out, err = run_main(capsys, "schedule", *argv)
    assert_one_line(code, err, 2, "orchestrator-pex: ")
    assert out == ""


def test_resume_of_a_missing_run_is_one_line(tmp_path, capsys):
    code, _, err = run_main(capsys, "resume", str(tmp_path / "nope"), "--results-dir", str(tmp_path))
    assert_one_line(code, err, 2, f"orchestrator-pex: {tmp_path / 'nope'}: not a run directory")


def test_resume_of_a_damaged_batch_copy_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "journal.jsonl").write_text(json.dumps(
        {"event": "run_started", "run_id": "r", "batch": str(tmp_path / "b.toml"), "batch_copy": "batch.toml"}) + "\n")
    (run_dir / "batch.toml").write_text('[[instances]]\nname = "a"\nargv = ["/bin/echo", "\\u0000"]\n')
    code, _, err = run_main(capsys, "resume", str(run_dir), "--lock", str(tmp_path / "lock"))
    assert_one_line(code, err, 2, "orchestrator-pex: b.toml: instances[0].argv[1]:")


DISK_FULL_BATCH = """
[[instances]]
name = "fill"
argv = ["/bin/sh", "-c", "dd if=/dev/zero of=\\"$FILL\\" bs=4k 2>/dev/null; exit 0"]
env = {{ FILL = "{fill}" }}
"""


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_mount() and os.environ.get("CI") != "true",
                    reason="needs root to mount a small tmpfs (under CI=true this fails instead)")
def test_disk_full_while_writing_results_is_one_line_and_resume_recovers(tmp_path):
    """The instance fills the tmpfs: results.json cannot be written. One line naming it, exit 1, the journal is
    intact and unfinished, and ``resume`` writes results.json once there is space."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        batch = write(tmp_path, DISK_FULL_BATCH.format(fill=mnt / "fill"))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        base = [sys.executable, "-m", "orchestrator_pex"]
        proc = subprocess.run([*base, "run", str(batch), "--results-dir", str(mnt / "runs"), "--lock",
                               str(tmp_path / "lock")], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == errors.EXIT_FAILED, proc.stderr
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("orchestrator-pex: ") and "results.json: cannot write: No space left" in last
        (run_dir,) = list((mnt / "runs").iterdir())
        assert not (run_dir / "results.json").exists()
        events = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
        assert [e["event"] for e in events][-1] == "instance_finished"
        os.unlink(mnt / "fill")
        proc = subprocess.run([*base, "resume", str(run_dir), "--lock", str(tmp_path / "lock")],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads((run_dir / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
        assert doc["status"] == "succeeded"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- 6. secret hygiene ---------------------------------------------------------------------------------------------

SECRET = "hunter2-Very-Secret-Value"


@pytest.mark.parametrize("spelling", [
    '"\\u0068unter2-Very-Secret-Value"',  # a TOML escape
    '"hunter2-Very-Secret-\\u0056alue"',
    "'hunter2-Very-Secret-Value'",
    '"""hunter2-Very-\\\nSecret-Value"""',  # line-ending backslash
])
def test_masked_batch_copy_never_decodes_to_a_secret(spelling):
    data = (OK_INSTANCE + f"env = {{ API_TOKEN = {spelling}, NOTE = \"x\" }}\n").encode()
    raw = config.parse_batch(data, "batch.toml")
    assert raw.instances[0].env["API_TOKEN"] == SECRET  # the file really holds the secret
    redactor = secrets.Redactor([SECRET])
    copy = secrets.masked_copy(data, False, redactor)
    parsed = _toml(copy)
    assert SECRET not in json.dumps(parsed, ensure_ascii=False)
    assert parsed["instances"][0]["env"]["API_TOKEN"] == "***" and parsed["instances"][0]["env"]["NOTE"] == "x"


def _toml(data: bytes):
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads(data.decode("utf-8"))


def test_masked_copy_keeps_the_original_layout_when_raw_masking_suffices():
    data = ("# my batch\n" + OK_INSTANCE + f'env = {{ API_TOKEN = "{SECRET}" }}\n').encode()
    copy = secrets.masked_copy(data, False, secrets.Redactor([SECRET]))
    assert copy.startswith(b"# my batch\n") and SECRET.encode() not in copy


def test_masked_zen_copy_with_json_escapes():
    data = json.dumps({"instances": [{"name": "a", "command": "use \\u0068unter2-Very-Secret-Value"}]}).encode()
    data = data.replace(b"\\\\u0068", b"\\u0068")  # a JSON escape inside the file
    assert json.loads(data)["instances"][0]["command"] == f"use {SECRET}"
    copy = secrets.masked_copy(data, True, secrets.Redactor([SECRET]))
    assert SECRET not in json.dumps(json.loads(copy), ensure_ascii=False)


def test_dry_run_scrubs_an_innocent_name_holding_a_secret_value(tmp_path, capsys):
    path = write(tmp_path, OK_INSTANCE + f'env = {{ GITHUB_TOKEN = "{SECRET}", INNOCENT = "{SECRET}" }}\n'
                                         f'cwd = "/tmp"\n')
    code, out, err = run_main(capsys, "run", str(path), "--dry-run")
    assert code == 0, err
    assert SECRET not in out and "INNOCENT=***" in out


def test_a_secret_that_is_a_common_word_does_not_corrupt_results(tmp_path):
    """Secret values "tokens" and "failed": the document's keys and vocabulary stay intact and strict JSON."""
    path = write(tmp_path, '[[instances]]\nname = "a"\nargv = ["/bin/echo", "tokens failed"]\n'
                           'env = { MY_TOKEN = "tokens", DB_PASSWORD = "failed" }\n'
                           '[[instances]]\nname = "b"\nargv = ["/bin/false"]\n')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-m", "orchestrator_pex", "run", str(path), "--json", "--results-dir",
                           str(tmp_path / "runs")], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == errors.EXIT_FAILED, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(c))
    assert [(r["name"], r["status"]) for r in doc["instances"]] == [("a", "succeeded"), ("b", "failed")]
    assert "tokens" in doc["totals"] and all("tokens" in r for r in doc["instances"])
    (run_dir,) = list((tmp_path / "runs").iterdir())
    on_disk = json.loads((run_dir / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert on_disk["instances"][1]["status"] == "failed"


def test_scrub_data_keeps_structure_and_masks_foreign_keys():
    r = secrets.Redactor(["tokens", SECRET])
    data = {"tokens": {"total": 1}, "status": "tokens", "error": "no tokens", "tools": {SECRET: 2, "Bash": 1}}
    out = r.scrub_data(data)
    assert out["tokens"] == {"total": 1} and out["status"] == "tokens" and out["error"] == "no ***"
    assert out["tools"] == {"***": 2, "Bash": 1}


@pytest.mark.parametrize("shard", ["0/1000000000000000000000000000000", "0/100001", "0/" + "9" * 5000])
def test_shard_count_is_bounded(tmp_path, capsys, shard):
    """A huge shard count used to hang (choosing a shard costs time proportional to the count)."""
    code, _, err = run_main(capsys, "run", str(write(tmp_path, OK_INSTANCE)), "--shard", shard, "--dry-run")
    assert_one_line(code, err, 2, "orchestrator-pex: --shard")


def test_error_text_with_a_newline_stays_one_line(tmp_path, capsys):
    code, _, err = run_main(capsys, "validate", str(tmp_path / "no\nsuch.toml"))
    assert_one_line(code, err, 2, "orchestrator-pex: ")
    assert "no\\nsuch.toml" in err
