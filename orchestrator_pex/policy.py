"""Site policy: rules an operator sets once per host that every batch must satisfy before any process starts.

The policy is a TOML file. Which one applies (:func:`policy_path`): ``--policy FILE``, else the environment
variable ``ORCHESTRATOR_PEX_POLICY``, else ``/etc/orchestrator-pex/policy.toml`` when it exists; otherwise there is
no policy. Every key is optional; a key that is absent imposes nothing::

    allowed_permission_modes = ["default", "acceptEdits", "plan"]   # Claude instances; unset mode counts as "default"
    forbidden_tools = ["WebFetch", "WebSearch"]   # may not appear in allowed_tools ("Bash(git:*)" counts as Bash)
    require_timeout = true                        # every instance needs a timeout (own or from [defaults])
    require_budget = true                         # every Claude instance needs max_cost_usd or max_tokens
    max_timeout = 3600                            # seconds, per instance
    max_instance_cost_usd = 5.0
    max_concurrency = 8                           # the batch must set concurrency, at most this
    max_budget_usd = 50.0                         # [budget] max_cost_usd must be set, at most this, mode "block"
    max_budget_tokens = 20000000                  # [budget] max_tokens must be set, at most this, mode "block"
    allowed_cwd_prefixes = ["/srv/agents"]        # instance working directories must lie under one of these
    allowed_models = ["claude-sonnet-4-5*", "claude-haiku-*"]   # shell-style patterns; Claude instances only
    allowed_executables = ["/usr/bin/python3"]    # argv[0] of generic (argv) instances; shell-style patterns
    allowed_worktree_prefixes = ["/srv/runs"]     # workspace = "worktree" instances: the folder their worktrees are
                                                  # created in (RESULTS_DIR/RUN_ID/worktrees) must lie under one;
                                                  # with allowed_cwd_prefixes, it must lie under one of those too

:func:`check` applies the rules to a batch *after* defaults are applied (:func:`orchestrator_pex.config.apply_defaults`)
and returns every violation, one line each, shaped ``batch.toml: instances[2].permission_mode: "bypassPermissions"
not allowed by policy /etc/orchestrator-pex/policy.toml: allowed "default", "plan"``. The caller refuses the batch
(exit 2) when the list is not empty.

``forbidden_tools`` is also meant to be passed on to Claude Code as ``--disallowedTools`` by the runtime, so a tool a
batch does not mention is still unavailable. The policy is a guard rail against mistakes and unreviewed batches, not
a sandbox: whoever can run the PEX with another environment can run it without the policy.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from orchestrator_pex.errors import ConfigError, describe

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
            close = difflib.get_close_matches(key, list(_KINDS), n=1)
            hint = f'; did you mean "{close[0]}"?' if close else f"; expected one of {', '.join(_KINDS)}"
            raise ConfigError(path, key, f"unknown key{hint}")
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
    if kind == "paths":
        for v in value:
            if not os.path.isabs(v):
                raise ConfigError(path, key, f"expected absolute directories, got {describe(v)}")
    return tuple(value)


# -- checking --------------------------------------------------------------------------------------------------------


def _listed(items: Sequence[str]) -> str:
    return ", ".join(f'"{i}"' for i in items) if items else "nothing"


def _tool_base(spec: str) -> str:
    return spec.split("(", 1)[0].strip()


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip(os.sep) or os.sep
    return path == prefix or path.startswith(prefix if prefix.endswith(os.sep) else prefix + os.sep)


def check(
    policy: Policy,
    batch: Any,
    batch_file: str,
    *,
    concurrency: Optional[int] = None,
    default_cwd: Optional[str] = None,
    results_dir: Optional[str] = None,
) -> List[str]:
    """Every violation of ``policy`` by ``batch`` (a :class:`orchestrator_pex.config.Batch`), in file order.

    Instances are checked with defaults applied. ``batch_file`` is how the batch is named in messages.
    ``concurrency`` is a command-line override of the batch's own value. ``default_cwd`` is where an instance
    without ``cwd`` runs (default: the current directory); a relative ``cwd`` resolves against the batch file's
    folder. ``results_dir`` is where the run directory will be made (worktrees go in ``RUN_DIR/worktrees``;
    default: the current directory's ``orchestrator-runs``). An empty list means the batch complies.
    """
    from orchestrator_pex.config import apply_defaults

    where = f"policy {policy.path}"
    out: List[str] = []

    def bad(key: str, message: str) -> None:
        out.append(f"{batch_file}: {key}: {message}")

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
    for i, inst in enumerate(apply_defaults(batch)):
        at = f"instances[{i}]"
        is_claude = inst.argv is None
        if is_claude and policy.allowed_permission_modes is not None:
            mode = inst.permission_mode or "default"
            if mode not in policy.allowed_permission_modes:
                bad(f"{at}.permission_mode", f'"{mode}" not allowed by {where}: allowed {_listed(policy.allowed_permission_modes)}')
        if is_claude and policy.forbidden_tools:
            forbidden = set(policy.forbidden_tools)
            for j, spec in enumerate(inst.allowed_tools or ()):
                if _tool_base(spec) in forbidden:
                    bad(f"{at}.allowed_tools[{j}]", f'"{spec}" is forbidden by {where}: forbidden {_listed(policy.forbidden_tools)}')
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
            bad(f"{at}.max_cost_usd", f"{inst.max_cost_usd:g} exceeds the maximum {policy.max_instance_cost_usd:g} dollars of {where}")
        if is_claude and policy.max_instance_cost_usd is not None and inst.max_cost_usd is None and inst.max_tokens is None:
            bad(f"{at}.max_cost_usd", f"not set; {where} allows at most {policy.max_instance_cost_usd:g} dollars per instance")
        if policy.allowed_cwd_prefixes is not None:
            cwd = os.path.realpath(os.path.join(base_dir, inst.cwd) if inst.cwd else run_dir)
            prefixes = [os.path.realpath(p) for p in policy.allowed_cwd_prefixes]
            if not any(_under(cwd, p) for p in prefixes):
                shown = f'"{inst.cwd}" ({cwd})' if inst.cwd else f"not set (runs in {cwd})"
                bad(f"{at}.cwd", f"{shown} not allowed by {where}: allowed under {_listed(policy.allowed_cwd_prefixes)}")
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
        if not is_claude and policy.allowed_executables is not None:
            exe = inst.argv[0]
            if not any(fnmatch.fnmatchcase(exe, p) for p in policy.allowed_executables):
                bad(f"{at}.argv[0]", f'"{exe}" not allowed by {where}: allowed {_listed(policy.allowed_executables)}')
    return out
