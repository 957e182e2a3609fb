"""``orchestrator-pex validate BATCH``: everything ``run`` checks before it starts anything, without running it.

The checks are :func:`orchestrator_pex.checks.examine` (the same function ``run`` refuses on): the batch's
structure and values, its dependency graph, the site policy, and preflight (programs and the agent found on the
PATH each instance will use, the agent's ``--version``, working directories, ``bypassPermissions`` as root,
worktree repository and base). Every problem is one line ``FILE: KEY: message`` on stderr, in file order (at most
:data:`~orchestrator_pex.errors.MAX_PROBLEM_LINES`, then ``... and N more problems``), exit 2. Warnings (an unknown
model name) are lines ``FILE: KEY: warning: ...`` and do not change the exit status. Nothing is started but the
agent's ``--version``, and nothing is written. ``--no-preflight`` leaves out the checks of this machine (for a batch
installed by another user than the one that runs it, as the Ansible role does).
"""

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
    p.add_argument("--no-preflight", action="store_true",
                   help="check the batch and the site policy only, not this machine: programs and the agent on the "
                        "PATH, working directories, bypassPermissions as root, worktrees (for a batch checked by "
                        "another user or on another host than the one that runs it)")
    from orchestrator_pex.selection import add_arguments as add_selection_arguments

    add_selection_arguments(p)


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex import checks
    from orchestrator_pex.errors import plural
    from orchestrator_pex.request import ValidateRequest

    request = ValidateRequest.from_args(args)
    options = request.options
    agents = {"codex": options.codex, "gemini": options.gemini}
    findings = checks.examine(request.batch, claude=options.claude, agents=agents, policy=options.policy,
                              preflight=request.preflight, env_file=options.env_file,
                              selection=options.selection)
    findings.warn()
    findings.refuse()
    plan = findings.plan
    chosen = findings.meta.get("selection")
    kinds: Dict[str, int] = {}
    for launch in plan.launches:
        kinds[launch.kind] = kinds.get(launch.kind, 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    selected = f" selected of {len(plan.batch.instances)}" if chosen else ""
    print(f"{request.batch}: ok, {plural(len(plan.launches), 'instance')}{selected} ({detail})")
    return 0
