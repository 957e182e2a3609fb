"""Plan: turn a validated batch into launches — the exact argv, environment additions and limits of each instance.

Nothing here starts a process. :func:`make_plan` resolves the agent executable, each generic instance's
``argv[0]`` (against the PATH the instance will run with) and each working directory, and applies ``[defaults]``;
:func:`preflight` checks, before anything starts, that the agent answers ``--version`` and that no instance asks
for what cannot work (``bypassPermissions`` as root).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

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
    forbidden_tools: Tuple[str, ...] = ()  # the site policy's, in every Claude instance's --disallowedTools


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


def find_program(program: str, path_value: Optional[str], cwd: Optional[str]) -> Optional[str]:
    """The absolute path ``execve`` runs for ``argv[0] = program`` (None if nothing executable is there).

    As the child will run it: a name with a ``/`` is taken relative to ``cwd``; a bare name is searched in
    ``path_value`` (the PATH of the environment the child gets; :data:`os.defpath` when it has none), an empty or
    relative entry counting from ``cwd``. Symbolic links are kept (a venv's ``python`` must stay itself);
    :func:`real_program` gives what finally runs.
    """
    base = cwd or os.getcwd()
    if os.sep in program:
        candidates = [os.path.join(base, program)]
    else:
        dirs = (path_value if path_value is not None else os.defpath).split(os.pathsep)
        candidates = [os.path.join(base, d or os.curdir, program) for d in dirs]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate) if not os.path.isabs(candidate) else candidate
    return None


def real_program(path: str) -> str:
    """What actually runs for the absolute ``path``: every symbolic link and ``..`` resolved (``realpath``)."""
    return os.path.realpath(path)


def instance_path(inst: Instance) -> Optional[str]:
    """The PATH an instance runs with: its ``env`` table's, else the orchestrator's (None: not set at all)."""
    env = inst.env or {}
    return env["PATH"] if "PATH" in env else os.environ.get("PATH")


def resolve_agent(spec: str, batch_dir: str) -> Tuple[str, ...]:
    """The argv prefix that runs the agent named by ``claude =`` / ``--claude`` (a path, a name on PATH, or @agent-sim).

    A path is taken relative to ``batch_dir``; a name is searched on the orchestrator's PATH. Found: its absolute
    path (what preflight, the policy and every instance use). Not found: the name as given (preflight says so).
    """
    if spec == AGENT_SIM:
        return (*self_argv(), "agent-sim")
    if os.sep in spec:
        path = spec if os.path.isabs(spec) else os.path.join(batch_dir, spec)
        return (find_program(path, None, None) or os.path.normpath(path),)
    found = find_program(spec, os.environ.get("PATH"), None)
    return (found or spec,)


def claude_argv(agent: Tuple[str, ...], inst: Instance, forbidden: Sequence[str] = ()) -> Tuple[str, ...]:
    """Claude Code's headless argv for ``inst``. The prompt goes right after ``-p`` unless it looks like an option.
    ``forbidden`` (the site policy's ``forbidden_tools``) is added to the instance's ``--disallowedTools``."""
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
    disallowed = list(dict.fromkeys([*(inst.disallowed_tools or ()), *forbidden]))  # the policy's merged in
    if disallowed:
        argv += ["--disallowedTools", ",".join(disallowed)]
    if prompt.startswith("-"):
        argv += ["--", prompt]
    return tuple(argv)


def make_plan(batch: Batch, claude: Optional[str] = None, forbidden_tools: Sequence[str] = ()) -> Plan:
    """Resolve every instance of ``batch``; ``claude`` (from the command line) overrides the batch's agent.

    A working directory becomes its ``realpath`` (relative ones against the batch file's folder). A generic
    instance's ``argv[0]`` becomes the absolute path the child would run (:func:`find_program`, with the PATH of
    the instance's own environment and from its working directory), so the policy check, preflight and the exec
    all use that one path; a program that cannot be found stays as written (preflight refuses it).
    ``forbidden_tools`` are passed to every Claude instance as ``--disallowedTools`` (see :func:`claude_argv`).
    """
    batch_dir = os.path.dirname(batch.path) or os.getcwd()
    agent = resolve_agent(claude or batch.claude, os.getcwd() if claude else batch_dir)
    launches = []
    for inst in apply_defaults(batch):
        cwd = inst.cwd
        if cwd is not None:
            cwd = os.path.realpath(os.path.join(batch_dir, cwd))
        if inst.argv is not None:
            found = find_program(inst.argv[0], instance_path(inst), cwd)
            kind, argv = "generic", ((found, *inst.argv[1:]) if found else inst.argv)
        else:
            kind, argv = "claude", claude_argv(agent, inst, forbidden_tools)
        launches.append(Launch(instance=inst, kind=kind, argv=tuple(argv), env_add=dict(inst.env or {}), cwd=cwd))
    return Plan(batch=batch, agent=agent, launches=tuple(launches), forbidden_tools=tuple(forbidden_tools))


def forbid_tools(plan: Plan, forbidden: Sequence[str]) -> Plan:
    """``plan`` with ``forbidden`` (the site policy's ``forbidden_tools``) added to every Claude instance's
    ``--disallowedTools``, so a tool the batch does not mention is still unavailable (also once its placeholders
    are filled: :func:`filled` uses ``plan.forbidden_tools``)."""
    if not forbidden:
        return plan
    forbidden = tuple(dict.fromkeys([*plan.forbidden_tools, *forbidden]))
    launches = tuple(
        attrs.evolve(one, argv=claude_argv(plan.agent, one.instance, forbidden)) if one.kind == "claude" else one
        for one in plan.launches
    )
    return attrs.evolve(plan, launches=launches, forbidden_tools=forbidden)


def filled(plan: Plan, launch: Launch, records: Dict[str, Dict[str, Any]]) -> Launch:
    """``launch`` with the placeholders of its prompt, argv elements, env values and resume filled from the records
    of the instances it needs (:func:`orchestrator_pex.graph.fill`: one pass, as data, each argv element stays one
    element).

    A Claude instance's argv is rebuilt with the plan's ``forbidden_tools``. A generic instance's ``argv[0]`` stays
    the path :func:`make_plan` resolved; only when filling changed ``argv[0]`` or the ``PATH`` of its environment is
    it resolved again, the same way (:func:`find_program`), so what runs is an absolute path (a site policy with
    ``allowed_executables`` refuses such placeholders beforehand: :func:`orchestrator_pex.policy.check`)."""
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
    if launch.kind == "generic":
        before = launch.instance
        argv = tuple(inst.argv or ())
        if argv and argv[0] == (before.argv or ("",))[0] and instance_path(inst) == instance_path(before):
            argv = (launch.argv[0], *argv[1:])  # unchanged: the program make_plan resolved
        elif argv:
            found = find_program(argv[0], instance_path(inst), launch.cwd)
            argv = (found, *argv[1:]) if found else argv
    else:
        argv = claude_argv(plan.agent, inst, plan.forbidden_tools)
    return attrs.evolve(launch, instance=inst, argv=tuple(argv), env_add=dict(inst.env or {}))


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
        if launch.kind == "generic" and not _executable(launch.argv[0]):
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
    if not _executable(plan.agent[0]):
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


def _executable(program: str) -> bool:
    """Is ``program`` (as resolved by :func:`make_plan`: absolute when it was found) an executable file?"""
    return os.path.isabs(program) and os.path.isfile(program) and os.access(program, os.X_OK)
