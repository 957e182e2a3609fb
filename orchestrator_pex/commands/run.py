"""``orchestrator-pex run BATCH``: validate, plan, preflight, then run the batch and write its results."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from orchestrator_pex import strictjson


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("batch", help="batch file (TOML, or zen JSON)")
    add_run_options(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print each instance's argv and environment changes; start nothing")
    p.add_argument("--start-at", metavar="WHEN", help="wait until WHEN: 2am, 14:30, 30m, or ISO 8601")
    p.add_argument("--shard", metavar="I/N",
                   help="run only shard I of N (stable by instance name); default from JOB_COMPLETION_INDEX + "
                        "ORCHESTRATOR_PEX_SHARD_COUNT (Kubernetes) or SLURM_ARRAY_TASK_ID/_COUNT (Slurm)")
    p.add_argument("--budget-share", choices=("none", "auto"), default="none",
                   help="auto: divide the batch's overall budgets by the shard count "
                        "(default: each shard gets them whole)")
    from orchestrator_pex.selection import add_arguments as add_selection_arguments

    add_selection_arguments(p)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``resume``."""
    p.add_argument("--json", action="store_true", help="print the results document on stdout (and nothing else)")
    p.add_argument("--progress", choices=("auto", "table", "lines", "json", "none"), default="auto",
                   help="how progress shows on stderr: table (live view, redrawn in place), lines (timestamped), json "
                        "(one object per event), none; auto: table on a terminal, lines otherwise")
    p.add_argument("--json-logs", action="store_true", help="the same as --progress json")
    p.add_argument("--results-dir", metavar="DIR",
                   help="where run directories go (default: $ORCHESTRATOR_PEX_RESULTS_DIR or ./orchestrator-runs)")
    add_agent_options(p)
    p.add_argument("--concurrency", type=_positive_int, metavar="N",
                   help="hard cap on instances running at once (default: batch, else 32; headroom decides below it)")
    p.add_argument("--stagger", type=_seconds, metavar="SECONDS", help="minimum time between two launches")
    p.add_argument("--deadline", type=_seconds, metavar="SECONDS", help="stop the whole batch after SECONDS")
    p.add_argument("--env-file", metavar="PATH",
                   help="KEY=VALUE lines added to every instance's environment, all values treated as secrets "
                        "(default: the batch's env_file); must be owned by you and chmod 600")
    p.add_argument("--policy", metavar="FILE",
                   help="site policy to enforce (default: $ORCHESTRATOR_PEX_POLICY, else "
                        "/etc/orchestrator-pex/policy.toml if present)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html into the run directory")
    p.add_argument("--metrics-file", metavar="PATH",
                   help="write Prometheus textfile metrics here (default: the batch's metrics_file, else none)")
    from orchestrator_pex.lock import add_lock_arguments

    add_lock_arguments(p)


def add_agent_options(p: argparse.ArgumentParser) -> None:
    """``--claude``, ``--codex``, ``--gemini``: each agent's executable, overriding the batch file's."""
    p.add_argument("--claude", metavar="PATH", help="Claude Code executable (default: batch `claude =`, else PATH)")
    p.add_argument("--codex", metavar="PATH", help="Codex CLI executable (default: batch `codex =`, else PATH)")
    p.add_argument("--gemini", metavar="PATH", help="Gemini CLI executable (default: batch `gemini =`, else PATH)")


def agent_overrides(args: argparse.Namespace) -> dict:
    """The ``codex``/``gemini`` keyword arguments of :func:`~orchestrator_pex.plan.make_plan` from ``args``."""
    return {"codex": getattr(args, "codex", None), "gemini": getattr(args, "gemini", None)}


def _positive_int(text: str) -> int:
    """``--concurrency``: an integer in [1, MAX_CONCURRENCY] (the batch key's bound)."""
    from orchestrator_pex.limits import MAX_CONCURRENCY, parse_int

    value = parse_int(text, 1, MAX_CONCURRENCY)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a positive integer, at most {MAX_CONCURRENCY}, got {text[:40]!r}")
    return value


def _seconds(text: str) -> float:
    """``--stagger``/``--deadline``: a finite number of seconds in (0, MAX_SECONDS] (the batch keys' bound)."""
    from orchestrator_pex.limits import MAX_SECONDS, parse_float

    value = parse_float(text, 0.0, MAX_SECONDS, open_min=True)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, at most {MAX_SECONDS:.0f}, got {text[:40]!r}")
    return value


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex import checks, selection

    if args.start_at is not None:  # refuse a bad --start-at before reading anything else
        import datetime

        from orchestrator_pex.start_at import parse_start_at

        parse_start_at(args.start_at, datetime.datetime.now().astimezone())
    shard = _shard(args)
    narrow = (lambda plan: _shard_plan(plan, shard, args.budget_share == "auto")) if shard is not None else None
    # The same checks as `validate` (orchestrator_pex.checks), every problem at once; --dry-run skips preflight.
    findings = checks.examine(args.batch, claude=args.claude, agents=agent_overrides(args), policy=args.policy,
                              concurrency=args.concurrency, results_dir=args.results_dir, narrow=narrow,
                              preflight=not args.dry_run, env_file=args.env_file,
                              selection=selection.Selection.from_args(args))
    findings.warn()
    findings.refuse()
    plan = findings.plan
    if args.dry_run:
        print_dry_run(plan, sys.stdout)
        return 0
    return launch(plan, args, start_at=args.start_at or plan.batch.start_at, meta=findings.meta,
                  agent_versions=findings.agent_versions)


def _shard(args):
    from orchestrator_pex import shard

    if args.shard:
        return shard.parse_shard(args.shard)
    return shard.shard_from_env(os.environ)


def _shard_plan(plan, where, share_budget: bool):
    """Only shard ``where`` = (index, count) of ``plan``; with ``share_budget`` the overall budgets divided by count."""
    import attrs

    from orchestrator_pex import shard
    from orchestrator_pex.errors import UsageError

    index, count = where
    needs = {launch.name: launch.instance.needs or () for launch in plan.launches}
    names = set(shard.select([launch.name for launch in plan.launches], index, count, needs))
    for name in names:  # a shard holds whole dependency components (shard.select guarantees it; refuse otherwise)
        outside = [n for n in needs[name] if n not in names]
        if outside:
            raise UsageError(f"--shard {index}/{count}: {name} needs {outside[0]}, which another shard would run: "
                             "a shard must hold whole connected components of the dependency graph")
    batch = plan.batch
    if share_budget:
        budget = batch.budget
        batch = attrs.evolve(batch, budget=attrs.evolve(
            budget,
            max_tokens=budget.max_tokens // count if budget.max_tokens else None,
            max_cost_usd=budget.max_cost_usd / count if budget.max_cost_usd else None,
        ))
    launches = tuple(launch for launch in plan.launches if launch.name in names)
    return attrs.evolve(plan, batch=batch, launches=launches), {"shard": {"index": index, "count": count}}


def shard_lock_variant(shard) -> str | None:
    """Shards of one batch on one host lock separately: ``shard-I-of-N`` (None for an unsharded run)."""
    if isinstance(shard, dict) and isinstance(shard.get("index"), int) and isinstance(shard.get("count"), int):
        return f"shard-{shard['index']}-of-{shard['count']}"
    return None


def check_policy(plan, args):
    """Refuse a batch that violates the site policy in force (if any), listing every violation, one line each;
    exit 2. Returns the plan to run: with the policy's ``forbidden_tools`` passed to Claude as ``--disallowedTools``.
    (``run`` itself checks the policy through :func:`orchestrator_pex.checks.examine`; ``resume`` uses this.)"""
    from orchestrator_pex import checks
    from orchestrator_pex.errors import Problems

    plan, problems = checks.policy_problems(plan, getattr(args, "policy", None),
                                            concurrency=getattr(args, "concurrency", None),
                                            results_dir=getattr(args, "results_dir", None))
    if problems:
        raise Problems(problems)
    return plan


def launch(plan, args, *, start_at=None, run_id=None, only=None, prior=None, extra_sinks=(), held_lock=None,
           meta=None, spent=(0, 0.0), carried=None, agent_versions=None) -> int:
    """Take the batch lock (unless the caller holds it: ``held_lock``), then :func:`_launch_locked`.
    ``agent_versions``: preflight already passed (:func:`orchestrator_pex.checks.examine`) and found these; None:
    preflight runs under the lock."""
    from orchestrator_pex import lock

    options = dict(start_at=start_at, run_id=run_id, only=only, prior=prior, extra_sinks=extra_sinks, meta=meta,
                   spent=spent, carried=carried, agent_versions=agent_versions)
    if held_lock is not None:
        return _launch_locked(plan, args, held_lock=held_lock, **options)
    lock_path = lock.lock_for_args(args, plan.batch.path, variant=shard_lock_variant((meta or {}).get("shard")))
    with lock.acquire(lock_path, getattr(args, "wait_lock", None)) as held:
        return _launch_locked(plan, args, held_lock=held, **options)


def _launch_locked(plan, args, *, start_at, run_id, only, prior, extra_sinks, held_lock, meta, spent,
                   carried, agent_versions) -> int:
    """Preflight, then run ``plan`` under trio, journaled and guarded; print the results document with ``--json``."""
    import datetime

    import trio

    from orchestrator_pex import guardian, report, runner
    from orchestrator_pex.plan import preflight_agents, version_of
    from orchestrator_pex.pricing import PRICING_VERSION
    from orchestrator_pex.results import default_results_dir
    from orchestrator_pex.secrets import Redactor
    from orchestrator_pex.start_at import parse_start_at

    when = parse_start_at(start_at, datetime.datetime.now().astimezone()) if start_at else None
    if agent_versions is None:
        agent_versions = preflight_agents(plan)
    agent_version = version_of(agent_versions)
    results_dir = args.results_dir or _batch_relative(plan.batch, plan.batch.results_dir) or default_results_dir()
    redactor = Redactor.from_env(None, *(launch.env_add for launch in plan.launches),
                                 always=plan.env_file_values.values())
    run_id, run_dir, facts = runner.prepare_run_dir(results_dir, plan.batch.path, run_id, redactor)
    meta = {**facts, "agent_versions": agent_versions, "pricing_version": PRICING_VERSION, **(meta or {})}
    console = report.Console(runner.console_mode(args), scrub=redactor.scrub_text)
    with guardian.protect(run_dir, held_lock, grace=plan.batch.grace_period) as safe:  # journal + orphan guardian
        doc, status = trio.run(
            lambda: runner.execute(
                plan, run_id=run_id, run_dir=run_dir, console=console, sinks=[*safe.sinks, *extra_sinks],
                agent_version=agent_version, start_at=when, only=only, prior=prior, meta=meta, spent=spent,
                carried=carried, report_html=not getattr(args, "no_report", False),
                metrics_file=getattr(args, "metrics_file", None)
                or _batch_relative(plan.batch, plan.batch.metrics_file),
                concurrency=args.concurrency, stagger=getattr(args, "stagger", None),
                deadline=getattr(args, "deadline", None), redactor=redactor, watchers=[safe.watch],
                **safe.scheduler_options,
            )
        )
    if console.mode not in ("json", "none"):
        print(report.summary_table(doc), file=sys.stderr)
        print(f"results: {os.path.join(run_dir, 'results.json')}", file=sys.stderr)
    if args.json:
        strictjson.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        sys.stdout.flush()
    internal = doc.get("internal_error")
    if isinstance(internal, dict):  # the run's error boundary caught a bug: one line naming the traceback
        where = f"traceback saved to {internal['traceback']}" if internal.get("traceback") else \
            "the traceback could not be saved"
        print(f"orchestrator-pex: {internal['error']} ({where}); resume reruns the instances it ended",
              file=sys.stderr)
    return status


def _batch_relative(batch, path):
    """``path`` from the batch file, resolved against the batch file's folder."""
    if not path:
        return None
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(batch.path), path)


def print_dry_run(plan, out) -> None:
    from orchestrator_pex.agents import session_uuid
    from orchestrator_pex.errors import plural
    from orchestrator_pex.secrets import Redactor, redact_env

    secret = plan.env_file_values
    scrub = Redactor.from_env(None, *(one.env_add for one in plan.launches), always=secret.values()).scrub_text

    from orchestrator_pex import graph
    from orchestrator_pex.results import log_stem
    from orchestrator_pex.workspace import branch_name

    print(f"# {plan.batch.path}: {plural(len(plan.launches), 'instance')}; nothing is started", file=out)
    if plan.env_file:
        print(f"# env file: {plan.env_file} ({plural(len(secret), 'variable')}, values masked)", file=out)
    needs = {launch.name: tuple(launch.instance.needs or ()) for launch in plan.launches}
    if any(needs.values()):
        depth = graph.levels(needs)
        print("# dependency order: " + ", ".join(graph.order(needs))
              + " (placeholders such as {{a.result}} are filled when the instance starts)", file=out)
    for launch in plan.launches:
        inst = launch.instance
        print(f"\n[{launch.name}] ({launch.kind})", file=out)
        if inst.description:
            print(f"  description: {scrub(inst.description)}", file=out)
        if inst.tags:
            print(f"  tags: {scrub(', '.join(inst.tags))}", file=out)
        if inst.needs:
            print(f"  needs: {', '.join(inst.needs)} (when {inst.when or 'success'}; level {depth[launch.name]})",
                  file=out)
        if inst.workspace == "worktree":
            print(f"  workspace: worktree of {inst.repo or 'the repository holding cwd'} at {inst.base or 'HEAD'}, "
                  f"branch {branch_name('RUN_ID', log_stem(launch.name))}, keep {inst.keep}, commit "
                  f"{'true' if inst.commit else 'false'}", file=out)
        print(f"  argv: {scrub(shlex.join(launch.argv))}", file=out)
        for key in ("session_id", "resume"):
            value = getattr(inst, key)
            mapped = launch.kind == "claude" or (launch.kind == "gemini" and key == "session_id")
            if value and mapped and graph.placeholders(value):
                print(f"  {key}: {json.dumps(value, ensure_ascii=False)} (filled when the instance starts, then "
                      "mapped to a UUID by uuid5 if it is not one)", file=out)
            elif value and mapped and session_uuid(value) != value:
                print(f"  {key}: {json.dumps(value, ensure_ascii=False)} -> {session_uuid(value)} "
                      "(uuid5 of the name: not a UUID)", file=out)
        if launch.cwd:
            print(f"  cwd:  {scrub(launch.cwd)}", file=out)
        for key, value in sorted(redact_env(launch.env_add).items()):  # by name, then by value
            if key in secret and value == secret[key]:
                value = "***"
            print(f"  env:  {key}={scrub(value)}", file=out)
        limits = [f"{k}={getattr(inst, k):g}" for k in ("timeout", "stall_timeout", "max_cost_usd")
                  if getattr(inst, k) is not None]
        limits += [f"{k}={getattr(inst, k)}" for k in ("max_tokens", "max_turns", "retries")
                   if getattr(inst, k) is not None]
        print(f"  limits: {' '.join(limits)}", file=out)
