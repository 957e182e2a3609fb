"""Commands turn their arguments into one frozen request; library code never sees an argparse Namespace."""

from __future__ import annotations

import argparse
import ast
import os

import attrs
import pytest

from orchestrator_pex import cli
from orchestrator_pex.request import RunOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_options_from_parsed_arguments():
    args = cli.build_parser("run").parse_args(
        ["run", "b.toml", "--json-logs", "--concurrency", "3", "--stagger", "0.5", "--deadline", "9", "--no-report",
         "--metrics-file", "m.prom", "--lock", "l.lock", "--wait-lock", "4", "--policy", "p.toml", "--claude", "c",
         "--results-dir", "out", "--json", "--codex", "cx", "--gemini", "gm"])
    options = RunOptions.from_args(args)
    assert options == RunOptions(results_dir="out", progress="json", json=True, claude="c", codex="cx", gemini="gm",
                                 concurrency=3,
                                 stagger=0.5, deadline=9.0, policy="p.toml", report_html=False,
                                 metrics_file="m.prom", lock="l.lock", wait_lock=4.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.results_dir = "elsewhere"  # type: ignore[misc]
    defaults = RunOptions.from_args(cli.build_parser("run").parse_args(["run", "b.toml"]))
    assert defaults == RunOptions() and defaults.progress == "auto" and defaults.report_html
    assert RunOptions.from_args(argparse.Namespace()) == RunOptions()  # a command without some options


def test_run_options_carry_env_file_and_selection():
    """--env-file and --only/--tags/--exclude (merged from ops) are read once too; validate takes the same."""
    from orchestrator_pex.selection import Selection

    argv = ["b.toml", "--env-file", "s.env", "--only", "a,b", "--only", "c", "--tags", "x", "--exclude", "b"]
    for command in ("run", "validate"):
        options = RunOptions.from_args(cli.build_parser(command).parse_args([command, *argv]))
        assert options.env_file == "s.env"
        assert options.selection == Selection(only=("a", "b", "c"), tags=("x",), exclude=("b",))
    demo = RunOptions.from_args(cli.build_parser("demo").parse_args(["demo", "--env-file", "s.env"]))
    assert demo.env_file == "s.env" and not demo.selection


def test_no_namespace_reaches_library_modules():
    """Outside commands/ and cli.py, no function takes or reads an argparse Namespace (``args``)."""
    package = os.path.join(ROOT, "orchestrator_pex")
    offenders = []
    for name in sorted(os.listdir(package)):
        if not name.endswith(".py") or name in ("cli.py", "request.py"):
            continue
        with open(os.path.join(package, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any(a.arg == "args" for a in node.args.args + node.args.kwonlyargs):
                    offenders.append(f"{name}:{node.lineno} {node.name}(args)")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "argparse" \
                    and node.attr == "Namespace":
                offenders.append(f"{name}:{node.lineno} argparse.Namespace")
    assert offenders == []


def test_commands_do_not_import_each_other():
    """run, resume and demo share session.py and request.py, never another command's module."""
    commands = os.path.join(ROOT, "orchestrator_pex", "commands")
    for name in ("run.py", "resume.py", "demo.py", "validate.py"):
        with open(os.path.join(commands, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        others = {m for m in imported if m.startswith("orchestrator_pex.commands.")} - {"orchestrator_pex.commands.run"}
        assert not others, (name, others)
        if name != "run.py":
            # only the shared option definitions (add_run_options, add_agent_options) may come from run.py
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == "orchestrator_pex.commands.run":
                    assert {a.name for a in node.names} <= {"add_run_options", "add_agent_options"}, \
                        (name, node.lineno)
