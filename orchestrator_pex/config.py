"""Batch files: read TOML (or the JSON of the older ``zen`` orchestrator) into frozen attrs classes.

This is the edge where untrusted input becomes typed data. Structuring goes through one cattrs converter whose hooks
check each value and say what was expected; every problem becomes a :class:`~orchestrator_pex.errors.ConfigError`
naming the file and the key path, e.g. ``batch.toml: instances[3].timeout: expected a positive number of seconds,
got "ten"``. Unknown keys are errors, with a "did you mean" where one is close. Past this module nothing re-validates.

:func:`examine_batch_file` collects every problem, in file order (the stages and when they stop:
:func:`examine_batch`); :func:`load_batch` raises them (one: a :class:`~orchestrator_pex.errors.ConfigError`;
several: :class:`~orchestrator_pex.errors.Problems`, one line each). :mod:`orchestrator_pex.checks` adds the policy
and preflight for ``validate`` and ``run``.

Input is checked completely before anything starts (every problem below is one line, exit 2):

* **The file.** Only a regular file is read (a FIFO, a device such as ``/dev/zero`` or a directory is refused before
  a byte is read), and at most :data:`MAX_BATCH_BYTES`. Nesting deeper than :data:`MAX_DEPTH` arrays/tables (TOML)
  or arrays/objects (JSON) is refused before parsing, by a scan that ignores brackets inside strings and comments.
  A TOML batch is first read :data:`CHUNK_INSTANCES` ``[[instances]]`` tables at a time
  (:func:`_examine_in_chunks`); that reading answers only for a batch with no problem, and only where it provably
  reads what one parse of the whole file reads; otherwise the whole document is examined (every message below).
* **Strings.** No string anywhere in the file (keys included) may hold NUL, another C0 control character, DEL, a
  C1 control character (U+0080-U+009F) or a lone surrogate (they cannot reach argv, env or a file name intact).
  Tab, newline and carriage return are allowed only in multi-line text: ``prompt``, ``append_system_prompt``,
  ``description``, ``argv`` elements and ``env`` values. Every other string (``name``, ``model``, ``cwd``,
  ``claude``, ``results_dir``, ``start_at``, ``session_id``, ``resume``, ``tags``, tool names, ``env`` names, ...)
  is a single line with no control character at all. Names and ``env`` names are matched whole (``fullmatch``).
* **Numbers.** Every number is finite, of the right type and within a bound: seconds (``timeout``,
  ``stall_timeout``, ``deadline``, ``stagger``, ``grace_period``, ``backoff``, ``backoff_max``) in
  ``(0, MAX_SECONDS]``; dollars in ``(0, MAX_DOLLARS]``; token counts and ``max_turns`` in ``[1, MAX_COUNT]``;
  ``concurrency`` in ``[1, MAX_CONCURRENCY]``; ``retries`` in ``[0, MAX_RETRIES]`` (bounds:
  :mod:`orchestrator_pex.limits`). ``start_at`` must name a
  moment within :data:`~orchestrator_pex.start_at.MAX_HORIZON` of now (see :mod:`orchestrator_pex.start_at`).
"""

import datetime
import json
import os
import re
import stat
import sys
from typing import Any, Callable, Dict, Iterator, List, NewType, Optional, Sequence, Tuple, cast

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from orchestrator_pex import agents
from orchestrator_pex.errors import ConfigError, Problem, Problems, describe, unknown_key
from orchestrator_pex.limits import (
    MAX_BATCH_BYTES,
    MAX_CONCURRENCY,
    MAX_COUNT,
    MAX_DEPTH,
    MAX_DOLLARS,
    MAX_RETRIES,
    MAX_SECONDS,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10
    import tomli as tomllib

Seconds = NewType("Seconds", float)
Dollars = NewType("Dollars", float)
PositiveInt = NewType("PositiveInt", int)  # token counts, max_turns
Concurrency = NewType("Concurrency", int)
Count = NewType("Count", int)  # zero or more (retries)
Name = NewType("Name", str)
Text = NewType("Text", str)  # one line: no control character at all
Prose = NewType("Prose", str)  # multi-line text: tab, newline and carriage return allowed
PermissionMode = NewType("PermissionMode", str)
Agent = NewType("Agent", str)
BudgetMode = NewType("BudgetMode", str)
WorkspaceMode = NewType("WorkspaceMode", str)
KeepMode = NewType("KeepMode", str)
WhenMode = NewType("WhenMode", str)
Flag = NewType("Flag", bool)
StrList = Tuple[str, ...]  # elements: multi-line text allowed here; tool names and tags re-checked in _batch_problems

PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")
BUDGET_MODES = ("block", "warn")
WORKSPACE_MODES = ("shared", "worktree")  # shared: run in cwd as is; worktree: see orchestrator_pex.workspace
KEEP_MODES = ("always", "changed", "never")
WHEN_MODES = ("success", "on-failure", "always")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")  # always fullmatch


#: Control characters refused in single-line strings; multi-line text may also hold tab, newline, carriage return.
_BAD_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_PROSE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_NAME = 200  #: instance names: 1 to 200 printable characters (any script); log file names derive safely

#: Agent executable meaning "the demo agent built into orchestrator-pex".
AGENT_SIM = "@agent-sim"


@attrs.frozen
class Budget:
    """Overall limits for the whole batch. ``block`` stops launching and stops a running instance that crosses."""

    max_tokens: Optional[PositiveInt] = None
    max_cost_usd: Optional[Dollars] = None
    mode: BudgetMode = BudgetMode("block")


@attrs.frozen
class Retry:
    """Backoff for transient API errors (429, 529, 5xx); the number of retries is per instance (``retries``)."""

    backoff: Seconds = Seconds(2.0)
    backoff_max: Seconds = Seconds(60.0)


@attrs.frozen
class Defaults:
    """Values every instance inherits unless it sets its own."""

    description: Optional[Prose] = None
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
    append_system_prompt: Optional[Prose] = None
    workspace: Optional[WorkspaceMode] = None
    repo: Optional[Text] = None
    base: Optional[Text] = None
    keep: Optional[KeepMode] = None
    commit: Optional[Flag] = None
    delete_branch: Optional[Flag] = None


#: Workspace keys that may also be set at the top level of a batch (between [defaults] and BUILTIN).
WORKSPACE_KEYS = ("workspace", "repo", "base", "keep", "commit", "delete_branch")


@attrs.frozen
class Instance(Defaults):
    """One agent run. Exactly one of ``prompt`` (for ``agent``: Claude Code, Codex CLI or Gemini CLI; a slash command
    is a prompt) or ``argv`` (any program).

    Every field of :class:`Defaults` is also an instance field (unset: inherited, see :func:`apply_defaults`).
    """

    name: Name = attrs.field(kw_only=True)
    prompt: Optional[Prose] = None
    argv: Optional[StrList] = None
    session_id: Optional[Text] = None
    resume: Optional[Text] = None
    needs: Optional[StrList] = None
    when: Optional[WhenMode] = None


@attrs.frozen
class Batch:
    """A whole batch file. ``path`` is where it was read from; relative paths in it resolve against its folder."""

    instances: Tuple[Instance, ...]
    path: str = ""
    agent: Optional[Agent] = None  # the agent of prompt instances that set none (neither in [defaults]): claude
    claude: Text = Text("claude")
    codex: Text = Text("codex")
    gemini: Text = Text("gemini")
    concurrency: Optional[Concurrency] = None
    stagger: Optional[Seconds] = None
    deadline: Optional[Seconds] = None
    grace_period: Seconds = Seconds(10.0)
    start_at: Optional[Text] = None
    results_dir: Optional[Text] = None
    metrics_file: Optional[Text] = None
    env_file: Optional[Text] = None
    budget: Budget = Budget()
    retry: Retry = Retry()
    defaults: Defaults = Defaults()
    workspace: Optional[WorkspaceMode] = None
    repo: Optional[Text] = None
    base: Optional[Text] = None
    keep: Optional[KeepMode] = None
    commit: Optional[Flag] = None
    delete_branch: Optional[Flag] = None


#: Fallbacks for what neither an instance nor [defaults] (nor, for workspace keys, the top level) sets.
BUILTIN = {"retries": 2, "stall_timeout": 1800.0, "env": {}, "allowed_tools": (), "disallowed_tools": (), "tags": (),
           "workspace": "shared", "keep": "changed", "commit": True, "delete_branch": False}


def apply_defaults(batch: Batch) -> Tuple[Instance, ...]:
    """Each instance with every unset field taken from ``[defaults]``, then from :data:`BUILTIN`.

    ``env`` tables merge (the instance's keys win); every other field is replaced whole. The workspace keys
    (:data:`WORKSPACE_KEYS`) may also come from the top level of the batch, between ``[defaults]`` and BUILTIN.
    ``agent`` falls back to the batch's top-level ``agent``, then ``claude``.
    """
    return tuple(with_defaults(batch, inst) for inst in batch.instances)


def with_defaults(batch: Batch, inst: Instance, shared: Optional[Dict[str, Any]] = None) -> Instance:
    """One instance of ``batch`` with its defaults applied (see :func:`apply_defaults`). ``shared``: values made
    for earlier instances of the same batch; an instance with no ``env`` of its own then gets the one dict made
    from ``[defaults]`` (a plan of 100,000 instances holds one, not 100,000; nothing changes an ``env`` once
    made)."""
    changes: Dict[str, Any] = {}
    for field in attrs.fields(Defaults):
        own, default = getattr(inst, field.name), getattr(batch.defaults, field.name)
        if field.name == "env":
            env = {**(default or {}), **(own or {})}
            changes["env"] = env if shared is None or own else shared.setdefault("env", env)
        elif own is None:
            if default is None and field.name in WORKSPACE_KEYS:
                default = getattr(batch, field.name)
            changes[field.name] = default if default is not None else BUILTIN.get(field.name)
    if changes.get("agent", inst.agent) is None:
        changes["agent"] = batch.agent or agents.DEFAULT_AGENT
    return attrs.evolve(inst, **changes)


# -- loading ---------------------------------------------------------------------------------------------------------


@attrs.frozen
class Examined:
    """What :func:`examine_batch_file` found: the batch (None when no plan can be made from it), every problem in
    file order, and the file order itself (:meth:`position` of any key path, for sorting later problems with these)."""

    batch: Optional[Batch]
    problems: Tuple[ConfigError, ...]
    order: Any = attrs.field(default=None, repr=False)  # the document's key order (see _order)

    def position(self, key: str) -> Tuple[int, ...]:
        """Where ``key`` (``instances[2].model``) appears in the file, as a sort key (a key sorts after the key
        that contains it and before the next one): its own position, else its closest enclosing key's (a key that
        is not written there, e.g. inherited from ``[defaults]``); ``(-1,)`` if none (another file's problems
        sort as ``(-2,)``, before them)."""
        out: List[int] = []
        node = self.order
        for part in _split_key(key) if key else ():
            if isinstance(part, int):  # a list index is its own order; its element's node, if it has one
                if not isinstance(node, list) or part >= len(node):
                    break
                out.append(part)
                node = node[part]
            else:
                if not isinstance(node, tuple) or part not in node[0]:
                    break
                i = node[0].index(part)
                out.append(i)
                node = node[1][i]
        return tuple(out) if out else (-1,)


def load_batch(path: str) -> Batch:
    """Read and validate a batch file; raise :class:`ConfigError` if anything is wrong (:class:`Problems`, a
    subclass, when there is more than one problem: every one, in file order).

    Only a regular file is read, and at most :data:`MAX_BATCH_BYTES` of it (see the module docstring).
    """
    return _only_batch(examine_batch_file(path))


def parse_batch(data: bytes, path: str) -> Batch:
    """:func:`load_batch` of ``data`` read from ``path``."""
    return _only_batch(examine_batch(data, path))


def _only_batch(found: "Examined") -> Batch:
    if len(found.problems) == 1:
        raise found.problems[0]
    if found.problems:
        raise Problems(Problem(p.file, p.key, p.message) for p in found.problems)
    assert found.batch is not None
    return found.batch


def examine_batch_file(path: str) -> Examined:
    """Read ``path`` and :func:`examine_batch` it; a file that cannot be read is one problem. Never raises
    :class:`ConfigError`."""
    try:
        data = _read_file(path)
    except ConfigError as exc:
        return Examined(batch=None, problems=(exc,))
    return examine_batch(data, path)


def _read_file(path: str) -> bytes:
    label = path
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below like any non-regular file
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(label, "", f"cannot read batch file: {exc.strerror or exc}") from None
    except ValueError:  # an embedded NUL in the path
        raise ConfigError(label, "", "cannot read batch file: the path contains a NUL character") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(label, "", "not a regular file (a FIFO, device or directory is never read as a batch)")
        if st.st_size > MAX_BATCH_BYTES:
            raise ConfigError(label, "", f"too large: {st.st_size} bytes (at most {MAX_BATCH_BYTES})")
        chunks, size = [], 0
        while size <= MAX_BATCH_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_BATCH_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BATCH_BYTES:
            raise ConfigError(label, "", f"too large: more than {MAX_BATCH_BYTES} bytes")
    except OSError as exc:
        raise ConfigError(label, "", f"cannot read batch file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def examine_batch(data: bytes, path: str) -> Examined:
    """Check ``data`` (read from ``path``) completely and return every problem, in file order.

    The checks come in stages; a stage runs only if the one before it left something to check:

    1. the file as a whole (size, nesting, TOML/JSON syntax, zen layout): the first problem ends the examination;
    2. characters of every string and key: all are reported, then the examination ends;
    3. structure and values (cattrs: unknown keys, wrong types, out-of-range values, bad choices): every leaf
       problem of every instance is reported. The offending keys are then left out (as if unset) and structuring
       is repeated, so the batch can still be checked further, unless an instance cannot be identified (not a
       table, or no valid ``name``) or ``instances`` itself is wrong: then the examination ends (``batch`` None);
    4. the checks across keys (duplicate names, exactly one of prompt/argv, tool entries, ``start_at``) and the
       dependency graph (:func:`orchestrator_pex.graph.problems`): all reported, except one that follows from a
       problem already reported for the same key (or a key containing it). An empty ``argv`` leaves no program to
       plan with: ``batch`` is then None.

    ``batch`` is returned whenever stage 3 could build one (a plan can be made from it; callers check the rest —
    policy and preflight — on it, see :mod:`orchestrator_pex.checks`) even if problems were found.
    """
    label = os.path.basename(path) or path
    quick = _examine_in_chunks(data, path)
    if quick is not None:
        return quick
    try:
        raw, renames = _parse(data, path, label)
    except ConfigError as exc:
        return Examined(batch=None, problems=(exc,))
    order = _order(raw, {})
    problems = [ConfigError(label, k, m) for k, m in _string_problems(raw)]
    if problems:
        return Examined(batch=None, problems=_in_file_order(problems, order), order=order)
    batch, found, complete = _structure(raw, path)
    del raw  # the parsed document is not needed past structuring: never held beside the plan made next
    problems += [ConfigError(label, _rename(k, renames), m) for k, m in found]
    if batch is not None:
        reported = [k for k, _ in found]
        for key, message in _batch_problems(batch, renames, reported):
            if not any(_within(key, r) for r in reported):  # not a consequence of a problem already reported
                problems.append(ConfigError(label, key, message))
                reported.append(key)
        if any(inst.argv is not None and not inst.argv for inst in batch.instances):
            complete = False  # an empty argv: no program to plan with
    return Examined(batch=batch if complete else None, problems=_in_file_order(problems, order), order=order)


#: A line that is exactly an ``[[instances]]`` table header: where :func:`_examine_in_chunks` may cut a document.
_INSTANCES_HEADER = re.compile(rb"^\[\[instances\]\][ \t]*\r?$", re.M)
#: ``[[instances]]`` tables parsed and structured at a time by :func:`_examine_in_chunks`.
CHUNK_INSTANCES = 1000


def _examine_in_chunks(data: bytes, path: str) -> Optional[Examined]:
    """:func:`examine_batch` of a TOML batch with no problem at all, parsed and structured
    :data:`CHUNK_INSTANCES` ``[[instances]]`` tables at a time, so neither the parsed document of a huge batch nor
    its decoded text is ever whole in memory (issue 14, P6: 100,000 instances); None whenever this cannot be shown
    to give exactly what the whole-document examination gives, and for every batch with a problem (the caller then
    examines the whole document, which reports every problem with its exact message, in file order).

    Why cutting is safe: with no multi-line string in the file (no ``\"\"\"`` or ``'''``), no line can continue a
    string, and a comment ends at its line, so a line that is exactly ``[[instances]]`` either is that table header
    or sits inside a multi-line array, where it is not a valid value (the part before it then fails to parse:
    None). The part before the first header (the head) must not define ``instances`` and every chunk must define
    nothing but ``instances`` (so no table can be defined twice across parts and the key order is the head's, then
    ``instances``); any parse error, bad string, structuring or cross-key problem ends the attempt. Parts are cut at
    the start of a line (an ASCII byte), so each decodes as UTF-8 exactly when the whole file does."""
    if path.endswith(".json") or len(data) > MAX_BATCH_BYTES or data.lstrip()[:1] == b"{":
        return None
    if b'"""' in data or b"'''" in data:
        return None
    try:
        _check_nesting(data, os.path.basename(path) or path, False)
    except ConfigError:
        return None
    cuts = [m.start() for m in _INSTANCES_HEADER.finditer(data)]
    if not cuts:
        return None
    shared: Dict[Any, Any] = {}
    nodes: List[Any] = []
    instances: List[Instance] = []
    _SHARED.clear()
    try:
        head = tomllib.loads(data[: cuts[0]].decode("utf-8"))
        if "instances" in head or "path" in head or next(_string_problems(head), None) is not None:
            return None
        for first in range(0, len(cuts), CHUNK_INSTANCES):
            end = cuts[first + CHUNK_INSTANCES] if first + CHUNK_INSTANCES < len(cuts) else len(data)
            part = tomllib.loads(data[cuts[first]:end].decode("utf-8"))
            listed = part.get("instances")
            if len(part) != 1 or not isinstance(listed, list) or next(_string_problems(part), None) is not None:
                return None
            for raw in listed:
                if not isinstance(raw, dict):
                    return None
                nodes.append(_order(raw, shared))
                instances.append(_converter.structure(raw, Instance))
            del part, listed
        batch = _converter.structure({**head, "instances": [], "path": os.path.abspath(path)}, Batch)
        batch = attrs.evolve(batch, instances=tuple(instances))
    except Exception:  # noqa: BLE001 - any problem at all: the whole-document examination reports it exactly
        return None
    finally:
        _SHARED.clear()
    del instances
    if _batch_problems(batch, {}) or any(inst.argv is not None and not inst.argv for inst in batch.instances):
        return None
    order = (tuple(head) + ("instances",), tuple(_order(sub, shared) for sub in head.values()) + (nodes,))
    return Examined(batch=batch, problems=(), order=order)


def _within(key: str, outer: str) -> bool:
    """Is ``key`` the key path ``outer`` or inside it (``instances[0].env`` is within ``instances[0]``)?"""
    return key == outer or key.startswith(outer + ".") or key.startswith(outer + "[")


def _parse(data: bytes, path: str, label: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The raw document of ``data`` (zen JSON converted) and the key renames for messages."""
    renames: Dict[str, str] = {}
    if len(data) > MAX_BATCH_BYTES:
        raise ConfigError(label, "", f"too large: {len(data)} bytes (at most {MAX_BATCH_BYTES})")
    is_json = path.endswith(".json") or data.lstrip()[:1] == b"{"
    _check_nesting(data, label, is_json)
    try:
        if is_json:
            raw = _read_json(data, label)
            first = next(iter(_string_problems(raw)), None)
            if first:  # before the zen conversion looks at the values
                raise ConfigError(label, *first)
            raw, renames = _from_zen(raw, label)
        else:
            try:
                raw = tomllib.loads(data.decode("utf-8"))
            except UnicodeDecodeError:
                raise ConfigError(label, "", "not valid UTF-8") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(label, "", f"not valid TOML: {exc}") from None
            except ValueError as exc:  # e.g. an integer of more than 4300 digits
                raise ConfigError(label, "", f"not valid TOML: {str(exc)[:120]}") from None
    except RecursionError:  # the nesting scan should have caught it; never a traceback
        raise ConfigError(label, "", f"nested too deeply (at most {MAX_DEPTH} levels)") from None
    if "path" in raw:
        raise ConfigError(label, "path", "unknown key")
    if "instances" not in raw:
        raise ConfigError(label, "instances", "required: a list of instances ([[instances]] tables)")
    return raw, renames


#: Structuring is repeated at most this many times, each time without the keys found wrong the time before.
_MAX_STRUCTURE_ROUNDS = 4


def _structure(raw: Dict[str, Any], path: str) -> Tuple[Optional[Batch], List[Tuple[str, str]], bool]:
    """Structure ``raw`` into a :class:`Batch`, collecting every leaf problem; ``(batch, problems, complete)``.

    After a round with problems, each offending key is removed from (a copy of) the document and structuring is
    repeated. ``complete`` is False (and ``batch`` None) when a problem cannot be removed that way."""
    import copy

    doc = raw  # structuring only reads it; copied before the first key is removed
    problems: List[Tuple[str, str]] = []
    _SHARED.clear()
    try:
        for _ in range(_MAX_STRUCTURE_ROUNDS):
            try:
                return _converter.structure({**doc, "path": os.path.abspath(path)}, Batch), problems, True
            except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError, _AtIndex,
                    _AtIndexes) as exc:
                found = [p for p in _problems(exc, "") if p not in problems]
                problems += found
                if doc is raw:
                    doc = copy.deepcopy(raw)
                if not found or not all(_remove(doc, key) for key, _ in found):
                    return None, problems, False
        return None, problems, False
    finally:
        _SHARED.clear()


#: While a batch is structured: equal list entries (``argv``, tool names, ...) become one string object, and equal
#: lists one tuple, so 100,000 instances with the same program or arguments hold each once (see :func:`_str_list`).
_SHARED: Dict[Any, Any] = {}


_KEY_PART = re.compile(r"\.?([^.\[]+)|\[(\d+)\]")


def _split_key(key: str) -> List[Any]:
    """``instances[2].env.A`` -> ``["instances", 2, "env", "A"]``."""
    return [int(m.group(2)) if m.group(2) is not None else m.group(1) for m in _KEY_PART.finditer(key)]


def _parent_key(key: str) -> str:
    m = re.search(r"(\.[^.\[]+|\[\d+\])$", key)
    return key[: m.start()] if m else ""


def _remove(doc: Dict[str, Any], key: str) -> bool:
    """Remove the key at path ``key`` from ``doc`` so structuring can go on without it (as if it were unset).

    False when that cannot leave a usable batch: the key is ``instances`` itself, a list element (an instance that
    is not a table), an instance's ``name``, or not found."""
    parts = _split_key(key)
    if not parts or parts[0] == "instances" and (len(parts) <= 2 or parts[2:] == ["name"]):
        return False
    node: Any = doc
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    if not isinstance(node, dict) or parts[-1] not in node:
        return False
    del node[parts[-1]]
    return True


def _order(value: Any, shared: Dict[Any, Any]) -> Any:
    """The key order of a raw document, compactly (what :meth:`Examined.position` reads): a table is the tuple
    ``(its keys in order, their nodes)``, a list holding tables a list of their nodes, anything else None (a list
    index is its own order). Equal nodes are one object (``shared``): 100,000 instances written with the same keys
    share one node, so the order costs a pointer per instance, not a dict entry per key path."""
    if isinstance(value, dict):
        node: Any = (tuple(value), tuple(_order(sub, shared) for sub in value.values()))
        try:
            return shared.setdefault(node, node)
        except TypeError:  # it holds a list (of tables): not shared
            return node
    if isinstance(value, list) and any(isinstance(sub, (dict, list)) for sub in value):
        return [_order(sub, shared) for sub in value]
    return None


def _in_file_order(problems: List[ConfigError], order: Any) -> Tuple[ConfigError, ...]:
    found = Examined(batch=None, problems=(), order=order)
    return tuple(sorted(problems, key=lambda p: found.position(p.key)))  # stable: ties keep the order found


_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_TOML_TOKENS = re.compile(
    rb'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}]', re.DOTALL
)


def _check_nesting(data: bytes, label: str, is_json: bool) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` before a parser sees it (brackets in strings/comments ignored)."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return
    depth = 0
    for m in (_JSON_TOKENS if is_json else _TOML_TOKENS).finditer(data):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(label, "", f"nested too deeply (at most {MAX_DEPTH} levels of arrays and tables)")
        elif token in (b"]", b"}"):
            depth = max(0, depth - 1)


def _string_problems(raw: Any) -> Iterator[Tuple[str, str]]:
    """Walk the parsed document (iteratively) and yield ``(key, message)`` for each key or string value holding a
    forbidden character (none but tab/newline/carriage return in any string value; single-line fields are checked
    again by their hook) and for nesting deeper than :data:`MAX_DEPTH`."""
    stack = [(raw, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            yield path, f"nested too deeply (at most {MAX_DEPTH} levels of arrays and tables)"
            continue
        if isinstance(value, dict):
            subs = []
            for key, sub in value.items():
                sub_path = f"{path}.{key}".lstrip(".")
                if not isinstance(key, str) or _BAD_LINE.search(key):
                    yield sub_path, "a key may not contain control characters or lone surrogates"
                    continue
                subs.append((sub, sub_path, depth + 1))
            stack.extend(reversed(subs))
        elif isinstance(value, list):
            stack.extend(reversed([(sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(value)]))
        elif isinstance(value, str):
            bad = _BAD_PROSE.search(value)
            if bad:
                yield path, _bad_char_message(bad.group(), value)


def _bad_char_message(char: str, value: str) -> str:
    what = "a lone surrogate" if 0xD800 <= ord(char) <= 0xDFFF else "a control character"
    return f"contains {what} (U+{ord(char):04X}), which cannot reach argv, env or a file name: {describe(value)}"


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
                raise ConfigError(label, f"instances[{i}].{key}", unknown_key(key, _ZEN_KEYS))
            ours_key = _ZEN_KEYS[key]
            if ours_key:
                ours[ours_key] = value
        pre = inst.get("pre_commands") or []
        if not isinstance(pre, list) or not all(isinstance(c, str) for c in pre):
            raise ConfigError(label, f"instances[{i}].pre_commands", f"expected a list of strings, got {describe(pre)}")
        for flag in ("clear_history", "compact_history"):
            if flag in inst and not isinstance(inst[flag], bool):
                raise ConfigError(label, f"instances[{i}].{flag}",
                                  f"expected true or false, got {describe(inst[flag])}")
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


def _batch_problems(batch: Batch, renames: Dict[str, str], removed: Sequence[str] = ()) -> List[Tuple[str, str]]:
    """``(key, message)`` of every problem across keys of a structured batch, then of its dependency graph.
    ``removed``: keys left out because their value was wrong (a missing prompt or argv is then not reported)."""
    out: List[Tuple[str, str]] = []
    if not batch.instances:
        out.append(("instances", "expected at least one instance"))
    seen: Dict[str, int] = {}
    for i, inst in enumerate(batch.instances):
        if inst.name in seen:
            out.append((f"instances[{i}].name", f'duplicate name "{inst.name}" (also instances[{seen[inst.name]}])'))
        else:
            seen[inst.name] = i
        left_out = {f"instances[{i}].prompt", f"instances[{i}].argv"} & set(removed)
        if (inst.prompt is None) == (inst.argv is None) and not left_out:
            out.append((_rename(f"instances[{i}].prompt", renames), "expected exactly one of prompt or argv"))
        if inst.argv is not None and not inst.argv:
            out.append((f"instances[{i}].argv", "expected a non-empty list of strings"))
        if inst.session_id and inst.resume:
            out.append((f"instances[{i}].resume", "set either session_id or resume, not both"))
    one_line_lists = ("allowed_tools", "disallowed_tools", "tags")  # names: never more than one line
    for where, obj in [("defaults", batch.defaults), *((f"instances[{i}]", x) for i, x in enumerate(batch.instances))]:
        for field in one_line_lists:
            for j, item in enumerate(getattr(obj, field) or ()):
                try:
                    _text(item)
                except ValueError as exc:
                    out.append((f"{where}.{field}[{j}]", str(exc)))
    for i, inst in enumerate(batch.instances):
        out += _tool_problems(inst, f"instances[{i}]")
        if inst.argv is not None and inst.agent is not None:
            out.append((f"instances[{i}].agent", "an argv instance runs its own program; agent applies only to "
                        "prompt instances"))
    out += _tool_problems(batch.defaults, "defaults")
    if batch.start_at is not None:
        from orchestrator_pex.start_at import start_moment

        try:
            start_moment(batch.start_at, datetime.datetime.now().astimezone())
        except ValueError as exc:
            out.append(("start_at", str(exc)))
    from orchestrator_pex import graph

    out += graph.problems(batch.instances, batch.defaults.env)
    for i, own in enumerate(batch.instances):
        if own.argv is None:  # defaults never set argv; applied one at a time (not a second copy of the batch)
            out += _agent_problems(own, with_defaults(batch, own), i)
    return out


def _agent_problems(own: Instance, inst: Instance, i: int) -> List[Tuple[str, str]]:
    """A field the instance's agent cannot honour is an error (never silently dropped)."""
    agent = inst.agent or agents.DEFAULT_AGENT
    out: List[Tuple[str, str]] = []

    def where(field: str) -> str:
        return f"instances[{i}].{field}" if getattr(own, field) is not None else f"defaults.{field}"

    for field in agents.UNSUPPORTED[agent]:
        if getattr(inst, field):
            out.append((where(field), f'agent "{agent}" has no counterpart for {field} '
                        f'(instances[{i}] "{inst.name}"; see README "Agents")'))
    if inst.permission_mode and inst.permission_mode not in agents.PERMISSION_MODES[agent]:
        allowed = ", ".join(f'"{m}"' for m in agents.PERMISSION_MODES[agent])
        out.append((where("permission_mode"), f'agent "{agent}" supports {allowed}, got '
                    f'{describe(inst.permission_mode)} (instances[{i}] "{inst.name}")'))
    return out


def _tool_problems(values: Defaults, at: str) -> List[Tuple[str, str]]:
    """Every allowed/disallowed tools entry is one tool as Claude Code splits them (:mod:`orchestrator_pex.tools`)."""
    from orchestrator_pex import tools

    out = []
    for key in ("allowed_tools", "disallowed_tools"):
        for j, spec in enumerate(getattr(values, key) or ()):
            why = tools.problem(spec)
            if why:
                out.append((f"{at}.{key}[{j}]", f"{why}; got {describe(spec)}"))
    return out


# -- the converter ---------------------------------------------------------------------------------------------------


def _number(v: Any, what: str, maximum: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:  # NaN fails here
        raise ValueError(f"expected a positive number of {what}, got {describe(v)}")
    if not v <= maximum:  # inf and huge integers
        raise ValueError(f"expected at most {maximum:.0f} {what}, got {describe(v)}")
    return float(v)


def _integer(v: Any, minimum: int, maximum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        kind = "a positive integer" if minimum > 0 else "an integer, 0 or more"
        raise ValueError(f"expected {kind}, got {describe(v)}")
    if v > maximum:
        raise ValueError(f"expected at most {maximum}, got {describe(v)}")
    return int(v)


def _text(v: Any, _: Any = None) -> str:
    """A single-line string: no control character (tab and newline included), no lone surrogate."""
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {describe(v)}")
    bad = _BAD_LINE.search(v)
    if bad:
        raise ValueError(_bad_char_message(bad.group(), v).replace("a control character", "a control character "
                                                                    "(this value must be one line)", 1))
    return v


def _prose(v: Any, _: Any = None) -> str:
    """Multi-line text: tab, newline and carriage return allowed; other control characters and lone surrogates not."""
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {describe(v)}")
    bad = _BAD_PROSE.search(v)
    if bad:
        raise ValueError(_bad_char_message(bad.group(), v))
    return v


def _name(v: Any, _: Any) -> str:
    if isinstance(v, str):
        _text(v)  # control characters and lone surrogates: the one-line message naming the character
    if not isinstance(v, str) or not v.strip() or len(v) > MAX_NAME or not v.isprintable():
        raise ValueError(f"expected a name of 1 to {MAX_NAME} printable characters, got {describe(v)}")
    return v


def _choice(choices: Tuple[str, ...]) -> Callable[[Any, Any], str]:
    def hook(v: Any, _: Any) -> str:
        if v not in choices:
            listed = ", ".join(f'"{c}"' for c in choices)
            raise ValueError(f"expected one of {listed}, got {describe(v)}")
        return str(v)

    return hook


def _flag(v: Any, _: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {describe(v)}")
    return v


def _str_list(v: Any, _: Any, check: Callable[[Any], str] = _prose) -> Tuple[str, ...]:
    if not isinstance(v, list):
        raise ValueError(f"expected a list of strings, got {describe(v)}")
    for i, x in enumerate(v):
        if not isinstance(x, str):
            raise ValueError(f"expected a list of strings, got {describe(x)} at index {i}")
        try:
            check(x)
        except ValueError as exc:
            raise ValueError(f"{exc} (at index {i})") from None
    listed = tuple([_SHARED.setdefault(x, x) for x in v])
    return cast(Tuple[str, ...], _SHARED.setdefault(listed, listed))  # equal lists: one tuple (never equal to a str)


def _env(v: Any, _: Any) -> Dict[str, str]:
    if not isinstance(v, dict):
        raise ValueError(f"expected a table of NAME = \"value\", got {describe(v)}")
    for key, value in v.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.fullmatch(key):
            raise ValueError(f"expected environment variable names, got {describe(key)}")
        if not isinstance(value, str):
            raise ValueError(f"expected string values, got {describe(value)} for {key}")
        bad = _BAD_PROSE.search(value)
        if bad:
            raise ValueError(f"{_bad_char_message(bad.group(), value)} for {key}")
    return dict(v)


class _AtIndex(Exception):
    """A problem inside list element ``index``."""

    def __init__(self, index: int, exc: BaseException) -> None:
        super().__init__(index, exc)
        self.index, self.exc = index, exc


class _AtIndexes(Exception):
    """Problems inside several list elements (each an :class:`_AtIndex`), in list order."""

    def __init__(self, problems: List[_AtIndex]) -> None:
        super().__init__(problems)
        self.problems = problems


def _instances(v: Any, _: Any) -> Tuple[Instance, ...]:
    """Every instance structured; the problems of every instance that cannot be, together (:class:`_AtIndexes`)."""
    if not isinstance(v, list):
        raise ValueError(f"expected a list of instances ([[instances]] tables), got {describe(v)}")
    out, problems = [], []
    for i, x in enumerate(v):
        try:
            out.append(_converter.structure(x, Instance))
        except Exception as exc:  # noqa: BLE001 - any structuring error of element i, kept with its index
            problems.append(_AtIndex(i, exc))
    if problems:
        raise _AtIndexes(problems)
    return tuple(out)


_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)


def _is(wanted: Any) -> Callable[[Any], bool]:
    """A cattrs predicate matching exactly the type ``wanted`` (a NewType or typing alias, not a class)."""
    return lambda t: bool(t == wanted)


_HOOKS: Dict[Any, Callable[[Any, Any], Any]] = {
    Seconds: lambda v, _: _number(v, "seconds", MAX_SECONDS),
    Dollars: lambda v, _: _number(v, "dollars", MAX_DOLLARS),
    PositiveInt: lambda v, _: _integer(v, 1, MAX_COUNT),
    Concurrency: lambda v, _: _integer(v, 1, MAX_CONCURRENCY),
    Count: lambda v, _: _integer(v, 0, MAX_RETRIES),
    Name: _name,
    Text: _text,
    Prose: _prose,
    str: _text,
    PermissionMode: _choice(PERMISSION_MODES),
    Agent: _choice(agents.AGENTS),
    BudgetMode: _choice(BUDGET_MODES),
    WorkspaceMode: _choice(WORKSPACE_MODES),
    KeepMode: _choice(KEEP_MODES),
    WhenMode: _choice(WHEN_MODES),
    Flag: _flag,
    StrList: _str_list,
    Dict[str, str]: _env,
    Tuple[Instance, ...]: _instances,
}
for _type, _hook in _HOOKS.items():
    _converter.register_structure_hook_func(_is(_type), _hook)


def _attrs_hook_factory(cls: type) -> Callable[[Any, Any], Any]:
    inner: Callable[[Any, Any], Any] = cattrs.gen.make_dict_structure_fn(
        cls, _converter, _cattrs_forbid_extra_keys=True)

    def hook(v: Any, _: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError(f"expected a table, got {describe(v)}")
        return inner(v, cls)

    return hook


for _cls in (Budget, Retry, Defaults, Instance, Batch):
    _converter.register_structure_hook(_cls, _attrs_hook_factory(_cls))


def _problems(exc: BaseException, path: str) -> Iterator[Tuple[str, str]]:
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
    elif isinstance(exc, _AtIndexes):
        for sub in exc.problems:
            yield from _problems(sub, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        known = [f.name for f in attrs.fields(exc.cl) if f.name != "path"]
        for key in sorted(exc.extra_fields):
            yield f"{path}.{key}".lstrip("."), unknown_key(key, known)
    elif isinstance(exc, KeyError):
        yield path, "required key is missing"
    else:
        yield path, str(exc)
