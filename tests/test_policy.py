"""Site policy: loading (errors name file and key), each rule violated and satisfied, all violations reported
together."""

from __future__ import annotations

import json
import os
import textwrap

import attrs
import pytest

from orchestrator_pex import policy as pol
from orchestrator_pex.config import parse_batch
from orchestrator_pex.errors import ConfigError


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "fake_claude")


def batch(tmp_path, text):
    text = textwrap.dedent(text)
    if "claude =" not in text:  # the agent executable is checked too: use one the strict policy allows
        text = f"claude = {json.dumps(FAKE)}\n" + text
    path = write(tmp_path, "batch.toml", text)
    return parse_batch(open(path, "rb").read(), path)


def load(tmp_path, text):
    return pol.load_policy(write(tmp_path, "policy.toml", text))


GOOD = """
    concurrency = 2
    [budget]
    max_cost_usd = 10.0
    max_tokens = 1000000
    [defaults]
    model = "claude-sonnet-4-5"
    permission_mode = "acceptEdits"
    allowed_tools = ["Read", "Bash(git:*)"]
    timeout = 600
    max_cost_usd = 1.0
    cwd = "work"
    [[instances]]
    name = "a"
    prompt = "hello"
    [[instances]]
    name = "b"
    argv = ["/usr/bin/python3", "-c", "pass"]
"""


def strict(tmp_path):
    (tmp_path / "work").mkdir(exist_ok=True)
    return load(
        tmp_path,
        f"""
        allowed_permission_modes = ["default", "acceptEdits"]
        forbidden_tools = ["Bash", "WebFetch"]
        require_timeout = true
        require_budget = true
        max_timeout = 900
        max_instance_cost_usd = 2.0
        max_concurrency = 4
        max_budget_usd = 20.0
        max_budget_tokens = 2000000
        allowed_cwd_prefixes = ["{tmp_path}/work"]
        allowed_models = ["claude-sonnet-*", "claude-haiku-*"]
        allowed_executables = ["/usr/bin/python3", "{FAKE}"]
        """,
    )


def permissive_tools(tmp_path):
    """The strict policy except that Bash is allowed (GOOD uses Bash(git:*))."""
    text = open(strict(tmp_path).path).read().replace('"Bash", ', "")
    return pol.load_policy(write(tmp_path, "policy.toml", text))


def test_compliant_batch_has_no_violations(tmp_path):
    p = permissive_tools(tmp_path)
    assert pol.check(p, batch(tmp_path, GOOD), "batch.toml") == []


def test_empty_policy_imposes_nothing(tmp_path):
    p = load(tmp_path, "")
    b = batch(tmp_path, '[[instances]]\nname = "x"\nprompt = "p"\npermission_mode = "bypassPermissions"\n')
    assert pol.check(p, b, "batch.toml") == []


BOTH = {"instances[0].timeout", "instances[0].max_cost_usd", "instances[0].cwd"}


@pytest.mark.parametrize(
    "change, key, fragment",
    [
        ('permission_mode = "acceptEdits"', "instances[0].permission_mode",
         '"bypassPermissions" not allowed by policy'),
        ('timeout = 600', "instances[0].timeout", "1200 seconds exceeds the maximum 900"),
        ('max_cost_usd = 1.0', "instances[0].max_cost_usd", "3 exceeds the maximum 2 dollars"),
        ('model = "claude-sonnet-4-5"', "instances[0].model", '"claude-opus-4-1" not allowed by policy'),
        ('cwd = "work"', "instances[0].cwd", "not allowed by policy"),
        ('concurrency = 2', "concurrency", "8 exceeds the maximum 4"),
        ('max_cost_usd = 10.0', "budget.max_cost_usd", "25 exceeds the maximum 20 dollars"),
        ('max_tokens = 1000000', "budget.max_tokens", "3e+06 exceeds the maximum 2e+06 tokens"),
        ('argv = ["/usr/bin/python3"', "instances[1].argv[0]", '"/bin/sh"'),
    ],
)
def test_each_rule_violated(tmp_path, change, key, fragment):
    replacement = {
        'permission_mode = "acceptEdits"': 'permission_mode = "bypassPermissions"',
        "timeout = 600": "timeout = 1200",
        "max_cost_usd = 1.0": "max_cost_usd = 3.0",
        'model = "claude-sonnet-4-5"': 'model = "claude-opus-4-1"',
        'cwd = "work"': 'cwd = "/tmp"',
        "concurrency = 2": "concurrency = 8",
        "max_cost_usd = 10.0": "max_cost_usd = 25.0",
        "max_tokens = 1000000": "max_tokens = 3000000",
        'argv = ["/usr/bin/python3"': 'argv = ["/bin/sh"',
    }[change]
    assert change in GOOD
    p = permissive_tools(tmp_path)
    text = GOOD.replace(change, replacement, 1)
    violations = pol.check(p, batch(tmp_path, text), "batch.toml")
    # [defaults] reach both instances: a changed default is reported for each instance it applies to.
    keys = [key.replace("instances[0]", f"instances[{i}]") for i in (0, 1)] if key in BOTH else [key]
    assert [v.split(": ")[1] for v in violations] == keys, violations
    for v in violations:
        assert fragment in v and p.path in v


def test_forbidden_tool_matches_base_name(tmp_path):
    p = strict(tmp_path)
    violations = pol.check(p, batch(tmp_path, GOOD), "batch.toml")
    assert violations == [
        f'batch.toml: instances[0].allowed_tools[1]: "Bash(git:*)" is forbidden by policy {p.path}: '
        'forbidden "Bash", "WebFetch"'
    ]


def test_missing_settings_are_violations(tmp_path):
    p = permissive_tools(tmp_path)
    b = batch(tmp_path, '[[instances]]\nname = "x"\nprompt = "p"\n'
                        '[[instances]]\nname = "y"\nargv = ["/usr/bin/python3"]\n')
    keys = [v.split(": ")[1] for v in pol.check(p, b, "b.toml", default_cwd=str(tmp_path / "work"))]
    assert keys == [
        "concurrency",
        "budget.max_cost_usd",
        "budget.max_tokens",
        "instances[0].timeout",
        "instances[0].max_cost_usd",
        "instances[0].max_cost_usd",
        "instances[0].model",
        "instances[1].timeout",
    ]


def test_several_violations_reported_together_in_file_order(tmp_path):
    p = strict(tmp_path)
    text = """
        concurrency = 16
        [budget]
        max_cost_usd = 100.0
        mode = "warn"
        [[instances]]
        name = "a"
        prompt = "p"
        permission_mode = "bypassPermissions"
        allowed_tools = ["WebFetch"]
        model = "gpt-4"
        timeout = 60
        max_cost_usd = 1.0
        cwd = "/etc"
        [[instances]]
        name = "b"
        argv = ["curl", "http://example"]
        timeout = 60
    """
    violations = pol.check(p, batch(tmp_path, text), "batch.toml", default_cwd=str(tmp_path / "work"))
    keys = [v.split(": ")[1] for v in violations]
    assert keys == [
        "concurrency",
        "budget.max_cost_usd",
        "budget.max_tokens",
        "budget.mode",
        "instances[0].permission_mode",
        "instances[0].allowed_tools[0]",
        "instances[0].cwd",
        "instances[0].model",
        "instances[1].argv[0]",
    ]
    assert violations[4] == (
        f'batch.toml: instances[0].permission_mode: "bypassPermissions" not allowed by policy {p.path}: '
        'allowed "default", "acceptEdits"'
    )


def test_command_line_concurrency_override_is_checked(tmp_path):
    p = load(tmp_path, "max_concurrency = 4")
    b = batch(tmp_path, 'concurrency = 2\n[[instances]]\nname = "x"\nprompt = "p"\n')
    assert pol.check(p, b, "b.toml") == []
    assert pol.check(p, b, "b.toml", concurrency=5) == [
        f"b.toml: concurrency: 5 exceeds the maximum 4 of policy {p.path}"]


def test_cwd_prefix_is_component_wise_and_resolves_dotdot(tmp_path):
    (tmp_path / "work").mkdir()
    p = load(tmp_path, f'allowed_cwd_prefixes = ["{tmp_path}/work"]')
    for cwd, ok in [("work", True), ("work/sub", True), ("workshop", False), ("work/../other", False)]:
        b = batch(tmp_path, f'[[instances]]\nname = "x"\nprompt = "p"\ncwd = "{cwd}"\n')
        assert (pol.check(p, b, "b.toml") == []) is ok, cwd
    b = batch(tmp_path, '[[instances]]\nname = "x"\nprompt = "p"\n')
    assert pol.check(p, b, "b.toml", default_cwd=str(tmp_path / "work" / "deep")) == []
    assert pol.check(p, b, "b.toml", default_cwd=str(tmp_path)) != []


def test_unset_permission_mode_counts_as_default(tmp_path):
    b = batch(tmp_path, '[[instances]]\nname = "x"\nprompt = "p"\n')
    assert pol.check(load(tmp_path, 'allowed_permission_modes = ["default"]'), b, "b") == []
    assert len(pol.check(load(tmp_path, 'allowed_permission_modes = ["plan"]'), b, "b")) == 1


@pytest.mark.parametrize(
    "text, key, fragment",
    [
        ("max_concurrency = 0", "max_concurrency", "expected a positive integer, got 0"),
        ('max_concurrency = "4"', "max_concurrency", 'got "4"'),
        ("max_budget_usd = -1", "max_budget_usd", "expected a positive number"),
        ("require_timeout = 1", "require_timeout", "expected true or false"),
        ('allowed_models = "claude"', "allowed_models", "expected a list of non-empty strings"),
        ('allowed_cwd_prefixes = ["relative"]', "allowed_cwd_prefixes", "expected absolute directories"),
        ('alowed_models = ["x"]', "alowed_models", 'unknown key; did you mean "allowed_models"?'),
    ],
)
def test_bad_policy_files_name_file_and_key(tmp_path, text, key, fragment):
    path = write(tmp_path, "policy.toml", text)
    with pytest.raises(ConfigError) as info:
        pol.load_policy(path)
    assert info.value.file == path and info.value.key == key
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{path}: {key}: ")


def test_unreadable_or_invalid_policy(tmp_path):
    with pytest.raises(ConfigError, match="cannot read policy file"):
        pol.load_policy(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        pol.load_policy(write(tmp_path, "p.toml", "x = = 1"))


def test_policy_path_precedence(tmp_path, monkeypatch):
    assert pol.policy_path("cli.toml", {pol.ENV_VAR: "env.toml"}) == "cli.toml"
    assert pol.policy_path(None, {pol.ENV_VAR: "env.toml"}) == "env.toml"
    monkeypatch.setattr(pol, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    assert pol.policy_path(None, {}) is None
    present = write(tmp_path, "present.toml", "")
    monkeypatch.setattr(pol, "DEFAULT_PATH", present)
    assert pol.policy_path(None, {}) == present


def test_policy_is_frozen(tmp_path):
    p = load(tmp_path, 'forbidden_tools = ["Bash"]')
    assert p.forbidden_tools == ("Bash",)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        p.max_concurrency = 3  # type: ignore[misc]  # the point: assigning to a frozen field


def test_run_refuses_a_violating_batch_before_starting_anything(cli, fake_claude, tmp_path):
    policy_file = write(tmp_path, "policy.toml", 'allowed_permission_modes = ["plan"]\nrequire_timeout = true\n')
    b = write(
        tmp_path,
        "batch.toml",
        f"""
        claude = "{fake_claude}"
        [[instances]]
        name = "a"
        prompt = "p"
        permission_mode = "bypassPermissions"
        """,
    )
    proc = cli("run", b, "--json", "--results-dir", str(tmp_path / "runs"), "--policy", policy_file)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "instances[0].permission_mode" in err and "instances[0].timeout" in err and policy_file in err
    assert proc.stdout == b""
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    # Through the environment variable instead of --policy: refused the same way.
    proc = cli("run", b, "--json", "--results-dir", str(tmp_path / "runs"), env={pol.ENV_VAR: policy_file})
    assert proc.returncode == 2 and b"instances[0].permission_mode" in proc.stderr


def test_validate_checks_the_policy(cli, fake_claude, tmp_path):
    policy_file = write(tmp_path, "policy.toml", 'allowed_permission_modes = ["plan"]\nrequire_timeout = true\n')
    b = write(tmp_path, "batch.toml", f'claude = "{fake_claude}"\n[[instances]]\nname = "a"\nprompt = "p"\n')
    proc = cli("validate", b, env={pol.ENV_VAR: policy_file})
    assert proc.returncode == 2 and b"instances[0].permission_mode" in proc.stderr
    ok = write(tmp_path, "ok.toml", f'claude = "{fake_claude}"\n[[instances]]\nname = "a"\nprompt = "p"\n'
               'permission_mode = "plan"\ntimeout = 60\n')
    assert cli("validate", ok, env={pol.ENV_VAR: policy_file}).returncode == 0
