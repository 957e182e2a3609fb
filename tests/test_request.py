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


def test_every_command_reads_its_arguments_once_into_a_request():
    """In commands/*.py only ``main`` takes the parsed arguments, and it reads them exactly once: as the argument of
    a request's ``from_args``. Every other function gets the frozen request (or values from it), never the
    Namespace."""
    commands = os.path.join(ROOT, "orchestrator_pex", "commands")
    offenders = []
    names = sorted(n for n in os.listdir(commands) if n.endswith(".py") and n != "__init__.py")
    assert {"run.py", "resume.py", "demo.py", "merge.py", "runs.py", "report.py", "schedule.py", "validate.py",
            "init.py", "self_cmd.py", "version_cmd.py"} <= set(names)
    for name in names:
        with open(os.path.join(commands, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert len(mains) == 1, name
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node not in mains \
                    and any(a.arg == "args" for a in node.args.args + node.args.kwonlyargs):
                offenders.append(f"{name}:{node.lineno} {node.name}(args)")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "argparse" \
                    and node.attr == "Namespace" and not any(node is a.annotation for a in mains[0].args.args):
                offenders.append(f"{name}:{node.lineno} argparse.Namespace")
        uses = [n for n in ast.walk(mains[0]) if isinstance(n, ast.Name) and n.id == "args"]
        from_args = [c for c in ast.walk(mains[0]) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                     and c.func.attr == "from_args" and len(c.args) == 1 and isinstance(c.args[0], ast.Name)
                     and c.args[0].id == "args"]
        if len(uses) != 1 or len(from_args) != 1:
            offenders.append(f"{name}: main reads args {len(uses)} times, {len(from_args)} of them through from_args")
    assert offenders == []


def test_requests_of_the_other_commands():
    """Each command's request holds what its options say, frozen; absent options keep the documented defaults."""
    from orchestrator_pex import request as rq

    def parsed(*argv):
        return cli.build_parser(argv[0]).parse_args(list(argv))

    run = rq.RunRequest.from_args(parsed("run", "b.toml", "--shard", "1/3", "--budget-share", "auto", "--dry-run",
                                         "--start-at", "2am", "--concurrency", "2"))
    assert run == rq.RunRequest(batch="b.toml", options=RunOptions(concurrency=2), start_at="2am", shard="1/3",
                                budget_share=True, dry_run=True)
    assert rq.RunRequest.from_args(parsed("run", "b.toml")) == rq.RunRequest(batch="b.toml")
    assert rq.ResumeRequest.from_args(parsed("resume", "RUN", "--rerun-failed", "--json", "--results-dir", "r")) \
        == rq.ResumeRequest(run_dir="RUN", options=RunOptions(json=True, results_dir="r"), rerun_failed=True)
    assert rq.ValidateRequest.from_args(parsed("validate", "b.toml", "--no-preflight")) \
        == rq.ValidateRequest(batch="b.toml", preflight=False)
    assert rq.MergeRequest.from_args(parsed("merge", "a.json", "b", "-o", "m.json", "--no-report", "--partial",
                                            "--exit-status")) \
        == rq.MergeRequest(results=("a.json", "b"), output="m.json", partial=True, report_html=False, exit_status=True)
    assert rq.RunsRequest.from_args(parsed("runs", "prune", "--keep", "3", "--dry-run", "--json")) \
        == rq.RunsRequest(action="prune", keep=3, dry_run=True, json=True)
    assert rq.RunsRequest.from_args(parsed("runs", "watch", "latest", "--interval", "0.5")) \
        == rq.RunsRequest(action="watch", run_id="latest", interval=0.5)
    assert rq.RunsRequest.from_args(parsed("runs", "list", "--status", "failed", "--batch", "n")) \
        == rq.RunsRequest(action="list", status="failed", batch="n")
    schedule = rq.ScheduleRequest.from_args(parsed("schedule", "cron", "--at", "@daily", "b.toml", "--run-arg=-x",
                                                   "--run-arg", "y", "--env-file", "s.env"))
    assert schedule == rq.ScheduleRequest(scheduler="cron", batch="b.toml", at="@daily", run_arg=("-x", "y"),
                                          env_file="s.env", python="/usr/bin/python3",
                                          results_dir="/var/lib/orchestrator-pex/results",
                                          pex_root="/var/cache/orchestrator-pex")
    assert schedule.flag("batch") == "BATCH" and schedule.flag("env_file") == "--env-file"
    assert rq.SelfRequest.from_args(parsed("self", "verify", "--pex", "x.pex")) \
        == rq.SelfRequest(action="verify", pex="x.pex")
    assert rq.InitRequest.from_args(parsed("init", "x.toml", "--example", "fanout", "--force")) \
        == rq.InitRequest(path="x.toml", example="fanout", force=True)
    assert rq.InitRequest.from_args(parsed("init")) == rq.InitRequest()
    assert rq.ReportRequest.from_args(parsed("report", "RUN", "-o", "r.html")) \
        == rq.ReportRequest(source="RUN", output="r.html")
    assert rq.VersionRequest.from_args(parsed("version", "--json")) == rq.VersionRequest(json=True)
    for request in (run, schedule, rq.VersionRequest()):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            request.json = True  # type: ignore[misc, attr-defined]


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
