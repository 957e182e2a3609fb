"""Everything ``run`` checks before it starts anything, collected in one place: ``validate`` reports it, ``run``
refuses on it, so the two never disagree.

:func:`examine` runs the checks in this order and returns every problem found, each one line ``FILE: KEY: message``,
sorted in file order (the position of KEY in the batch file; problems of the batch as a whole, e.g. the agent
executable or the policy file, come first):

1. **The batch file** (:func:`orchestrator_pex.config.examine_batch_file`): the file itself, the characters of
   its strings, structure and values (every leaf problem cattrs reports), the checks across keys, and the
   dependency graph. Keys found wrong are left out and the rest is checked on. **Rule:** when no batch can be
   built at all (the file cannot be read or parsed, a string holds a forbidden character, ``instances`` is not a
   list, or an instance is not a table or has no valid ``name``), the examination stops here: no plan can be made.
2. **The plan** (:func:`orchestrator_pex.plan.make_plan`): agent and ``argv[0]`` resolved on the PATH each
   instance will use, working directories resolved. ``narrow`` (``run --shard``) is applied only to a batch
   without problems (a broken batch is refused whatever the shard).
3. **The site policy** (:mod:`orchestrator_pex.policy`) in force, if any: every violation. A policy file that
   cannot be read is one problem naming it; its rules are then not applied.
4. **Preflight** (:func:`orchestrator_pex.plan.preflight_problems`; ``run --dry-run`` skips it): programs found
   and executable, ``--version`` of each agent the batch uses, working directories exist, ``bypassPermissions``
   not as root, Codex's ``CODEX_HOME`` usable, worktree repository and base usable.

Warnings do not refuse a batch: a model name that neither the price table nor the agent's aliases know
(:func:`orchestrator_pex.pricing.is_known`) is one line ``FILE: KEY: warning: ...``.

Nothing here writes a file or starts a process other than ``AGENT --version``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

import attrs

from orchestrator_pex.errors import Problem, Problems


@attrs.frozen
class Findings:
    """What :func:`examine` found. ``plan`` is None when the examination stopped at the batch file."""

    plan: Any  # orchestrator_pex.plan.Plan, with the policy's forbidden_tools applied; or None
    problems: Tuple[Problem, ...]
    warnings: Tuple[Problem, ...] = ()
    agent_versions: Optional[Dict[str, str]] = None  # from preflight, by agent name (None: preflight not run)
    meta: Dict[str, Any] = attrs.field(factory=dict)  # from ``narrow`` (the shard)

    def warn(self, out: Optional[TextIO] = None) -> None:
        """Print each warning on ``out`` (stderr), one line each, with the command line's prefix."""
        for warning in self.warnings:
            print(f"orchestrator-pex: {warning.line()}", file=out or sys.stderr)

    def refuse(self) -> None:
        """Raise :class:`~orchestrator_pex.errors.Problems` (exit 2; every problem, one line each) if there are any."""
        if self.problems:
            raise Problems(self.problems)


def examine(
    batch_path: str,
    *,
    claude: Optional[str] = None,
    agents: Optional[Dict[str, Optional[str]]] = None,
    policy: Optional[str] = None,
    concurrency: Optional[int] = None,
    results_dir: Optional[str] = None,
    narrow: Optional[Callable[[Any], Tuple[Any, Dict[str, Any]]]] = None,
    preflight: bool = True,
    env_file: Optional[str] = None,
    selection: Any = None,
) -> Findings:
    """Every problem of the batch at ``batch_path`` that ``run`` with these options would refuse (see the module
    docstring for the stages). ``claude``, ``policy``, ``concurrency`` and ``results_dir`` are the command-line
    options of the same names (None: not given); ``agents`` the ``codex``/``gemini`` executables of
    :func:`orchestrator_pex.plan.make_plan` (``--codex``, ``--gemini``); ``env_file`` the ``--env-file`` option;
    ``selection`` an :class:`orchestrator_pex.selection.Selection` (``--only``/``--tags``/``--exclude``), applied
    to the plan before the shard and the checks (``meta["selection"]`` records it)."""
    from orchestrator_pex import config
    from orchestrator_pex.plan import make_plan

    found = config.examine_batch_file(batch_path)
    problems = [Problem(p.file, p.key, p.message) for p in found.problems]
    batch = found.batch
    if batch is None:
        return Findings(plan=None, problems=tuple(problems))
    label = os.path.basename(batch.path)
    overrides = agents or {}
    plan = make_plan(batch, claude, codex=overrides.get("codex"), gemini=overrides.get("gemini"), env_file=env_file)
    meta: Dict[str, Any] = {}
    if selection:
        from orchestrator_pex import selection as selection_mod

        plan, chosen = selection_mod.apply(plan, selection)
        if chosen:
            meta["selection"] = chosen
    if narrow is not None and not problems:
        plan, shard_meta = narrow(plan)
        meta.update(shard_meta)
    more: List[Problem] = []
    plan, policy_problems = _policy(plan, label, policy, concurrency, results_dir)
    more += policy_problems
    agent_versions = None
    if preflight:
        from orchestrator_pex.plan import preflight_problems

        preflight_found, agent_versions = preflight_problems(plan)
        more += preflight_found
    ordered = sorted([*problems, *more], key=lambda p: found.position(p.key) if p.file == label else (-2,))
    return Findings(plan=plan, problems=tuple(ordered), warnings=_warnings(plan, label, found), meta=meta,
                    agent_versions=agent_versions)


def policy_problems(plan: Any, policy: Optional[str], concurrency: Optional[int] = None,
                    results_dir: Optional[str] = None) -> Tuple[Any, List[Problem]]:
    """The site policy in force for ``plan`` (``policy``: the ``--policy`` option): ``plan`` with the policy's
    ``forbidden_tools`` applied, and every violation."""
    return _policy(plan, os.path.basename(plan.batch.path), policy, concurrency, results_dir)


def _policy(plan: Any, label: str, policy: Optional[str], concurrency: Optional[int],
            results_dir: Optional[str]) -> Tuple[Any, List[Problem]]:
    from orchestrator_pex import policy as policy_mod
    from orchestrator_pex.errors import ConfigError, UsageError
    from orchestrator_pex.plan import forbid_tools

    path = policy_mod.policy_path(policy)
    if path is None:
        return plan, []
    from orchestrator_pex.results import default_results_dir  # only with a policy: results imports the records (P3)

    try:
        rules = policy_mod.load_policy(path)
    except ConfigError as exc:
        return plan, [Problem(exc.file, exc.key, exc.message)]
    batch = plan.batch
    where = results_dir or _batch_relative(batch, batch.results_dir) or default_results_dir()
    found = [Problem(label, key, message)
             for key, message in policy_mod.violations(rules, batch, concurrency=concurrency, results_dir=where,
                                                       plan=plan)]
    try:
        plan = forbid_tools(plan, rules.forbidden_tools)
    except UsageError as exc:  # an agent that cannot be told to withhold a tool: FILE: KEY: message
        found.append(Problem(exc.file, exc.key, exc.message))
    return plan, found


def _batch_relative(batch: Any, path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(batch.path), path)


def _warnings(plan: Any, label: str, found: Any) -> Tuple[Problem, ...]:
    """A model name no price entry or alias knows: once where it is written (``[defaults]`` or the instance)."""
    from orchestrator_pex.pricing import is_known

    def unknown(model: str) -> str:
        return (f'unknown model "{model}" (not in the price table: cost estimates use the most expensive tier; '
                "the agent refuses a model it does not have)")

    out = []
    claude_used = {launch.name for launch in plan.launches if launch.kind != "generic"}  # any agent
    batch = plan.batch
    if batch.defaults.model and not is_known(batch.defaults.model) and any(
            inst.model is None and inst.name in claude_used for inst in batch.instances):
        out.append(Problem(label, "defaults.model", unknown(batch.defaults.model), warning=True))
    for i, inst in enumerate(batch.instances):
        if inst.model and inst.name in claude_used and not is_known(inst.model):
            out.append(Problem(label, f"instances[{i}].model", unknown(inst.model), warning=True))
    return tuple(sorted(out, key=lambda p: found.position(p.key)))
