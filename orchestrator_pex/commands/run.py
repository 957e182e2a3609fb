"""``orchestrator-pex run BATCH``: validate, plan, preflight, then run the batch and write its results."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("batch", help="batch file (TOML, or zen JSON)")
    add_run_options(p)
    p.add_argument("--dry-run", action="store_true", help="print each instance's argv and environment changes; start nothing")
    p.add_argument("--start-at", metavar="WHEN", help="wait until WHEN: 2am, 14:30, 30m, or ISO 8601")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``resume``."""
    p.add_argument("--json", action="store_true", help="print the results document on stdout (and nothing else)")
    p.add_argument("--json-logs", action="store_true", help="log one JSON object per event on stderr")
    p.add_argument("--results-dir", metavar="DIR",
                   help="where run directories go (default: $ORCHESTRATOR_PEX_RESULTS_DIR or ./orchestrator-runs)")
    p.add_argument("--claude", metavar="PATH", help="Claude Code executable (default: batch `claude =`, else PATH)")
    p.add_argument("--concurrency", type=_positive_int, metavar="N",
                   help="hard cap on instances running at once (default: batch, else 32; headroom decides below it)")
    p.add_argument("--stagger", type=_seconds, metavar="SECONDS", help="minimum time between two launches")
    p.add_argument("--deadline", type=_seconds, metavar="SECONDS", help="stop the whole batch after SECONDS")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex.config import load_batch
    from orchestrator_pex.plan import make_plan

    batch = load_batch(args.batch)
    plan = make_plan(batch, args.claude)
    if args.dry_run:
        print_dry_run(plan, sys.stdout)
        return 0
    return launch(plan, args, start_at=args.start_at)


def launch(plan, args, *, start_at=None, run_id=None, only=None, prior=None, extra_sinks=()) -> int:
    """Preflight, then run ``plan`` under trio; print the results document with ``--json``."""
    import datetime

    import trio

    from orchestrator_pex import report, runner
    from orchestrator_pex.plan import preflight
    from orchestrator_pex.results import default_results_dir
    from orchestrator_pex.start_at import parse_start_at

    when = parse_start_at(start_at, datetime.datetime.now().astimezone()) if start_at else None
    agent_version = preflight(plan)
    results_dir = args.results_dir or plan.batch.results_dir or default_results_dir()
    run_id, run_dir = runner.prepare_run_dir(results_dir, plan.batch.path, run_id)
    console = report.Console(runner.console_mode(args.json_logs))
    doc, status = trio.run(
        lambda: runner.execute(
            plan, run_id=run_id, run_dir=run_dir, console=console, sinks=extra_sinks, agent_version=agent_version,
            start_at=when, only=only, prior=prior, concurrency=args.concurrency, stagger=args.stagger,
            deadline=args.deadline,
        )
    )
    if console.mode != "json":
        print(report.summary_table(doc), file=sys.stderr)
        print(f"results: {os.path.join(run_dir, 'results.json')}", file=sys.stderr)
    if args.json:
        json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        sys.stdout.flush()
    return status


def print_dry_run(plan, out) -> None:
    from orchestrator_pex.secrets import redact_env

    print(f"# {plan.batch.path}: {len(plan.launches)} instances; nothing is started", file=out)
    for launch in plan.launches:
        inst = launch.instance
        print(f"\n[{launch.name}] ({launch.kind})", file=out)
        print(f"  argv: {shlex.join(launch.argv)}", file=out)
        if launch.cwd:
            print(f"  cwd:  {launch.cwd}", file=out)
        for key, value in sorted(redact_env(launch.env_add).items()):
            print(f"  env:  {key}={value}", file=out)
        limits = [f"{k}={getattr(inst, k):g}" for k in ("timeout", "stall_timeout", "max_cost_usd")
                  if getattr(inst, k) is not None]
        limits += [f"{k}={getattr(inst, k)}" for k in ("max_tokens", "max_turns", "retries")
                   if getattr(inst, k) is not None]
        print(f"  limits: {' '.join(limits)}", file=out)
