"""Batch files: TOML and zen JSON load into the same typed batch; every malformed input is one line and exit 2.

Error cases run the real command line (``python -m orchestrator_pex validate|run``) and check the whole contract:
exit status 2, exactly one line on stderr that names the file and the key path, no traceback, nothing on stdout,
and (for ``run``) no run directory created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from orchestrator_pex.config import BUILTIN, apply_defaults, load_batch, parse_batch
from orchestrator_pex.errors import ConfigError

FAKE_CLAUDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "fake_claude")

FOUR = "".join(f'[[instances]]\nname = "i{i}"\nprompt = "p"\n' for i in range(3))

# (file name, contents, expected stderr line after "orchestrator-pex: "; None = check only the prefix given)
MALFORMED = [
    pytest.param("batch.toml", FOUR + '[[instances]]\nname = "i3"\nprompt = "p"\ntimeout = "ten"\n',
                 'batch.toml: instances[3].timeout: expected a positive number of seconds, got "ten"',
                 id="timeout-text"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\ntimeout = -5\n',
                 "batch.toml: instances[0].timeout: expected a positive number of seconds, got -5",
                 id="timeout-negative"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\ntimeout = 0\n',
                 "batch.toml: instances[0].timeout: expected a positive number of seconds, got 0", id="timeout-zero"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\ntimeout = nan\n',
                 "batch.toml: instances[0].timeout: expected a positive number of seconds, got nan", id="timeout-nan"),
    pytest.param("batch.toml", '[defaults]\nstall_timeout = true\n[[instances]]\nname = "a"\nprompt = "p"\n',
                 "batch.toml: defaults.stall_timeout: expected a positive number of seconds, got true",
                 id="bool-is-not-a-number"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\nmax_turns = 2.5\n',
                 "batch.toml: instances[0].max_turns: expected a positive integer, got 2.5", id="wrong-type-int"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\nretries = -1\n',
                 "batch.toml: instances[0].retries: expected an integer, 0 or more, got -1", id="retries-negative"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\nallowed_tools = "Bash"\n',
                 'batch.toml: instances[0].allowed_tools: expected a list of strings, got "Bash"',
                 id="wrong-type-list"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = 7\n',
                 "batch.toml: instances[0].prompt: expected a string, got 7", id="wrong-type-str"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\ntimout = 5\n',
                 'batch.toml: instances[0].timout: unknown key; did you mean "timeout"?', id="unknown-key-instance"),
    pytest.param("batch.toml", 'concurency = 2\n[[instances]]\nname = "a"\nprompt = "p"\n',
                 'batch.toml: concurency: unknown key; did you mean "concurrency"?', id="unknown-key-top"),
    pytest.param("batch.toml", '[defaults]\nmodle = "m"\n[[instances]]\nname = "a"\nprompt = "p"\n',
                 'batch.toml: defaults.modle: unknown key; did you mean "model"?', id="unknown-key-defaults"),
    pytest.param("batch.toml", '[budget]\nmode = "stop"\n[[instances]]\nname = "a"\nprompt = "p"\n',
                 'batch.toml: budget.mode: expected one of "block", "warn", got "stop"', id="bad-budget-mode"),
    pytest.param("batch.toml", '[[instances]]\nprompt = "p"\n',
                 "batch.toml: instances[0].name: required key is missing", id="missing-name"),
    pytest.param("batch.toml", '[[instances]]\nname = ""\nprompt = "p"\n',
                 'batch.toml: instances[0].name: expected a name of 1 to 200 printable characters, got ""',
                 id="bad-name"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\n[[instances]]\nname = "a"\nprompt = "q"\n',
                 'batch.toml: instances[1].name: duplicate name "a" (also instances[0])', id="duplicate-name"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\n',
                 "batch.toml: instances[0].prompt: expected exactly one of prompt or argv", id="neither-prompt-argv"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\nargv = ["/bin/true"]\n',
                 "batch.toml: instances[0].prompt: expected exactly one of prompt or argv", id="both-prompt-argv"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nargv = []\n',
                 "batch.toml: instances[0].argv: expected a non-empty list of strings", id="empty-argv"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\npermission_mode = "yolo"\n',
                 'batch.toml: instances[0].permission_mode: expected one of "default", "acceptEdits", "plan", '
                 '"bypassPermissions", "dontAsk", got "yolo"', id="bad-permission-mode"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\nenv = { PORT = 8080 }\n',
                 "batch.toml: instances[0].env: expected string values, got 8080 for PORT", id="bad-env-value"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\nenv = { "1BAD" = "x" }\n',
                 'batch.toml: instances[0].env: expected environment variable names, got "1BAD"', id="bad-env-name"),
    pytest.param("batch.toml", '[[instances]]\nname = "a"\nprompt = "p"\nsession_id = "s"\nresume = "r"\n',
                 "batch.toml: instances[0].resume: set either session_id or resume, not both", id="session-and-resume"),
    pytest.param("batch.toml", "instances = []\n",
                 "batch.toml: instances: expected at least one instance", id="empty-instances"),
    pytest.param("batch.toml", 'claude = "claude"\n',
                 "batch.toml: instances: required: a list of instances ([[instances]] tables)", id="no-instances"),
    pytest.param("batch.toml", '[[instances]\nname = "a"\n', "batch.toml: not valid TOML: ", id="invalid-toml"),
    pytest.param("batch.toml", b'[[instances]]\nname = "\xff"\n', "batch.toml: not valid UTF-8", id="invalid-utf8"),
    pytest.param("batch.json", '{"instances": [{"name": "a",}', "batch.json: not valid JSON: ", id="invalid-json"),
    pytest.param("batch.json", "[1, 2]", "batch.json: expected a JSON object at the top level", id="json-not-object"),
    pytest.param("batch.json", '{"// note": "x", "instances": [{"name": "a", "command": "c", '
                 '"max_tokens_per_command": "lots"}]}',
                 'batch.json: instances[0].max_tokens_per_command: expected a positive integer, got "lots"',
                 id="zen-key-named-as-written"),
    pytest.param("batch.json", '{"instances": [{"name": "a"}]}',
                 "batch.json: instances[0].command: expected exactly one of prompt or argv", id="zen-missing-command"),
    pytest.param("batch.json", '{"instances": [{"name": "a", "command": "c", "pre_commands": "/x"}]}',
                 'batch.json: instances[0].pre_commands: expected a list of strings, got "/x"', id="zen-pre-commands"),
    pytest.param("batch.json", '{"instances": [{"name": "a", "command": "c", "clear_history": "yes"}]}',
                 'batch.json: instances[0].clear_history: expected true or false, got "yes"', id="zen-bool"),
]


def _check_one_line_error(proc, expected: str) -> None:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err
    assert proc.stdout == b""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    prefix = "orchestrator-pex: "
    assert line.startswith(prefix)
    if expected.endswith(": "):
        assert line[len(prefix):].startswith(expected), line
    else:
        assert line[len(prefix):] == expected


@pytest.fixture(scope="module")
def validated(tmp_path_factory, make_cli_env):
    """Every MALFORMED case through ``validate``, the processes started all at once (keeps the suite fast)."""
    base = tmp_path_factory.mktemp("malformed")
    procs = {}
    for param in MALFORMED:
        name, text, _ = param.values
        folder = base / param.id
        folder.mkdir()
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        procs[param.id] = subprocess.Popen(
            # --claude: an agent that is found and answers --version, so the batch's problem is the only one
            [sys.executable, "-m", "orchestrator_pex", "validate", str(folder / name), "--claude", str(FAKE_CLAUDE)],
            cwd=folder, env=make_cli_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    done = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        done[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


@pytest.mark.parametrize("name, text, expected", MALFORMED)
def test_validate_rejects_malformed_batch_with_one_line(validated, request, name, text, expected):
    case = request.node.callspec.id
    _check_one_line_error(validated[case], expected)


@pytest.mark.parametrize("name, text, expected", [p for p in MALFORMED if p.id in {
    "timeout-text", "unknown-key-instance", "duplicate-name", "invalid-toml", "invalid-json", "empty-instances"}])
def test_run_rejects_malformed_batch_before_creating_anything(cli, tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_bytes(text.encode())
    runs = tmp_path / "runs"  # checked: not even the results directory is created
    _check_one_line_error(cli("run", str(path), "--json", "--results-dir", str(runs), "--claude", str(FAKE_CLAUDE)),
                          expected)
    assert not runs.exists()


def test_missing_batch_file_is_one_line(cli, tmp_path):
    proc = cli("validate", str(tmp_path / "nope.toml"))
    _check_one_line_error(proc, f"{tmp_path}/nope.toml: cannot read batch file: No such file or directory")
    proc = cli("run", str(tmp_path / "nope.toml"), "--results-dir", str(tmp_path / "runs"))
    _check_one_line_error(proc, f"{tmp_path}/nope.toml: cannot read batch file: No such file or directory")
    assert not (tmp_path / "runs").exists()


def test_validate_ok_reports_counts(cli, write_batch):
    path = write_batch('claude = {claude}\n[[instances]]\nname = "a"\nprompt = "p"\n'
                       '[[instances]]\nname = "b"\nargv = ["/bin/true"]\n')
    proc = cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == f"{path}: ok, 2 instances (1 claude, 1 generic)"


# -- in-process: what a valid batch means -----------------------------------------------------------------------------


TOML_FULL = b"""
claude = "claude"
concurrency = 3
stagger = 0.5
deadline = 60
grace_period = 2
[budget]
max_tokens = 1000
max_cost_usd = 1.5
mode = "warn"
[retry]
backoff = 0.1
backoff_max = 1
[defaults]
model = "claude-sonnet-4-5"
permission_mode = "acceptEdits"
allowed_tools = ["Bash", "Read"]
timeout = 600
env = { SHARED = "d", OVERRIDE = "from-defaults" }
[[instances]]
name = "fix-tests"
prompt = "run the tests"
env = { FOO = "bar", OVERRIDE = "from-instance" }
[[instances]]
name = "other"
argv = ["/usr/bin/some-cli", "--flag"]
model = "claude-opus-4-1"
allowed_tools = []
timeout = 5
retries = 0
"""


def test_toml_batch_values_and_types():
    batch = parse_batch(TOML_FULL, "/srv/jobs/batch.toml")
    assert batch.path == "/srv/jobs/batch.toml"
    assert (batch.concurrency, batch.stagger, batch.deadline, batch.grace_period) == (3, 0.5, 60.0, 2.0)
    assert isinstance(batch.deadline, float)
    assert (batch.budget.max_tokens, batch.budget.max_cost_usd, batch.budget.mode) == (1000, 1.5, "warn")
    assert (batch.retry.backoff, batch.retry.backoff_max) == (0.1, 1.0)
    assert [i.name for i in batch.instances] == ["fix-tests", "other"]
    assert batch.instances[1].argv == ("/usr/bin/some-cli", "--flag")
    assert batch.instances[0].argv is None


def test_defaults_applied_and_env_merged():
    a, b = apply_defaults(parse_batch(TOML_FULL, "/srv/jobs/batch.toml"))
    assert a.model == "claude-sonnet-4-5" and b.model == "claude-opus-4-1"
    assert a.permission_mode == b.permission_mode == "acceptEdits"
    assert a.allowed_tools == ("Bash", "Read")
    assert b.allowed_tools == ()  # an explicit empty list is the instance's own value, not "unset"
    assert (a.timeout, b.timeout) == (600.0, 5.0)
    assert a.env == {"SHARED": "d", "OVERRIDE": "from-instance", "FOO": "bar"}
    assert b.env == {"SHARED": "d", "OVERRIDE": "from-defaults"}
    assert (a.retries, b.retries) == (BUILTIN["retries"], 0)
    assert a.stall_timeout == BUILTIN["stall_timeout"]
    assert a.disallowed_tools == () and a.tags == ()


def test_builtin_defaults_without_defaults_table():
    (inst,) = apply_defaults(parse_batch(b'[[instances]]\nname = "a"\nprompt = "p"\n', "b.toml"))
    assert inst.env == {} and inst.retries == 2 and inst.timeout is None and inst.model is None


ZEN = {
    "// comment": "keys starting with // are comments",
    "//": ["any", "value"],
    "instances": [
        {
            "name": "zen-one",
            "command": "fix the bug",
            "description": "d",
            "permission_mode": "acceptEdits",
            "max_tokens_per_command": 5000,
            "allowed_tools": ["Read", "Edit"],
            "session_id": "0d6f0b1e-3c1b-4a53-9b33-1c1e0f4d2a10",
            "output_format": "stream-json",
            "clear_history": True,
        },
        {"name": "zen-two", "command": "/review", "compact_history": True, "pre_commands": ["/clear-cache", "hello"]},
    ],
}


def test_zen_json_keys_mapped(tmp_path):
    path = tmp_path / "zen.json"
    path.write_text(json.dumps(ZEN))
    batch = load_batch(str(path))
    one, two = batch.instances
    assert one.prompt == "fix the bug"
    assert one.max_tokens == 5000
    assert one.permission_mode == "acceptEdits"
    assert one.allowed_tools == ("Read", "Edit")
    assert one.session_id == "0d6f0b1e-3c1b-4a53-9b33-1c1e0f4d2a10"
    assert one.description == "d"
    assert two.prompt == "/compact\n/clear-cache\nhello\n/review"


def test_zen_json_detected_by_content_not_only_extension(tmp_path):
    path = tmp_path / "batch.conf"
    path.write_text(json.dumps(ZEN))
    assert [i.name for i in load_batch(str(path)).instances] == ["zen-one", "zen-two"]


def test_json_comment_keys_only_at_top_level_are_ignored(tmp_path):
    path = tmp_path / "zen.json"
    path.write_text(json.dumps({"instances": [{"name": "a", "command": "c", "// note": "x"}]}))
    with pytest.raises(ConfigError) as info:
        load_batch(str(path))
    assert info.value.key == "instances[0].// note"


def test_zen_unknown_key_suggests_zen_spelling(tmp_path):
    path = tmp_path / "zen.json"
    path.write_text(json.dumps({"instances": [{"name": "a", "comand": "c"}]}))
    with pytest.raises(ConfigError) as info:
        load_batch(str(path))
    assert 'did you mean "command"?' in str(info.value)


def test_config_error_has_file_key_and_message():
    with pytest.raises(ConfigError) as info:
        parse_batch(b'[[instances]]\nname = "a"\nprompt = "p"\ntimeout = "ten"\n', "/x/y/batch.toml")
    err = info.value
    assert (err.file, err.key) == ("batch.toml", "instances[0].timeout")
    assert str(err) == 'batch.toml: instances[0].timeout: expected a positive number of seconds, got "ten"'
    assert err.exit_status == 2


def test_long_bad_value_is_shortened_to_one_line():
    value = "x" * 500 + "\nsecond line"
    text = f'[[instances]]\nname = "a"\nprompt = "p"\ntimeout = """{value}"""\n'.encode()
    with pytest.raises(ConfigError) as info:
        parse_batch(text, "batch.toml")
    message = str(info.value)
    assert "\n" not in message and len(message) < 200


def test_zen_json_batch_runs_end_to_end(run_batch, write_batch):
    zen = {"// what": "a zen batch, run as is", "claude": "{claude}", "grace_period": 1,
           "instances": [{"name": "z1", "command": "first", "max_tokens_per_command": 100000,
                          "output_format": "stream-json", "clear_history": True, "compact_history": True,
                          "pre_commands": ["/status"]}]}
    text = json.dumps(zen).replace('"{claude}"', "{claude}")
    path = write_batch(text.replace('"instances"', '"defaults": {"env": {"AGENT_SIM_SCENARIO": "ok"}}, "instances"'),
                       name="zen.json")
    res = run_batch(path)
    assert res.code == 0, res.stderr
    r = res.inst("z1")
    assert r["status"] == "succeeded" and r["result"] == "Done: /compact\n/status\nfirst"
    run_dir = res.doc["run_dir"]
    assert os.path.isfile(os.path.join(run_dir, "batch.json"))
