"""Batch files: read TOML (or the JSON of the older ``zen`` orchestrator) into frozen attrs classes.

This is the edge where untrusted input becomes typed data. Structuring goes through one cattrs converter whose hooks
check each value and say what was expected; every problem becomes a :class:`~orchestrator_pex.errors.ConfigError`
naming the file and the key path, e.g. ``batch.toml: instances[3].timeout: expected a positive number of seconds,
got "ten"``. Unknown keys are errors, with a "did you mean" where one is close. Past this module nothing re-validates.
"""

import difflib
import json
import os
import re
import sys
from typing import Any, Dict, List, NewType, Optional, Tuple

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from orchestrator_pex import agents
from orchestrator_pex.errors import ConfigError, describe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10
    import tomli as tomllib

Seconds = NewType("Seconds", float)
Dollars = NewType("Dollars", float)
PositiveInt = NewType("PositiveInt", int)
Count = NewType("Count", int)  # zero or more
Name = NewType("Name", str)
Text = NewType("Text", str)
PermissionMode = NewType("PermissionMode", str)
Agent = NewType("Agent", str)
BudgetMode = NewType("BudgetMode", str)
StrList = Tuple[str, ...]

PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")
BUDGET_MODES = ("block", "warn")
MAX_NAME = 200  #: instance names: 1 to 200 printable characters (any script); log file names derive safely

#: Agent executable meaning "the demo agent built into orchestrator-pex".
AGENT_SIM = "@agent-sim"


@attrs.frozen
class Budget:
    """Overall limits for the whole batch. ``block`` stops launching and stops a running instance that crosses."""

    max_tokens: Optional[PositiveInt] = None
    max_cost_usd: Optional[Dollars] = None
    mode: BudgetMode = "block"


@attrs.frozen
class Retry:
    """Backoff for transient API errors (429, 529, 5xx); the number of retries is per instance (``retries``)."""

    backoff: Seconds = 2.0
    backoff_max: Seconds = 60.0


@attrs.frozen
class Defaults:
    """Values every instance inherits unless it sets its own."""

    description: Optional[Text] = None
    agent: Optional[Agent] = None
    model: Optional[Text] = None
    permission_mode: Optional[PermissionMode] = None
    allowed_tools: Optional[StrList] = None
    disallowed_tools: Optional[StrList] = None
    cwd: Optional[Text] = None
    env: Optional[Dict[str, str]] = None
    timeout: Optional[Seconds] = None
    stall_timeout: Optional[Seconds] = None
    max_turns: Optional[PositiveInt] = None
    tags: Optional[StrList] = None
    max_tokens: Optional[PositiveInt] = None
    max_cost_usd: Optional[Dollars] = None
    retries: Optional[Count] = None
    append_system_prompt: Optional[Text] = None


@attrs.frozen
class Instance(Defaults):
    """One agent run. Exactly one of ``prompt`` (for ``agent``: Claude Code, Codex CLI or Gemini CLI; a slash command
    is a prompt) or ``argv`` (any program).

    Every field of :class:`Defaults` is also an instance field (unset: inherited, see :func:`apply_defaults`).
    """

    name: Name = attrs.field(kw_only=True)
    prompt: Optional[Text] = None
    argv: Optional[StrList] = None
    session_id: Optional[Text] = None
    resume: Optional[Text] = None


@attrs.frozen
class Batch:
    """A whole batch file. ``path`` is where it was read from; relative paths in it resolve against its folder."""

    instances: Tuple[Instance, ...]
    path: str = ""
    agent: Optional[Agent] = None  # the agent of prompt instances that set none (neither in [defaults]): claude
    claude: Text = "claude"
    codex: Text = Text("codex")
    gemini: Text = Text("gemini")
    concurrency: Optional[PositiveInt] = None
    stagger: Optional[Seconds] = None
    deadline: Optional[Seconds] = None
    grace_period: Seconds = 10.0
    start_at: Optional[Text] = None
    results_dir: Optional[Text] = None
    budget: Budget = Budget()
    retry: Retry = Retry()
    defaults: Defaults = Defaults()


#: Fallbacks for what neither an instance nor [defaults] sets.
BUILTIN = {"retries": 2, "stall_timeout": 1800.0, "env": {}, "allowed_tools": (), "disallowed_tools": (), "tags": ()}


def apply_defaults(batch: Batch) -> Tuple[Instance, ...]:
    """Each instance with every unset field taken from ``[defaults]``, then from :data:`BUILTIN`.

    ``env`` tables merge (the instance's keys win); every other field is replaced whole. ``agent`` falls back to the
    batch's top-level ``agent``, then ``claude``.
    """
    out = []
    for inst in batch.instances:
        changes: Dict[str, Any] = {}
        for field in attrs.fields(Defaults):
            own, default = getattr(inst, field.name), getattr(batch.defaults, field.name)
            if field.name == "env":
                changes["env"] = {**(default or {}), **(own or {})}
            elif own is None:
                changes[field.name] = default if default is not None else BUILTIN.get(field.name)
        if changes.get("agent", inst.agent) is None:
            changes["agent"] = batch.agent or agents.DEFAULT_AGENT
        out.append(attrs.evolve(inst, **changes))
    return tuple(out)


# -- loading ---------------------------------------------------------------------------------------------------------


def load_batch(path: str) -> Batch:
    """Read and validate a batch file; raise :class:`ConfigError` on the first problem found."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read batch file: {exc.strerror}") from None
    return parse_batch(data, path)


def parse_batch(data: bytes, path: str) -> Batch:
    label = os.path.basename(path) or path
    renames: Dict[str, str] = {}
    if path.endswith(".json") or data.lstrip()[:1] == b"{":
        raw = _read_json(data, label)
        raw, renames = _from_zen(raw, label)
    else:
        try:
            raw = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(label, "", "not valid UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(label, "", f"not valid TOML: {exc}") from None
    if "path" in raw:
        raise ConfigError(label, "path", "unknown key")
    if "instances" not in raw:
        raise ConfigError(label, "instances", "required: a list of instances ([[instances]] tables)")
    try:
        batch = _converter.structure({**raw, "path": os.path.abspath(path)}, Batch)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError, _AtIndex) as exc:
        key, message = next(_problems(exc, ""))
        raise ConfigError(label, _rename(key, renames), message) from None
    _check_batch(batch, label, renames)
    return batch


def _read_json(data: bytes, label: str) -> Dict[str, Any]:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(label, "", f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(label, "", "expected a JSON object at the top level")
    return raw


#: zen instance key -> our key; zen keys with no counterpart map to None and are handled in :func:`_from_zen`.
_ZEN_KEYS = {
    "name": "name",
    "command": "prompt",
    "description": "description",
    "permission_mode": "permission_mode",
    "max_tokens_per_command": "max_tokens",
    "allowed_tools": "allowed_tools",
    "session_id": "session_id",
    "output_format": None,
    "clear_history": None,
    "compact_history": None,
    "pre_commands": None,
}


def _from_zen(raw: Dict[str, Any], label: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The zen JSON layout as our raw layout, plus the key renames for error messages.

    Top-level keys starting with ``//`` are comments. ``output_format`` is accepted (the orchestrator always reads
    stream-json); ``clear_history`` is accepted (every headless run starts with an empty history unless resumed);
    ``compact_history`` and ``pre_commands`` become lines sent before ``command`` in the same prompt.
    """
    raw = {k: v for k, v in raw.items() if not k.startswith("//")}
    instances = raw.get("instances")
    if not isinstance(instances, list):
        return raw, {}
    converted = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            converted.append(inst)
            continue
        ours: Dict[str, Any] = {}
        for key, value in inst.items():
            if key not in _ZEN_KEYS:
                raise ConfigError(label, f"instances[{i}].{key}", _unknown(key, list(_ZEN_KEYS)))
            if _ZEN_KEYS[key]:
                ours[_ZEN_KEYS[key]] = value
        pre = inst.get("pre_commands") or []
        if not isinstance(pre, list) or not all(isinstance(c, str) for c in pre):
            raise ConfigError(label, f"instances[{i}].pre_commands", f"expected a list of strings, got {describe(pre)}")
        for flag in ("clear_history", "compact_history"):
            if flag in inst and not isinstance(inst[flag], bool):
                raise ConfigError(label, f"instances[{i}].{flag}", f"expected true or false, got {describe(inst[flag])}")
        if inst.get("compact_history"):
            pre = ["/compact", *pre]
        if pre and isinstance(ours.get("prompt"), str):
            ours["prompt"] = "\n".join([*pre, ours["prompt"]])
        converted.append(ours)
    renames = {ours: zen for zen, ours in _ZEN_KEYS.items() if ours and ours != zen}
    return {**raw, "instances": converted}, renames


def _rename(key: str, renames: Dict[str, str]) -> str:
    head, _, last = key.rpartition(".")
    return f"{head}.{renames[last]}" if head and last in renames else key


def _check_batch(batch: Batch, label: str, renames: Dict[str, str]) -> None:
    if not batch.instances:
        raise ConfigError(label, "instances", "expected at least one instance")
    seen: Dict[str, int] = {}
    for i, inst in enumerate(batch.instances):
        if inst.name in seen:
            raise ConfigError(label, f"instances[{i}].name", f'duplicate name "{inst.name}" (also instances[{seen[inst.name]}])')
        seen[inst.name] = i
        if (inst.prompt is None) == (inst.argv is None):
            key = _rename(f"instances[{i}].prompt", renames)
            raise ConfigError(label, key, "expected exactly one of prompt or argv")
        if inst.argv is not None and not inst.argv:
            raise ConfigError(label, f"instances[{i}].argv", "expected a non-empty list of strings")
        if inst.session_id and inst.resume:
            raise ConfigError(label, f"instances[{i}].resume", "set either session_id or resume, not both")
        _check_tools(inst, f"instances[{i}]", label)
        if inst.argv is not None and inst.agent is not None:
            raise ConfigError(label, f"instances[{i}].agent", "an argv instance runs its own program; agent applies "
                              "only to prompt instances")
    _check_tools(batch.defaults, "defaults", label)
    for i, (own, inst) in enumerate(zip(batch.instances, apply_defaults(batch))):
        if inst.argv is None:
            _check_agent(own, inst, i, label)


def _check_agent(own: Instance, inst: Instance, i: int, label: str) -> None:
    """A field the instance's agent cannot honour is an error (never silently dropped)."""
    agent = inst.agent or agents.DEFAULT_AGENT

    def where(field: str) -> str:
        return f"instances[{i}].{field}" if getattr(own, field) is not None else f"defaults.{field}"

    for field in agents.UNSUPPORTED[agent]:
        if getattr(inst, field):
            raise ConfigError(label, where(field), f'agent "{agent}" has no counterpart for {field} '
                              f'(instances[{i}] "{inst.name}"; see README "Agents")')
    if inst.permission_mode and inst.permission_mode not in agents.PERMISSION_MODES[agent]:
        allowed = ", ".join(f'"{m}"' for m in agents.PERMISSION_MODES[agent])
        raise ConfigError(label, where("permission_mode"), f'agent "{agent}" supports {allowed}, got '
                          f'{describe(inst.permission_mode)} (instances[{i}] "{inst.name}")')


def _check_tools(values: Defaults, at: str, label: str) -> None:
    """Every allowed/disallowed tools entry is one tool as Claude Code splits them (:mod:`orchestrator_pex.tools`)."""
    from orchestrator_pex import tools

    for key in ("allowed_tools", "disallowed_tools"):
        for j, spec in enumerate(getattr(values, key) or ()):
            why = tools.problem(spec)
            if why:
                raise ConfigError(label, f"{at}.{key}[{j}]", f"{why}; got {describe(spec)}")


# -- the converter ---------------------------------------------------------------------------------------------------


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v <= 0 or v == float("inf"):
        raise ValueError(f"expected a positive number of {what}, got {describe(v)}")
    return float(v)


def _integer(v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        kind = "a positive integer" if minimum > 0 else "an integer, 0 or more"
        raise ValueError(f"expected {kind}, got {describe(v)}")
    return v


def _text(v: Any, _: Any = None) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {describe(v)}")
    return v


def _name(v: Any, _: Any) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > MAX_NAME or not v.isprintable():
        raise ValueError(f"expected a name of 1 to {MAX_NAME} printable characters, got {describe(v)}")
    return v


def _choice(choices: Tuple[str, ...]):
    def hook(v: Any, _: Any) -> str:
        if v not in choices:
            listed = ", ".join(f'"{c}"' for c in choices)
            raise ValueError(f"expected one of {listed}, got {describe(v)}")
        return v

    return hook


def _str_list(v: Any, _: Any) -> Tuple[str, ...]:
    if not isinstance(v, list):
        raise ValueError(f"expected a list of strings, got {describe(v)}")
    for i, x in enumerate(v):
        if not isinstance(x, str):
            raise ValueError(f"expected a list of strings, got {describe(x)} at index {i}")
    return tuple(v)


def _env(v: Any, _: Any) -> Dict[str, str]:
    if not isinstance(v, dict):
        raise ValueError(f"expected a table of NAME = \"value\", got {describe(v)}")
    for key, value in v.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ValueError(f"expected environment variable names, got {describe(key)}")
        if not isinstance(value, str):
            raise ValueError(f"expected string values, got {describe(value)} for {key}")
    return dict(v)


class _AtIndex(Exception):
    """A problem inside list element ``index``."""

    def __init__(self, index: int, exc: BaseException) -> None:
        super().__init__(index, exc)
        self.index, self.exc = index, exc


def _instances(v: Any, _: Any) -> Tuple[Instance, ...]:
    if not isinstance(v, list):
        raise ValueError(f"expected a list of instances ([[instances]] tables), got {describe(v)}")
    out = []
    for i, x in enumerate(v):
        try:
            out.append(_converter.structure(x, Instance))
        except Exception as exc:
            raise _AtIndex(i, exc) from None
    return tuple(out)


_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
for _type, _hook in {
    Seconds: lambda v, _: _number(v, "seconds"),
    Dollars: lambda v, _: _number(v, "dollars"),
    PositiveInt: lambda v, _: _integer(v, 1),
    Count: lambda v, _: _integer(v, 0),
    Name: _name,
    Text: _text,
    str: _text,
    PermissionMode: _choice(PERMISSION_MODES),
    Agent: _choice(agents.AGENTS),
    BudgetMode: _choice(BUDGET_MODES),
    StrList: _str_list,
    Dict[str, str]: _env,
    Tuple[Instance, ...]: _instances,
}.items():
    _converter.register_structure_hook_func(lambda t, _type=_type: t == _type, _hook)


def _attrs_hook_factory(cls):
    inner = cattrs.gen.make_dict_structure_fn(cls, _converter, _cattrs_forbid_extra_keys=True)

    def hook(v: Any, _: Any):
        if not isinstance(v, dict):
            raise ValueError(f"expected a table, got {describe(v)}")
        return inner(v, cls)

    return hook


for _cls in (Budget, Retry, Defaults, Instance, Batch):
    _converter.register_structure_hook(_cls, _attrs_hook_factory(_cls))


def _unknown(key: str, known: List[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f'unknown key; did you mean "{close[0]}"?' if close else f"unknown key; expected one of {', '.join(known)}"


def _problems(exc: BaseException, path: str):
    """Yield ``(key path, message)`` for each leaf problem inside a cattrs validation error, in file order."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            name = getattr(note, "name", None)
            index = getattr(note, "index", None)
            sub_path = f"{path}.{name}".lstrip(".") if name is not None else f"{path}[{index}]"
            yield from _problems(sub, sub_path)
        for sub in without:
            yield from _problems(sub, path)
    elif isinstance(exc, _AtIndex):
        yield from _problems(exc.exc, f"{path}[{exc.index}]")
    elif isinstance(exc, ForbiddenExtraKeysError):
        known = [f.name for f in attrs.fields(exc.cl) if f.name != "path"]
        for key in sorted(exc.extra_fields):
            yield f"{path}.{key}".lstrip("."), _unknown(key, known)
    elif isinstance(exc, KeyError):
        yield path, "required key is missing"
    else:
        yield path, str(exc)
