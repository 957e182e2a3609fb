"""Plan: turn a validated batch into launches — the exact argv, environment additions and limits of each instance.

Nothing here starts a process. :func:`make_plan` resolves each agent's executable (``claude``, ``codex``,
``gemini``), each generic instance's ``argv[0]`` (against the PATH the instance will run with) and each working
directory, and applies ``[defaults]``; each prompt instance's argv comes from its agent's dialect
(:mod:`orchestrator_pex.agents`). :func:`preflight_problems` lists, before anything starts, every reason the run
cannot start (an agent the batch uses missing or not answering ``--version``, a program or working directory
missing, ``bypassPermissions`` as root for Claude Code, a ``CODEX_HOME`` that is not an existing writable directory
for Codex, an unusable worktree repository or base); :func:`preflight_agents` raises them all at once.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attrs

from orchestrator_pex.agents import AGENTS, dialect
from orchestrator_pex.agents.claude import claude_argv
from orchestrator_pex.config import AGENT_SIM, Batch, Instance, Prose, Text, with_defaults
from orchestrator_pex.errors import Problem, Problems, UsageError


@attrs.frozen(repr=False)  # no generated __repr__: nothing prints one, and building it costs start-up (P3)
class Launch:
    """One instance, ready to start: ``argv`` is executed directly (no shell)."""

    instance: Instance  # with defaults applied
    kind: str  # the agent ("claude", "codex", "gemini": its dialect's accounting) or "generic" (any program)
    argv: Tuple[str, ...]
    env_add: Dict[str, str]
    cwd: Optional[str]

    @property
    def name(self) -> str:
        return self.instance.name


@attrs.frozen(repr=False)
class Plan:
    batch: Batch
    agent: Tuple[str, ...]  # how the Claude Code executable is invoked (may be the built-in demo agent)
    launches: Tuple[Launch, ...]
    forbidden_tools: Tuple[str, ...] = ()  # the site policy's, in every Claude instance's --disallowedTools
    agents: Dict[str, Tuple[str, ...]] = attrs.field(factory=dict)  # every agent's argv prefix, by agent name
    specs: Dict[str, str] = attrs.field(factory=dict)  # every agent's executable as given (``@agent-sim`` ...)
    env_file: Optional[str] = None  # the env file in force (orchestrator_pex.envfile), absolute
    env_file_values: Dict[str, str] = attrs.field(factory=dict, repr=False)  # its values: all secret


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


def resolve_agent(spec: str, batch_dir: str, agent: str = "claude") -> Tuple[str, ...]:
    """The argv prefix that runs the agent named by ``claude =`` / ``--claude`` (``codex``, ``gemini`` likewise):
    a path, a name on PATH, or @agent-sim (which then speaks ``agent``'s dialect).

    A path is taken relative to ``batch_dir``; a name is searched on the orchestrator's PATH. Found: its absolute
    path (what preflight, the policy and every instance use). Not found: the name as given (preflight says so).
    """
    if spec == AGENT_SIM:
        return (*self_argv(), "agent-sim", *(("--dialect", agent) if agent != "claude" else ()))
    if os.sep in spec:
        path = spec if os.path.isabs(spec) else os.path.join(batch_dir, spec)
        return (find_program(path, None, None) or os.path.normpath(path),)
    found = find_program(spec, os.environ.get("PATH"), None)
    return (found or spec,)


def make_plan(batch: Batch, claude: Optional[str] = None, forbidden_tools: Sequence[str] = (), *,
              codex: Optional[str] = None, gemini: Optional[str] = None,
              env_file: Optional[str] = None) -> Plan:
    """Resolve every instance of ``batch``; ``claude``/``codex``/``gemini`` (from the command line) override the
    batch's executables of those agents.

    A working directory becomes its ``realpath`` (relative ones against the batch file's folder). A generic
    instance's ``argv[0]`` becomes the absolute path the child would run (:func:`find_program`, with the PATH of
    the instance's own environment and from its working directory), so the policy check, preflight and the exec
    all use that one path; a program that cannot be found stays as written (preflight refuses it).
    ``forbidden_tools`` are passed to every Claude instance as ``--disallowedTools`` (see :func:`claude_argv`).
    ``env_file`` (``--env-file``) replaces the batch's ``env_file`` (:mod:`orchestrator_pex.envfile`); the file's
    values come first in each instance's ``env_add`` (``[defaults].env`` and the instance's ``env`` override them).
    """
    from orchestrator_pex import envfile

    batch_dir = os.path.dirname(batch.path) or os.getcwd()
    given = {"claude": claude, "codex": codex, "gemini": gemini}
    specs = {name: given[name] or getattr(batch, name) for name in AGENTS}
    prefixes = {name: resolve_agent(specs[name], os.getcwd() if given[name] else batch_dir, name) for name in AGENTS}
    env_path = envfile.resolve(env_file, batch.env_file, batch.path)
    file_env = envfile.load(env_path) if env_path else {}
    launches = []
    programs: Dict[Tuple[str, Optional[str], Optional[str]], Optional[str]] = {}  # one lookup, one string each
    shared: Dict[str, Any] = {}  # the env of every instance with none of its own: one dict (never changed)
    argvs: Dict[Tuple[str, ...], Tuple[str, ...]] = {}  # equal generic argvs: one tuple
    for raw in batch.instances:
        inst = with_defaults(batch, raw, shared)
        cwd: Optional[str] = inst.cwd
        if cwd is not None:
            cwd = os.path.realpath(os.path.join(batch_dir, cwd))
        env_add = {**file_env, **(inst.env or {})}
        if not raw.env:
            env_add = shared.setdefault("env_add", env_add)
        if inst.argv is not None:  # the PATH the child gets: the env file's counts too
            path = env_add["PATH"] if "PATH" in env_add else instance_path(inst)
            where = (inst.argv[0], path, cwd)
            if where not in programs:
                programs[where] = find_program(*where)
            found = programs[where]
            kind = "generic"
            argv = (found, *inst.argv[1:]) if found is not None and found != inst.argv[0] else inst.argv
            argv = argvs.setdefault(argv, argv)
        elif (inst.agent or "claude") == "claude":
            kind, argv = "claude", _unfilled(lambda x: claude_argv(prefixes["claude"], x, forbidden_tools), inst)
        else:
            kind = inst.agent or "claude"
            agent_dialect = dialect(kind)
            argv = _unfilled(functools.partial(agent_dialect.argv, prefixes[kind]), inst)
            env_add = {**agent_dialect.headless_env(inst), **env_add}
        launches.append(Launch(instance=inst, kind=kind, argv=tuple(argv), env_add=env_add, cwd=cwd))
    return Plan(batch=batch, agent=prefixes["claude"], launches=tuple(launches), agents=prefixes, specs=specs,
                forbidden_tools=tuple(forbidden_tools), env_file=env_path, env_file_values=file_env)


def lean(plan: Plan) -> Plan:
    """``plan`` for running, once every check has passed: its batch without the batch's own instances (each launch
    holds its instance with the defaults applied, and nothing that runs reads the others), so a run of 100,000
    instances does not hold each of them twice. Settings and ``path`` of the batch are kept."""
    return attrs.evolve(plan, batch=attrs.evolve(plan.batch, instances=()))


def forbid_tools(plan: Plan, forbidden: Sequence[str]) -> Plan:
    """``plan`` with ``forbidden`` (the site policy's ``forbidden_tools``) added to every Claude instance's
    ``--disallowedTools``, so a tool the batch does not mention is still unavailable (also once its placeholders
    are filled: :func:`filled` uses ``plan.forbidden_tools``). Codex CLI and Gemini CLI have no way to forbid a
    tool: a batch with such instances is refused (:class:`UsageError`, exit 2)."""
    if not forbidden:
        return plan
    label = os.path.basename(plan.batch.path)
    for i, one in enumerate(plan.launches):
        if one.kind in ("codex", "gemini"):
            raise UsageError(label, f"instances[{i}].agent", f"the site policy forbids tools "
                             f"({', '.join(forbidden)}), which {one.kind} cannot be told to withhold")
    forbidden = tuple(dict.fromkeys([*plan.forbidden_tools, *forbidden]))
    launches = tuple(
        attrs.evolve(one, argv=_unfilled(lambda x: claude_argv(plan.agent, x, forbidden), one.instance))
        if one.kind == "claude" else one
        for one in plan.launches
    )
    return attrs.evolve(plan, launches=launches, forbidden_tools=forbidden)


def _unfilled(build: Any, inst: Instance) -> Tuple[str, ...]:
    """``build(inst)``, but a ``session_id``/``resume`` holding a placeholder appears in the argv as written: it is
    mapped to a UUID (when it is not one) only once filled (:func:`filled` rebuilds the argv then), never before."""
    from orchestrator_pex.graph import placeholders

    swaps: Dict[str, str] = {}
    changes: Dict[str, Any] = {}
    for key in ("session_id", "resume"):
        value = getattr(inst, key)
        if value and placeholders(value):
            token = str(uuid.uuid4())  # a UUID: every dialect passes it through unchanged
            swaps[token] = value
            changes[key] = Text(token)
    if not swaps:
        return tuple(build(inst))
    return tuple(swaps.get(arg, arg) for arg in build(attrs.evolve(inst, **changes)))


class FillError(ValueError):
    """Filled placeholders gave a value the instance cannot be started with (the instance fails with this error)."""


def filled(plan: Plan, launch: Launch, records: Dict[str, Dict[str, Any]]) -> Launch:
    """``launch`` with the placeholders of its prompt, argv elements, env values and resume filled from the records
    of the instances it needs (:func:`orchestrator_pex.graph.fill`: one pass, as data, each argv element stays one
    element).

    A prompt instance's argv (and headless environment) is rebuilt through its agent's dialect, so a filled
    ``session_id``/``resume`` that is not a UUID is mapped (:func:`orchestrator_pex.agents.session_uuid`) after
    filling; a Claude instance's with the plan's ``forbidden_tools``. A generic instance's ``argv[0]`` stays
    the path :func:`make_plan` resolved; only when filling changed ``argv[0]`` or the ``PATH`` of its environment is
    it resolved again, the same way (:func:`find_program`), so what runs is an absolute path (a site policy with
    ``allowed_executables`` refuses such placeholders beforehand: :func:`orchestrator_pex.policy.check`)."""
    from orchestrator_pex.graph import fill

    inst = launch.instance
    if not inst.needs:
        return launch
    inst = attrs.evolve(
        inst,
        prompt=Prose(fill(inst.prompt, records)) if inst.prompt is not None else None,
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
        env_add = {**plan.env_file_values, **(inst.env or {})}  # the env file's values stay, as in make_plan
    elif launch.kind == "claude":
        argv = claude_argv(plan.agents.get("claude") or plan.agent, inst, plan.forbidden_tools)
        env_add = {**plan.env_file_values, **(inst.env or {})}
    else:
        if inst.resume is not None and inst.resume != launch.instance.resume and inst.resume.startswith("-"):
            # Codex and Gemini take resume verbatim (no UUID mapping): a filled value must not become an option
            raise FillError(f"resume: the filled value {inst.resume[:80]!r} starts with \"-\" ({launch.kind} would "
                            "read it as an option)")
        agent_dialect = dialect(launch.kind)
        argv = agent_dialect.argv(plan.agents[launch.kind], inst)
        # the env file's values stay under the instance's env (filled), as in make_plan
        env_add = {**agent_dialect.headless_env(inst), **plan.env_file_values, **(inst.env or {})}
    return attrs.evolve(launch, instance=inst, argv=tuple(argv), env_add=env_add)


def preflight(plan: Plan, timeout: float = 30.0) -> Optional[str]:
    """:func:`preflight_agents`, returning only Claude Code's ``--version`` (else the only agent's; None if none)."""
    return version_of(preflight_agents(plan, timeout))


def version_of(versions: Dict[str, str]) -> Optional[str]:
    """The one ``agent_version`` of a results document: Claude Code's if used, else the first agent's."""
    if "claude" in versions:
        return versions["claude"]
    return next(iter(versions.values()), None)


def preflight_agents(plan: Plan, timeout: float = 30.0) -> Dict[str, str]:
    """Check the run can start; return each used agent's ``--version`` line, by agent name, in batch order.

    Raises :class:`~orchestrator_pex.errors.Problems` (exit 2, nothing started; every problem of
    :func:`preflight_problems`, one line each) if anything is wrong.
    """
    problems, versions = preflight_problems(plan, timeout)
    if problems:
        raise Problems(problems)
    return versions


def preflight_problems(plan: Plan, timeout: float = 30.0) -> Tuple[List[Problem], Dict[str, str]]:
    """Every reason the run cannot start, in batch order, and each used agent's ``--version`` line by agent name
    (those that answered).

    Checked for each instance: ``bypassPermissions`` while running as root (Claude Code refuses that itself, after
    start-up: better to say so before anything runs), a working directory that is missing, a generic instance's
    program not found on the PATH it will run with (or not executable), a Codex instance's ``CODEX_HOME`` that is
    not an existing writable directory, a worktree instance's repository or base that cannot be used; then each
    agent the batch uses (key ``claude``, ``codex`` or ``gemini``): its executable is found and answers
    ``--version`` (exit 0, some output) within ``timeout`` seconds. Starts nothing but ``AGENT --version``.
    """
    problems: List[Problem] = []
    label = os.path.basename(plan.batch.path)
    index: Dict[str, int] = {}
    for i, launch in enumerate(plan.launches):
        index.setdefault(launch.name, i)
        inst = launch.instance
        if launch.kind == "claude" and inst.permission_mode == "bypassPermissions" and _is_root():
            problems.append(Problem(
                label, f"instances[{i}].permission_mode", "bypassPermissions cannot be used as root "
                "(Claude Code refuses it); use acceptEdits with allowed_tools, or run as another user"))
        if launch.cwd is not None and not os.path.isdir(launch.cwd):
            problems.append(Problem(label, f"instances[{i}].cwd", f"no such directory: {launch.cwd}"))
        if launch.kind == "generic" and not _executable(launch.argv[0]):
            problems.append(Problem(label, f"instances[{i}].argv",
                                    f"program not found or not executable: {launch.argv[0]}"))
        if launch.kind == "codex":
            problem = _codex_home_problem(launch.env_add)
            if problem:
                problems.append(Problem(label, f"instances[{i}].env.CODEX_HOME", problem))
    if any(launch.instance.workspace == "worktree" for launch in plan.launches):
        from orchestrator_pex import workspace

        batch_dir = os.path.dirname(plan.batch.path) or os.getcwd()
        for name, message in workspace.preflight_problems(plan.launches, batch_dir):
            problems.append(Problem(label, f"instances[{index[name]}].workspace", message))
    versions: Dict[str, str] = {}
    for launch in plan.launches:
        if launch.kind != "generic" and launch.kind not in versions:
            version, problem = _probe(plan, launch.kind, timeout)
            versions[launch.kind] = version or ""
            if problem:
                problems.append(Problem(label, launch.kind, problem))
    return problems, {agent: v for agent, v in versions.items() if v}


def _probe(plan: Plan, agent: str, timeout: float) -> Tuple[Optional[str], Optional[str]]:
    """``(agent --version's first line, None)``, or ``(None, why)`` if it is missing or does not answer."""
    prefix = plan.agents.get(agent) or plan.agent
    if plan.specs.get(agent, plan.batch.claude if agent == "claude" else None) == AGENT_SIM \
            and "agent-sim" in prefix:  # built in: nothing to probe
        from orchestrator_pex.agent_sim import version_line

        return version_line(agent), None
    if not _executable(prefix[0]):
        return None, f"agent executable not found: {prefix[0]} ({dialect(agent).install_hint} in the batch file)"
    try:
        done = subprocess.run([*prefix, "--version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"agent did not answer --version within {timeout:g}s: {prefix[0]}"
    except OSError as exc:
        return None, f"agent cannot be started: {prefix[0]}: {exc.strerror}"
    text = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0 or not text:
        return None, f"agent failed `--version` (exit status {done.returncode}): {prefix[0]}"
    return text.splitlines()[0], None


def _codex_home_problem(env_add: Dict[str, str]) -> Optional[str]:
    """Codex needs ``CODEX_HOME`` (when set) to be an existing, writable directory; it does not create it."""
    home = env_add.get("CODEX_HOME", os.environ.get("CODEX_HOME"))
    if not home:
        return None
    if not os.path.isdir(home):
        return f"no such directory: {home} (Codex CLI needs an existing CODEX_HOME)"
    if not os.access(home, os.W_OK | os.X_OK):
        return f"not writable: {home}"
    return None


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _executable(program: str) -> bool:
    """Is ``program`` (as resolved by :func:`make_plan`: absolute when it was found) an executable file?"""
    return os.path.isabs(program) and os.path.isfile(program) and os.access(program, os.X_OK)
