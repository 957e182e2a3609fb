"""Plan: turn a validated batch into launches — the exact argv, environment additions and limits of each instance.

Nothing here starts a process. :func:`make_plan` resolves the agent executable and applies ``[defaults]``;
:func:`preflight` checks, before anything starts, that the agent answers ``--version`` and that no instance asks
for what cannot work (``bypassPermissions`` as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any, Dict, Optional, Tuple

import attrs

from orchestrator_pex.config import AGENT_SIM, Batch, Instance, Text, apply_defaults
from orchestrator_pex.errors import UsageError


@attrs.frozen
class Launch:
    """One instance, ready to start: ``argv`` is executed directly (no shell)."""

    instance: Instance  # with defaults applied
    kind: str  # "claude" (stream-json accounting) or "generic" (any program)
    argv: Tuple[str, ...]
    env_add: Dict[str, str]
    cwd: Optional[str]

    @property
    def name(self) -> str:
        return self.instance.name


@attrs.frozen
class Plan:
    batch: Batch
    agent: Tuple[str, ...]  # how the Claude Code executable is invoked (may be the built-in demo agent)
    launches: Tuple[Launch, ...]


def self_argv() -> Tuple[str, ...]:
    """How to run this orchestrator again as a child, from any working directory.

    From a PEX: the PEX file itself. From a checkout or an install: this interpreter, importing the package from
    where this copy of it lives.
    """
    parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pex = os.environ.get("PEX")
    if pex and os.path.exists(pex):
        if parent.startswith(os.path.join(sys.prefix, "")):
            # A venv-mode PEX: this interpreter's venv already holds the package and its dependencies, so the
            # child starts without the PEX bootstrap (and needs no PEX_ROOT of its own).
            return (sys.executable, "-m", "orchestrator_pex")
        return (sys.executable, pex)
    code = f"import sys; sys.path.insert(0, {parent!r}); from orchestrator_pex.cli import main; sys.exit(main())"
    return (sys.executable, "-c", code)


def resolve_agent(spec: str, batch_dir: str) -> Tuple[str, ...]:
    """The argv prefix that runs the agent named by ``claude =`` / ``--claude`` (a path, a name on PATH, or @agent-sim)."""
    if spec == AGENT_SIM:
        return (*self_argv(), "agent-sim")
    if os.sep in spec:
        path = spec if os.path.isabs(spec) else os.path.join(batch_dir, spec)
        return (os.path.normpath(path),)
    found = shutil.which(spec)
    return (found or spec,)


def claude_argv(agent: Tuple[str, ...], inst: Instance) -> Tuple[str, ...]:
    """Claude Code's headless argv for ``inst``. The prompt goes right after ``-p`` unless it looks like an option."""
    prompt = inst.prompt or ""
    argv = [*agent, "-p"]
    if not prompt.startswith("-"):
        argv.append(prompt)
    argv += ["--output-format", "stream-json", "--verbose"]
    if inst.model:
        argv += ["--model", inst.model]
    if inst.permission_mode:
        argv += ["--permission-mode", inst.permission_mode]
    if inst.max_turns:
        argv += ["--max-turns", str(inst.max_turns)]
    if inst.session_id:
        argv += ["--session-id", inst.session_id]
    if inst.resume:
        argv += ["--resume", inst.resume]
    if inst.append_system_prompt:
        argv += ["--append-system-prompt", inst.append_system_prompt]
    if inst.allowed_tools:
        argv += ["--allowedTools", ",".join(inst.allowed_tools)]
    if inst.disallowed_tools:
        argv += ["--disallowedTools", ",".join(inst.disallowed_tools)]
    if prompt.startswith("-"):
        argv += ["--", prompt]
    return tuple(argv)


def make_plan(batch: Batch, claude: Optional[str] = None) -> Plan:
    """Resolve every instance of ``batch``; ``claude`` (from the command line) overrides the batch's agent."""
    batch_dir = os.path.dirname(batch.path) or os.getcwd()
    agent = resolve_agent(claude or batch.claude, os.getcwd() if claude else batch_dir)
    launches = []
    for inst in apply_defaults(batch):
        if inst.argv is not None:
            kind, argv = "generic", inst.argv
        else:
            kind, argv = "claude", claude_argv(agent, inst)
        cwd = inst.cwd
        if cwd is not None and not os.path.isabs(cwd):
            cwd = os.path.normpath(os.path.join(batch_dir, cwd))
        launches.append(Launch(instance=inst, kind=kind, argv=tuple(argv), env_add=dict(inst.env or {}), cwd=cwd))
    return Plan(batch=batch, agent=agent, launches=tuple(launches))


def filled(plan: Plan, launch: Launch, records: Dict[str, Dict[str, Any]]) -> Launch:
    """``launch`` with the placeholders of its prompt, argv elements, env values and resume filled from the records
    of the instances it needs (:func:`orchestrator_pex.graph.fill`: one pass, as data, each argv element stays one
    element)."""
    from orchestrator_pex.graph import fill

    inst = launch.instance
    if not inst.needs:
        return launch
    inst = attrs.evolve(
        inst,
        prompt=Text(fill(inst.prompt, records)) if inst.prompt is not None else None,
        argv=tuple(fill(a, records) for a in inst.argv) if inst.argv is not None else None,
        env={k: fill(v, records) for k, v in (inst.env or {}).items()},
        resume=Text(fill(inst.resume, records)) if inst.resume is not None else None,
    )
    argv = inst.argv if launch.kind == "generic" else claude_argv(plan.agent, inst)
    return attrs.evolve(launch, instance=inst, argv=tuple(argv or ()), env_add=dict(inst.env or {}))


def preflight(plan: Plan, timeout: float = 30.0) -> Optional[str]:
    """Check the run can start; return the agent's ``--version`` (None if no instance uses it).

    Raises :class:`UsageError` (exit 2, nothing started) if the agent is missing or does not answer, if a working
    directory is missing, or if an instance asks for ``bypassPermissions`` while running as root (Claude Code
    refuses that itself, after start-up: better to say so before anything runs).
    """
    problems = []
    label = os.path.basename(plan.batch.path)
    for i, launch in enumerate(plan.launches):
        inst = launch.instance
        if launch.kind == "claude" and inst.permission_mode == "bypassPermissions" and _is_root():
            problems.append(
                f"{label}: instances[{i}].permission_mode: bypassPermissions cannot be used as root "
                "(Claude Code refuses it); use acceptEdits with allowed_tools, or run as another user"
            )
        if launch.cwd is not None and not os.path.isdir(launch.cwd):
            problems.append(f"{label}: instances[{i}].cwd: no such directory: {launch.cwd}")
        if launch.kind == "generic" and not _executable(launch.argv[0], launch.cwd):
            problems.append(f"{label}: instances[{i}].argv: program not found or not executable: {launch.argv[0]}")
    if any(launch.instance.workspace == "worktree" for launch in plan.launches):
        from orchestrator_pex import workspace

        batch_dir = os.path.dirname(plan.batch.path) or os.getcwd()
        problems += [f"{label}: {p}" for p in workspace.preflight(plan.launches, batch_dir)]
    if problems:
        raise UsageError("; ".join(problems) if len(problems) == 1 else "\n  ".join(["preflight failed:", *problems]))
    if not any(launch.kind == "claude" for launch in plan.launches):
        return None
    if plan.batch.claude == AGENT_SIM and plan.agent[-1] == "agent-sim":  # built in: nothing to probe
        from orchestrator_pex.agent_sim import VERSION

        return f"{VERSION} (agent-sim, orchestrator-pex demo agent)"
    if not _executable(plan.agent[0], None):
        raise UsageError(
            f"agent executable not found: {plan.agent[0]} (install Claude Code, put `claude` on PATH, "
            "or give its path with --claude PATH or `claude =` in the batch file)"
        )
    try:
        done = subprocess.run(
            [*plan.agent, "--version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"agent did not answer --version within {timeout:g}s: {plan.agent[0]}") from None
    except OSError as exc:
        raise UsageError(f"agent cannot be started: {plan.agent[0]}: {exc.strerror}") from None
    text = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0 or not text:
        raise UsageError(f"agent failed `--version` (exit status {done.returncode}): {plan.agent[0]}")
    return text.splitlines()[0]


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _executable(program: str, cwd: Optional[str]) -> bool:
    if os.sep in program:
        path = program if os.path.isabs(program) else os.path.join(cwd or os.getcwd(), program)
        return os.path.isfile(path) and os.access(path, os.X_OK)
    return shutil.which(program) is not None
