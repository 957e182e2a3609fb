"""``orchestrator-pex validate BATCH``: load and plan a batch (and check a site policy) without running anything."""

from __future__ import annotations

import argparse
from typing import Dict


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("batch", help="batch file (TOML, or zen JSON)")
    from orchestrator_pex.commands.run import add_agent_options

    add_agent_options(p)
    p.add_argument("--policy", metavar="FILE",
                   help="site policy to check against (default: $ORCHESTRATOR_PEX_POLICY, else "
                        "/etc/orchestrator-pex/policy.toml if present)")
    p.add_argument("--env-file", metavar="PATH", help="check this env file too (default: the batch's env_file)")
    from orchestrator_pex.selection import add_arguments as add_selection_arguments

    add_selection_arguments(p)


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex import selection
    from orchestrator_pex.commands.run import agent_overrides, check_policy
    from orchestrator_pex.config import load_batch
    from orchestrator_pex.errors import plural
    from orchestrator_pex.plan import make_plan

    batch = load_batch(args.batch)
    plan = make_plan(batch, args.claude, env_file=args.env_file, **agent_overrides(args))
    total = len(plan.launches)
    plan, chosen = selection.apply(plan, selection.Selection.from_args(args))
    check_policy(plan, args)
    kinds: Dict[str, int] = {}
    for launch in plan.launches:
        kinds[launch.kind] = kinds.get(launch.kind, 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    selected = f" selected of {total}" if chosen else ""
    print(f"{args.batch}: ok, {plural(len(plan.launches), 'instance')}{selected} ({detail})")
    return 0
