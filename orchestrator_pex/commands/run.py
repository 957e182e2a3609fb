"""``orchestrator-pex run BATCH``: validate, plan, preflight, then run the batch and write its results."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any, Dict, Optional, Tuple

from orchestrator_pex import limits


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


#: ``--concurrency``: an integer in [1, MAX_CONCURRENCY] (the batch key's bound)
_positive_int = limits.int_argument(1, limits.MAX_CONCURRENCY,
                                    f"a positive integer, at most {limits.MAX_CONCURRENCY}")
#: ``--stagger``/``--deadline``: a finite number of seconds in (0, MAX_SECONDS] (the batch keys' bound)
_seconds = limits.float_argument(0.0, limits.MAX_SECONDS, f"a positive number of seconds, at most "
                                 f"{limits.MAX_SECONDS:.0f}", open_min=True)


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex import checks
    from orchestrator_pex.plan import lean
    from orchestrator_pex.request import RunRequest

    request = RunRequest.from_args(args)
    if request.start_at is not None:  # refuse a bad --start-at before reading anything else
        import datetime

        from orchestrator_pex.start_at import parse_start_at

        parse_start_at(request.start_at, datetime.datetime.now().astimezone())
    options = request.options
    shard = _shard(request.shard)
    narrow = None
    if shard is not None:
        from orchestrator_pex.shard import restrict

        def narrow(plan: Any) -> Tuple[Any, Dict[str, Any]]:
            return restrict(plan, shard, request.budget_share)

    # The same checks as `validate` (orchestrator_pex.checks), every problem at once; --dry-run skips preflight.
    findings = checks.examine(request.batch, claude=options.claude,
                              agents={"codex": options.codex, "gemini": options.gemini}, policy=options.policy,
                              concurrency=options.concurrency, results_dir=options.results_dir, narrow=narrow,
                              preflight=not request.dry_run, env_file=options.env_file, selection=options.selection)
    findings.warn()
    findings.refuse()
    plan = findings.plan
    if request.dry_run:
        print_dry_run(plan, sys.stdout)
        return 0
    meta, agent_versions = findings.meta, findings.agent_versions
    del findings  # with it the batch's own instances: the run holds only the launches' (plan.lean, issue 14)
    plan = lean(plan)
    from orchestrator_pex.session import launch  # not before: --dry-run never imports the run's modules (P3)

    return launch(plan, options, start_at=request.start_at or plan.batch.start_at, meta=meta,
                  agent_versions=agent_versions)


def _shard(given: Optional[str]) -> Optional[Tuple[int, int]]:
    """``--shard I/N`` as given, else the shard the environment names (Kubernetes, Slurm), else None."""
    from orchestrator_pex import shard

    if given:
        return shard.parse_shard(given)
    return shard.shard_from_env(os.environ)


def print_dry_run(plan, out) -> None:
    from orchestrator_pex.agents import session_uuid
    from orchestrator_pex.errors import plural
    from orchestrator_pex.secrets import Redactor, redact_env

    secret = plan.env_file_values
    scrub = Redactor.from_env(None, *(one.env_add for one in plan.launches), always=secret.values()).scrub_text

    from orchestrator_pex import graph

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
            from orchestrator_pex.results import log_stem  # only here: results imports the records (P3)
            from orchestrator_pex.workspace import branch_name

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
