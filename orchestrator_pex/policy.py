"""Site policy: rules an operator sets once per host that every batch must satisfy before any process starts.

The policy is a TOML file. Which one applies (:func:`policy_path`): ``--policy FILE``, else the environment
variable ``ORCHESTRATOR_PEX_POLICY``, else ``/etc/orchestrator-pex/policy.toml`` when it exists; otherwise there is
no policy. Every key is optional; a key that is absent imposes nothing::

    allowed_permission_modes = ["default", "acceptEdits", "plan"]   # Claude instances; unset mode counts as "default"
    forbidden_tools = ["WebFetch", "WebSearch"]   # may not appear in allowed_tools ("Bash(git:*)" counts as Bash);
                                                  # also passed to every Claude instance as --disallowedTools
    require_timeout = true                        # every instance needs a timeout (own or from [defaults])
    require_budget = true                         # every Claude instance needs max_cost_usd or max_tokens
    max_timeout = 3600                            # seconds, per instance
    max_instance_cost_usd = 5.0
    max_concurrency = 8                           # the batch must set concurrency, at most this
    max_budget_usd = 50.0                         # [budget] max_cost_usd must be set, at most this, mode "block"
    max_budget_tokens = 20000000                  # [budget] max_tokens must be set, at most this, mode "block"
    allowed_cwd_prefixes = ["/srv/agents"]        # instance working directories must lie under one of these
    allowed_models = ["claude-sonnet-4-5*", "claude-haiku-*"]   # shell-style patterns; Claude instances only
    allowed_executables = ["/usr/bin/python3"]    # argv[0] of generic instances AND the agent executable;
                                                  # shell-style patterns, matched against what really runs
    allowed_worktree_prefixes = ["/srv/runs"]     # workspace = "worktree" instances: the folder their worktrees are
                                                  # created in (RESULTS_DIR/RUN_ID/worktrees) must lie under one;
                                                  # with allowed_cwd_prefixes, it must lie under one of those too

:func:`check` applies the rules to a batch *after* defaults are applied (:func:`orchestrator_pex.config.apply_defaults`)
and returns every violation, one line each, shaped ``batch.toml: instances[2].permission_mode: "bypassPermissions"
not allowed by policy /etc/orchestrator-pex/policy.toml: allowed "default", "plan"``. The caller refuses the batch
(exit 2) when the list is not empty.

Rules hold on what actually runs, not on how the batch spells it:

- Executables. :func:`orchestrator_pex.plan.make_plan` turns a generic instance's ``argv[0]`` into the absolute
  path the child would execute — a bare name searched in the PATH of the instance's own environment (its ``env``
  table's ``PATH`` if it sets one), a relative path taken from its working directory — and that same path is what
  preflight checks and what is executed (``--dry-run`` shows it). The policy matches the ``realpath`` of it (every
  symbolic link and ``..`` resolved) against each ``allowed_executables`` pattern, both as written and with the
  pattern's glob-free leading directories resolved (so ``/usr/bin/python3`` still allows a ``python3`` that is a
  link to ``/usr/bin/python3.11``, while ``/opt/tools/../../bin/bash`` is not under ``/opt/tools/*``). A program
  that cannot be found is not allowed. The agent executable (``claude =`` / ``--claude``, resolved the same way on
  the orchestrator's PATH) must be allowed too whenever the batch has a Claude instance; the built-in
  ``@agent-sim`` demo agent (this orchestrator's own code) is exempt. Patterns are ``fnmatch`` patterns: ``*``
  also matches ``/``.
- Working directories are compared as ``realpath`` with the ``realpath`` of each ``allowed_cwd_prefixes`` entry,
  and the instance runs in exactly that resolved directory.
- Tools. Every ``allowed_tools``/``disallowed_tools`` entry of a batch is one tool (``NAME`` or
  ``NAME(PATTERN)``; :mod:`orchestrator_pex.tools` refuses at validation anything Claude Code's CLI would split into
  several), so its ``NAME`` is what ``forbidden_tools`` is compared with. ``forbidden_tools`` entries must be plain
  names. :func:`enforce` also passes them to every Claude instance as
  ``--disallowedTools`` (merged after the instance's own), so a tool a batch does not mention is unavailable too.

The policy is a guard rail against mistakes and unreviewed batches, not a sandbox: whoever can run the PEX with
another environment can run it without the policy, and a program the policy allows may itself start others (the
agent's ``#!/usr/bin/env node`` finds ``node`` on the instance's PATH).
"""

from __future__ import annotations

import fnmatch
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from orchestrator_pex.errors import ConfigError, describe, located, unknown_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10
    import tomli as tomllib

DEFAULT_PATH = "/etc/orchestrator-pex/policy.toml"
ENV_VAR = "ORCHESTRATOR_PEX_POLICY"


@attrs.frozen
class Policy:
    """A loaded policy; ``None`` (or ``False`` for the ``require_*`` flags) means the rule is not imposed."""

    path: str
    allowed_permission_modes: Optional[Tuple[str, ...]] = None
    forbidden_tools: Tuple[str, ...] = ()
    require_timeout: bool = False
    require_budget: bool = False
    max_timeout: Optional[float] = None
    max_instance_cost_usd: Optional[float] = None
    max_concurrency: Optional[int] = None
    max_budget_usd: Optional[float] = None
    max_budget_tokens: Optional[int] = None
    allowed_cwd_prefixes: Optional[Tuple[str, ...]] = None
    allowed_models: Optional[Tuple[str, ...]] = None
    allowed_executables: Optional[Tuple[str, ...]] = None
    allowed_worktree_prefixes: Optional[Tuple[str, ...]] = None


_KINDS = {
    "allowed_permission_modes": "strings",
    "forbidden_tools": "strings",
    "require_timeout": "bool",
    "require_budget": "bool",
    "max_timeout": "number",
    "max_instance_cost_usd": "number",
    "max_concurrency": "int",
    "max_budget_usd": "number",
    "max_budget_tokens": "int",
    "allowed_cwd_prefixes": "paths",
    "allowed_models": "strings",
    "allowed_executables": "strings",
    "allowed_worktree_prefixes": "paths",
}


def policy_path(cli_value: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The policy file in force: ``--policy``, else ``$ORCHESTRATOR_PEX_POLICY``, else the default file if it exists."""
    environ = os.environ if environ is None else environ
    if cli_value:
        return cli_value
    if environ.get(ENV_VAR):
        return environ[ENV_VAR]
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None


def load_policy(path: str) -> Policy:
    """Read and validate a policy file; :class:`ConfigError` names the file and the offending key."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.loads(f.read().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read policy file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    values: Dict[str, Any] = {}
    for key, value in raw.items():
        kind = _KINDS.get(key)
        if kind is None:
            raise ConfigError(path, key, unknown_key(key, _KINDS))
        values[key] = _value(path, key, kind, value)
    return Policy(path=path, **values)


def _value(path: str, key: str, kind: str, value: Any) -> Any:
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(path, key, f"expected true or false, got {describe(value)}")
        return value
    if kind in ("number", "int"):
        ok = not isinstance(value, bool) and isinstance(value, (int if kind == "int" else (int, float))) and value > 0
        if not ok or value != value or value == float("inf"):
            what = "a positive integer" if kind == "int" else "a positive number"
            raise ConfigError(path, key, f"expected {what}, got {describe(value)}")
        return value if kind == "int" else float(value)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(path, key, f"expected a list of non-empty strings, got {describe(value)}")
    if key == "forbidden_tools":
        from orchestrator_pex import tools

        for v in value:
            why = tools.problem(v)
            if why or "(" in v:
                raise ConfigError(path, key, f"{why or 'expected a tool name without a pattern'}; got {describe(v)}")
    if kind == "paths":
        for v in value:
            if not os.path.isabs(v):
                raise ConfigError(path, key, f"expected absolute directories, got {describe(v)}")
    return tuple(value)


# -- checking --------------------------------------------------------------------------------------------------------


def _listed(items: Sequence[str]) -> str:
    return ", ".join(f'"{i}"' for i in items) if items else "nothing"


def _tool_base(spec: str) -> str:
    from orchestrator_pex import tools

    return tools.base(spec)


_GLOB = frozenset("*?[")


def _resolved_pattern(pattern: str) -> str:
    """``pattern`` with its glob-free leading directories resolved (``realpath``), so it describes real paths:
    ``/usr/bin/python3`` becomes ``/usr/bin/python3.11``, ``/opt/link/*`` the real ``/opt/target/*``."""
    parts = pattern.split(os.sep)
    fixed = 0
    while fixed < len(parts) and not (_GLOB & set(parts[fixed])):
        fixed += 1
    if fixed == len(parts):
        return os.path.realpath(pattern)
    head = os.sep.join(parts[:fixed]) or os.sep
    return os.path.join(os.path.realpath(head), *parts[fixed:])


def executable_allowed(real: str, patterns: Sequence[str]) -> bool:
    """Does the resolved executable ``real`` match one of ``patterns`` (as written, or with their fixed leading
    directories resolved)?"""
    return any(fnmatch.fnmatchcase(real, p) or fnmatch.fnmatchcase(real, _resolved_pattern(p)) for p in patterns)


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip(os.sep) or os.sep
    return path == prefix or path.startswith(prefix if prefix.endswith(os.sep) else prefix + os.sep)


def check(
    policy: Policy,
    batch: Any,
    batch_file: str,
    **options: Any,
) -> List[str]:
    """Every violation (:func:`violations`) as one line ``batch_file: KEY: message``."""
    return [located(batch_file, key, message) for key, message in violations(policy, batch, **options)]


def violations(
    policy: Policy,
    batch: Any,
    *,
    concurrency: Optional[int] = None,
    default_cwd: Optional[str] = None,
    results_dir: Optional[str] = None,
    plan: Any = None,
) -> List[Tuple[str, str]]:
    """``(key, message)`` of every violation of ``policy`` by ``batch`` (a :class:`orchestrator_pex.config.Batch`),
    in file order.

    Instances are checked with defaults applied.
    ``concurrency`` is a command-line override of the batch's own value. ``default_cwd`` is where an instance
    without ``cwd`` runs (default: the current directory); a relative ``cwd`` resolves against the batch file's
    folder. ``results_dir`` is where the run directory will be made (worktrees go in ``RUN_DIR/worktrees``;
    default: the current directory's ``orchestrator-runs``). ``plan`` (:func:`orchestrator_pex.plan.make_plan` of
    the batch) gives the executables and working directories exactly as they will be used; without it they are
    resolved here the same way. An empty list means the batch complies.
    """
    from orchestrator_pex import plan as plan_mod
    from orchestrator_pex.config import AGENT_SIM, apply_defaults

    where = f"policy {policy.path}"
    out: List[Tuple[str, str]] = []

    def bad(key: str, message: str) -> None:
        out.append((key, message))

    effective = concurrency if concurrency is not None else batch.concurrency
    if policy.max_concurrency is not None:
        if effective is None:
            bad("concurrency", f"not set; {where} requires concurrency of at most {policy.max_concurrency}")
        elif effective > policy.max_concurrency:
            bad("concurrency", f"{effective} exceeds the maximum {policy.max_concurrency} of {where}")
    for key, limit, unit in (
        ("max_cost_usd", policy.max_budget_usd, "dollars"),
        ("max_tokens", policy.max_budget_tokens, "tokens"),
    ):
        if limit is None:
            continue
        value = getattr(batch.budget, key)
        if value is None:
            bad(f"budget.{key}", f"not set; {where} requires an overall budget of at most {limit:g} {unit}")
        elif value > limit:
            bad(f"budget.{key}", f"{value:g} exceeds the maximum {limit:g} {unit} of {where}")
    if (policy.max_budget_usd is not None or policy.max_budget_tokens is not None) and batch.budget.mode != "block":
        bad("budget.mode", f'"{batch.budget.mode}" not allowed by {where}: the overall budget must be "block"')

    base_dir = os.path.dirname(batch.path) if getattr(batch, "path", "") else os.getcwd()
    run_dir = default_cwd or os.getcwd()
    launches = {one.name: one for one in plan.launches} if plan is not None else {}
    instances = apply_defaults(batch)
    if policy.allowed_executables is not None and any(inst.argv is None for inst in instances):
        agent = plan.agent if plan is not None else plan_mod.resolve_agent(batch.claude, base_dir)
        builtin = batch.claude == AGENT_SIM and agent[-1] == "agent-sim"  # this orchestrator's own demo agent
        if not builtin:
            shown = agent[0] if os.path.isabs(agent[0]) else f"{agent[0]} (not found)"
            real = plan_mod.real_program(agent[0]) if os.path.isabs(agent[0]) else None
            if real is None or not executable_allowed(real, policy.allowed_executables):
                via = f" -> {real}" if real and real != agent[0] else ""
                bad("claude", f'agent executable "{shown}{via}" not allowed by {where}: allowed '
                    f"{_listed(policy.allowed_executables)}")
    for i, inst in enumerate(instances):
        at = f"instances[{i}]"
        is_claude = inst.argv is None
        launch = launches.get(inst.name)
        if is_claude and policy.allowed_permission_modes is not None:
            mode = inst.permission_mode or "default"
            if mode not in policy.allowed_permission_modes:
                bad(f"{at}.permission_mode",
                    f'"{mode}" not allowed by {where}: allowed {_listed(policy.allowed_permission_modes)}')
        if is_claude and policy.forbidden_tools:
            forbidden = set(policy.forbidden_tools)
            for j, spec in enumerate(inst.allowed_tools or ()):
                if _tool_base(spec) in forbidden:
                    bad(f"{at}.allowed_tools[{j}]",
                        f'"{spec}" is forbidden by {where}: forbidden {_listed(policy.forbidden_tools)}')
        if policy.require_timeout and inst.timeout is None:
            bad(f"{at}.timeout", f"not set; {where} requires a timeout for every instance")
        if policy.max_timeout is not None and inst.timeout is not None and inst.timeout > policy.max_timeout:
            bad(f"{at}.timeout", f"{inst.timeout:g} seconds exceeds the maximum {policy.max_timeout:g} of {where}")
        if is_claude and policy.require_budget and inst.max_cost_usd is None and inst.max_tokens is None:
            bad(f"{at}.max_cost_usd", f"not set (nor max_tokens); {where} requires a budget for every instance")
        if (
            policy.max_instance_cost_usd is not None
            and inst.max_cost_usd is not None
            and inst.max_cost_usd > policy.max_instance_cost_usd
        ):
            bad(f"{at}.max_cost_usd",
                f"{inst.max_cost_usd:g} exceeds the maximum {policy.max_instance_cost_usd:g} dollars of {where}")
        if (is_claude and policy.max_instance_cost_usd is not None and inst.max_cost_usd is None
                and inst.max_tokens is None):
            bad(f"{at}.max_cost_usd",
                f"not set; {where} allows at most {policy.max_instance_cost_usd:g} dollars per instance")
        if policy.allowed_cwd_prefixes is not None:
            cwd = launch.cwd if launch is not None and launch.cwd is not None else \
                os.path.realpath(os.path.join(base_dir, inst.cwd) if inst.cwd else run_dir)
            prefixes = [os.path.realpath(p) for p in policy.allowed_cwd_prefixes]
            if not any(_under(cwd, p) for p in prefixes):
                shown = f'"{inst.cwd}" ({cwd})' if inst.cwd else f"not set (runs in {cwd})"
                bad(f"{at}.cwd",
                    f"{shown} not allowed by {where}: allowed under {_listed(policy.allowed_cwd_prefixes)}")
        if is_claude and policy.allowed_models is not None:
            if inst.model is None:
                bad(f"{at}.model", f"not set; {where} requires one of {_listed(policy.allowed_models)}")
            elif not any(fnmatch.fnmatchcase(inst.model, p) for p in policy.allowed_models):
                bad(f"{at}.model", f'"{inst.model}" not allowed by {where}: allowed {_listed(policy.allowed_models)}')
        if getattr(inst, "workspace", None) == "worktree":
            where_wt = os.path.realpath(results_dir or os.path.join(os.getcwd(), "orchestrator-runs"))
            for rule, allowed in (("allowed_worktree_prefixes", policy.allowed_worktree_prefixes),
                                  ("allowed_cwd_prefixes", policy.allowed_cwd_prefixes)):
                if allowed is not None and not any(_under(where_wt, os.path.realpath(p)) for p in allowed):
                    bad(f"{at}.workspace", f'worktrees in {where_wt} not allowed by {where} ({rule}): allowed under '
                        f"{_listed(allowed)}")
        if inst.argv is not None and policy.allowed_executables is not None:  # not is_claude
            exe = inst.argv[0]
            from orchestrator_pex.graph import placeholders

            if placeholders(exe) or placeholders((inst.env or {}).get("PATH", "")):
                # Filled only when the instance starts (from a dependency's record): what would run cannot be
                # checked now, so it is not allowed.
                key = f"{at}.argv[0]" if placeholders(exe) else f"{at}.env.PATH"
                bad(key, f"a placeholder decides the program, which {where} cannot check (allowed_executables)")
                continue
            if launch is not None:
                found: Optional[str] = launch.argv[0] if os.path.isabs(launch.argv[0]) else None
            else:
                cwd_of = os.path.realpath(os.path.join(base_dir, inst.cwd)) if inst.cwd else run_dir
                found = plan_mod.find_program(exe, plan_mod.instance_path(inst), cwd_of)
            real = plan_mod.real_program(found) if found else None
            if real is None or not executable_allowed(real, policy.allowed_executables):
                what = f'"{exe}"' + (f" ({real})" if real and real != exe else " (not found)" if real is None else "")
                bad(f"{at}.argv[0]", f"{what} not allowed by {where}: allowed {_listed(policy.allowed_executables)}")
    return out


def enforce(plan: Any, policy_flag: Optional[str] = None, concurrency: Optional[int] = None,
            results_dir: Optional[str] = None) -> Any:
    """Refuse a plan that violates the site policy in force (``policy_flag``: ``--policy FILE``; see
    :func:`policy_path`), listing every violation, one line each (:class:`~orchestrator_pex.errors.Problems`,
    exit 2). Returns the plan to run: with the policy's ``forbidden_tools`` passed to Claude as
    ``--disallowedTools``. ``concurrency`` is the ``--concurrency`` given, if any; ``results_dir`` where the run
    directory goes (worktrees are made there). ``run`` and ``validate`` check the policy through
    :func:`orchestrator_pex.checks.examine`, which shares these checks; ``resume`` uses this."""
    from orchestrator_pex import checks
    from orchestrator_pex.errors import Problems

    plan, problems = checks.policy_problems(plan, policy_flag, concurrency=concurrency, results_dir=results_dir)
    if problems:
        raise Problems(problems)
    return plan
