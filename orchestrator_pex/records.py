"""Records: the typed shape of an instance record (one entry of a results document's ``instances``, the ``record``
of an ``instance_finished`` journal event) and of the results document, defined once, with the converters that are
their only edges.

An :class:`InstanceRecord` is a frozen attrs class (slots). It is *produced*, never patched: by a constructor
(:meth:`InstanceRecord.of_attempts`, :meth:`~InstanceRecord.not_started`, :meth:`~InstanceRecord.skipped`,
:meth:`~InstanceRecord.interrupted`, :meth:`~InstanceRecord.live`) or from another record
(:meth:`~InstanceRecord.carry`, :meth:`~InstanceRecord.with_spend_of`, :meth:`~InstanceRecord.labelled`,
``attrs.evolve``).

Edges. :func:`to_json` (write) turns a record into the JSON object the README documents: every key always present,
in the documented order (``name``, ``agent``, ``status`` ... ``tags``, ``description``), ``null`` for a missing
value, ``tokens`` with its five counters, ``models`` and ``tags`` as lists; ``json.dumps`` of it is byte-for-byte
what the dict-built records were. :func:`record_from_json` (read: the journal, ``results.json``, ``merge`` inputs,
``resume``'s earlier records) is lenient about what older or newer versions wrote and strict about garbage:

* a missing key takes its default (``null``, ``0``, ``[]``, ``{}``; every token counter ``0``), as a record of an
  older version may lack keys added since (``agent``, ``models``, ``session_name``, ``workspace``, ``tags`` ...);
* an unknown key is ignored (dropped: the schemas forbid keys they do not name; the journal line keeps it);
* a value of the wrong type or range (a count that is not a non-negative integer, a cost that is not a finite
  non-negative number, ``tokens``/``tools`` that are not objects of counts, a ``name`` that is not a string ...)
  raises :class:`RecordError`: one line, ``FILE: KEY: message`` (built by :func:`orchestrator_pex.errors.located`),
  naming the first bad key (``instances[3].tokens.input``), exit status 1 (a :class:`~errors.RunDirError`;
  ``merge`` reports it as a usage error, exit 2). Never a traceback.

The results document has its classes here too: :class:`Totals` (``totals``, summed leniently from record objects)
and :class:`RunDocument` (the run's metadata in the order it was recorded, its totals, its records), written by
:func:`document_to_json`; and so does every event of the journal and the JSON logs (:class:`RunStarted`,
:class:`InstanceStarted`, :class:`InstanceRetry`, :class:`InstanceFinished`, :class:`WorkspaceBases`,
:class:`WorkspaceCreated`, :class:`WarningEvent`, :class:`ProgressEvent`, :class:`RunFinished`), written by
:func:`event_to_json` with the keys, in the order, the README's "Events" table lists, and read back by
:func:`event_from_json` as leniently as a record (a value of the wrong type: :class:`RecordError`,
``FILE: line N: KEY: message``; a kind this version does not know: None).

Memory: a record holds nothing but its fields (``__slots__``); the scheduler keeps a finished record as compact
JSON bytes (:func:`encode`), which is smaller still.
"""

from __future__ import annotations

import datetime
import math
from typing import (
    Annotated,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError

from orchestrator_pex import errors, strictjson, untrusted
from orchestrator_pex.accounting import fold_tools
from orchestrator_pex.vocabulary import FINAL_STATUSES, SCHEMA_VERSION, TOKEN_KEYS, TOKEN_TOTAL, InstanceStatus

MAX_MODELS = 256  #: at most this many names in a record's ``models`` (the agent reports them: untrusted)
#: the ``error`` of an instance whose orchestrator died while it ran
INTERRUPTED_ERROR = "interrupted: the orchestrator stopped while this instance ran (resume reruns it)"

# Field types the lenient reader checks (the hooks below), each annotated with what its values must be (type
# checkers see the plain type; constructing a record costs no wrapping call).
Count = Annotated[int, "a non-negative integer"]
OptCount = Annotated[Optional[int], "a non-negative integer or null"]
OptInt = Annotated[Optional[int], "an integer (an exit code may be negative) or null"]
Amount = Annotated[float, "a finite non-negative number"]
OptAmount = Annotated[Optional[float], "a finite non-negative number or null"]
OptText = Annotated[Optional[str], "a string or null"]
Text = Annotated[str, "a string"]
Texts = Tuple[str, ...]  #: a list of strings (a tuple in memory)
Counts = Dict[str, int]  #: an object whose values are non-negative integers
OptObject = Optional[Dict[str, Any]]  #: an object (not looked into) or null
Object = Annotated[Dict[str, Any], "an object"]  #: an object (not looked into)
Objects = Annotated[List[Dict[str, Any]], "a list of objects"]  #: a list of objects (not looked into)


@attrs.frozen
class Tokens:
    """The token counters of a record (and of ``totals``): the keys of :data:`vocabulary.TOKEN_KEYS`, then their
    sum ``total``."""

    input: Count = 0
    output: Count = 0
    cache_creation: Count = 0
    cache_read: Count = 0
    total: Count = 0

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> Tokens:
        """From the four counters of :data:`TOKEN_KEYS` (``total`` is their sum)."""
        a, b, c, d = [counts.get(k, 0) for k in TOKEN_KEYS]
        return cls(a, b, c, d, a + b + c + d)

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.input + other.input, self.output + other.output, self.cache_creation + other.cache_creation,
                      self.cache_read + other.cache_read, self.total + other.total)


@attrs.frozen
class InstanceRecord:
    """One instance's outcome: the README's "instance record" (field by field, in its order)."""

    name: Text
    agent: OptText = None
    status: Text = InstanceStatus.NOT_STARTED
    exit_code: OptInt = None
    started_at: OptText = None
    finished_at: OptText = None
    duration_s: OptAmount = None
    attempts: Count = 0
    tokens: Tokens = Tokens()
    cost_usd: Amount = 0.0
    cost_source: OptText = None
    reasoning_tokens: OptCount = None
    model: OptText = None
    models: Texts = ()
    tools: Counts = attrs.field(factory=dict)
    session_id: OptText = None
    session_name: OptText = None
    num_turns: OptCount = None
    result: OptText = None
    error: OptText = None
    api_error_status: OptInt = None
    agent_usage: OptObject = None
    skipped_lines: Count = 0
    stdout_log: OptText = None
    stderr_log: OptText = None
    workspace: OptObject = None
    tags: Texts = ()
    description: OptText = None

    # -- constructors ----------------------------------------------------------------------------------------------

    @classmethod
    def not_started(cls, name: str, error: Optional[str] = None, *, tags: Sequence[str] = (),
                    description: Optional[str] = None, agent: Optional[str] = None) -> InstanceRecord:
        """An instance never started (``error`` says why)."""
        return cls(name, agent=agent, error=error,
                   tags=tuple(tags), description=description)

    @classmethod
    def skipped(cls, name: str, error: str) -> InstanceRecord:
        """An instance never started because of what the instances it needs did (see graph.decide)."""
        return cls(name, status=InstanceStatus.SKIPPED, error=error)

    @classmethod
    def interrupted(cls, name: str, started: Mapping[str, Any]) -> InstanceRecord:
        """An instance the journal saw start (``started``: its ``instance_started`` event) and never finish: its
        orchestrator died. ``cancelled``, with the start time and attempt number the event gives."""
        return cls(name, status=InstanceStatus.CANCELLED, started_at=_stamp(started.get("at")),
                   attempts=_attempt(started), error=INTERRUPTED_ERROR)

    @classmethod
    def live(cls, name: str, status: str, started: Optional[Mapping[str, Any]] = None) -> InstanceRecord:
        """An instance of a run still going: ``running``/``retrying`` (``started``: its last ``instance_started``)
        or ``pending``."""
        if not started:
            return cls(name, status=status)
        return cls(name, status=status, started_at=_stamp(started.get("at")), attempts=_attempt(started))

    @classmethod
    def of_attempts(
        cls,
        name: str,
        status: str,
        attempts: Sequence[Any],
        *,
        stdout_log: Optional[str],
        stderr_log: Optional[str],
        error: Optional[str] = None,
        workspace: Optional[Dict[str, Any]] = None,
        agent: Optional[str] = None,
        session_name: Optional[str] = None,
        tags: Sequence[str] = (),
        description: Optional[str] = None,
    ) -> InstanceRecord:
        """The record of an instance that ran ``attempts`` (:class:`~orchestrator_pex.runtime.Attempt`, in order):
        every attempt's tokens and cost are summed (retries are never free); the rest is the last attempt's.

        ``workspace`` is the instance's git worktree (:func:`orchestrator_pex.workspace.Workspace.describe`), or
        None when it ran in a shared directory (or never got one)."""
        tokens = {k: 0 for k in TOKEN_KEYS}
        tools: Dict[str, int] = {}
        cost = 0.0
        sources = set()
        reasoning: Optional[int] = None
        models: List[str] = []
        for a in attempts:
            acct = a.acct
            for key, value in acct.tokens().items():
                tokens[key] += value
            part = getattr(acct, "reasoning", None)
            if part is not None:
                reasoning = (reasoning or 0) + part
            for model in getattr(acct, "models", None) or ([acct.model] if acct.model else []):
                if model not in models and len(models) < MAX_MODELS:  # untrusted: as bounded as tool names
                    models.append(model)
            for tool, count in acct.tools.items():
                tools[tool] = tools.get(tool, 0) + count
            if acct.total_tokens or acct.result_cost is not None:
                cost += acct.cost_usd
                sources.add(acct.cost_source)
        last = attempts[-1] if attempts else None
        acct = last.acct if last else None
        started = attempts[0].started_at if attempts else None
        finished = last.finished_at if last else None
        return cls(
            name=name,
            agent=agent,
            status=status,
            exit_code=last.exit_code if last else None,
            started_at=iso(started),
            finished_at=iso(finished),
            duration_s=round(finished - started, 3) if started and finished else None,
            attempts=len(attempts),
            tokens=Tokens.of(tokens),
            cost_usd=round(cost, 6),
            cost_source=weakest(sources),
            reasoning_tokens=reasoning,
            model=acct.model if acct else None,
            models=tuple(sorted(models)),
            tools=fold_tools(tools),
            session_id=acct.session_id if acct else None,
            session_name=session_name,
            num_turns=acct.num_turns if acct else None,
            result=acct.result_text if acct else None,
            error=error if error is not None else (last.error if last else None),
            api_error_status=acct.api_error_status if acct else None,
            agent_usage=getattr(acct, "final_usage", None) if acct else None,
            skipped_lines=sum(a.skipped_lines for a in attempts),
            stdout_log=stdout_log,
            stderr_log=stderr_log,
            workspace=workspace,
            tags=tuple(tags),
            description=description,
        )

    # -- records from records --------------------------------------------------------------------------------------

    def carry(self, earlier: InstanceRecord) -> InstanceRecord:
        """This record of an instance rerun by ``resume``, with what its ``earlier`` sessions spent added (never
        free): tokens, tools, cost and attempts summed, the weakest cost source, the earliest start."""
        tools = dict(earlier.tools)
        for tool, n in self.tools.items():
            tools[tool] = tools.get(tool, 0) + n
        parts = [r.reasoning_tokens for r in (self, earlier) if r.reasoning_tokens is not None]
        return attrs.evolve(
            self,
            tokens=self.tokens + earlier.tokens,
            tools=fold_tools(tools),
            cost_usd=round(self.cost_usd + earlier.cost_usd, 6),
            cost_source=weakest((self.cost_source, earlier.cost_source)),
            reasoning_tokens=sum(parts) if parts else None,
            attempts=self.attempts + earlier.attempts,
            started_at=earlier.started_at or self.started_at,
        )

    def with_spend_of(self, other: InstanceRecord, *, attempts: bool = False) -> InstanceRecord:
        """This record holding ``other``'s spend (tokens, cost and its source, tools, model; with ``attempts``
        its attempt count too)."""
        return attrs.evolve(self, tokens=other.tokens, cost_usd=other.cost_usd, cost_source=other.cost_source,
                            tools=other.tools, model=other.model,
                            attempts=other.attempts if attempts else self.attempts)

    def labelled(self, tags: Sequence[str], description: Optional[str]) -> InstanceRecord:
        """This record with the batch's ``tags`` and ``description`` for the instance."""
        return attrs.evolve(self, tags=tuple(tags), description=description)


@attrs.frozen
class Totals:
    """``totals`` of a results document (in its key order)."""

    instances: int
    by_status: Dict[str, int]  #: every final status (zero-filled, :data:`vocabulary.FINAL_STATUSES` order), then others
    tokens: Tokens
    cost_usd: float
    tools: Dict[str, int]

    @classmethod
    def of(cls, records: Iterable[Mapping[str, Any]]) -> Totals:
        """Instances counted by status, token counters, cost and tool calls summed over record JSON objects.
        Lenient, since ``merge`` totals documents it did not write: a value that is not a sane number (or a
        ``tokens``/``tools`` that is not an object) counts as 0."""
        keys = (*TOKEN_KEYS, TOKEN_TOTAL)
        tokens = dict.fromkeys(keys, 0)
        by_status: Dict[str, int] = dict.fromkeys(FINAL_STATUSES, 0)
        tools: Dict[str, int] = {}
        cost = 0.0
        count = 0
        for r in records:
            count += 1
            status = str(r.get("status"))
            by_status[status] = by_status.get(status, 0) + 1
            r_tokens = r.get("tokens")
            for k in keys:
                v = r_tokens.get(k, 0) if isinstance(r_tokens, dict) else 0
                if untrusted.number(v) is not None:
                    tokens[k] += v
            r_tools = r.get("tools")
            for tool, n in (r_tools if isinstance(r_tools, dict) else {}).items():
                if untrusted.number(n) is not None:
                    tools[tool] = tools.get(tool, 0) + n
            if untrusted.number(r.get("cost_usd")) is not None:
                cost += r["cost_usd"]
        return cls(count, by_status, Tokens(**tokens), round(cost, 6), fold_tools(tools))


#: the run-level keys every results document starts with (after ``schema_version``), in this order
RUN_KEYS = ("run_id", "batch", "started_at", "finished_at", "status")


@attrs.frozen
class RunDocument:
    """A results document: the run's metadata, its totals, its records.

    ``meta`` holds every run-level field (README: "The results document") in the order the run recorded them;
    :data:`RUN_KEYS` come first on write (null when the run did not record one), ``totals`` and ``instances`` are
    computed here (a ``totals``/``instances`` the metadata held, e.g. a journal's ``run_finished`` totals or its
    ``run_started`` count, keeps its place but takes the computed value)."""

    meta: Mapping[str, Any]
    totals: Totals
    instances: Sequence[Dict[str, Any]]  #: record JSON objects (:func:`to_json`), as runs keep them

    @classmethod
    def of(cls, meta: Mapping[str, Any], instances: Sequence[Dict[str, Any]]) -> RunDocument:
        return cls(meta, Totals.of(instances), instances)


def document_to_json(doc: RunDocument) -> Dict[str, Any]:
    """``doc`` as its JSON object (``schema_version`` first)."""
    out: Dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    out.update({k: doc.meta.get(k) for k in RUN_KEYS})
    out.update({k: v for k, v in doc.meta.items() if k not in out})
    out["totals"] = totals_to_json(doc.totals)
    out["instances"] = doc.instances
    return out


# -- journal events ------------------------------------------------------------------------------------------------
# Every event the orchestrator writes (README: "Events"; schemas/event.schema.json), each a frozen class written by
# :func:`event_to_json` as ``{"event": KIND, field: value, ...}`` in field order, and read back by
# :func:`event_from_json`.


@attrs.frozen
class RunStarted:
    """A session of the run started. ``meta`` holds every run-level field known at start, in the order written
    (``instances`` first: how many this session runs; then the run metadata, README "The results document"); the
    journal adds ``orchestrator_pid`` and ``host``. Read back, ``meta`` is the whole event but ``event`` and
    ``schema_version``, in the order written."""

    meta: Object

    @classmethod
    def of(cls, instances: int, run_meta: Mapping[str, Any]) -> RunStarted:
        return cls({"instances": instances, **run_meta})


@attrs.frozen
class InstanceStarted:
    """An attempt started: ``stdout_offset`` is where its output starts in the raw log (``resume`` re-reads it),
    ``agent`` whose reader re-reads it."""

    name: Text
    attempt: Count = 1
    at: OptText = None
    stdout_offset: OptCount = None
    agent: OptText = None


@attrs.frozen
class InstanceRetry:
    """An attempt ended in a transient API error; the next starts after ``delay_s``."""

    name: Text
    attempt: Count = 1
    api_error_status: OptInt = None
    delay_s: Amount = 0.0


@attrs.frozen
class InstanceFinished:
    """An instance's final record (its JSON object, :func:`to_json`, as the scheduler keeps it). Read back, the
    record is checked to be an object; :func:`record_from_json` structures it where it is used (``runs show``,
    ``resume``'s rebuilt document, recovery), so replaying a journal costs no record structuring."""

    name: Text
    record: Object


@attrs.frozen
class WorkspaceBases:
    """The (repository, base ref) pairs of worktree instances resolved at the start of a session: ``bases`` is a
    list of ``{"repo", "ref", "commit"}`` (read back as written; :class:`orchestrator_pex.workspace.Manager` keeps
    only well-formed entries)."""

    bases: Objects


@attrs.frozen
class WorkspaceCreated:
    """An instance's git worktree exists (journaled before its first attempt)."""

    name: Text
    repo: Text
    path: Text
    branch: Text
    base: Text


@attrs.frozen
class WarningEvent:
    """A warning (``event: "warning"``)."""

    message: Text


@attrs.frozen
class ProgressEvent:
    """The periodic ``progress`` event (``--progress json``, ``runs watch``; never journaled)."""

    done: Count
    total: Count
    by_state: Counts
    running: Count
    elapsed_s: Amount
    eta_s: OptAmount
    tokens: Count
    cost_usd: Amount
    budget: Object


@attrs.frozen
class RunFinished:
    """A session of the run ended. ``exit_status`` (absent when ``resume`` closed a run with nothing to rerun),
    ``note`` and ``internal_error`` are written only when set."""

    status: Text
    exit_status: OptInt = None
    finished_at: OptText = None
    totals: Object = attrs.field(factory=dict)
    note: OptText = None
    internal_error: OptObject = None


#: an event of the journal or of the JSON logs
Event = Union[RunStarted, InstanceStarted, InstanceRetry, InstanceFinished, WorkspaceBases, WorkspaceCreated,
              WarningEvent, ProgressEvent, RunFinished]
EVENT_KINDS: Dict[type, str] = {
    RunStarted: "run_started", InstanceStarted: "instance_started", InstanceRetry: "instance_retry",
    InstanceFinished: "instance_finished", WorkspaceBases: "workspace_bases", WorkspaceCreated: "workspace_created",
    WarningEvent: "warning", ProgressEvent: "progress", RunFinished: "run_finished",
}
EVENT_CLASSES: Dict[str, type] = {kind: cls for cls, kind in EVENT_KINDS.items()}
_OMITTED_WHEN_NONE = ("exit_status", "note", "internal_error")  # of run_finished


def event_to_json(event: Event) -> Dict[str, Any]:
    """``event`` (one of :data:`EVENT_KINDS`) as its journal/JSON-log object: ``event`` first, then its fields
    (``run_started``: its ``meta``, in order)."""
    out: Dict[str, Any] = {"event": EVENT_KINDS[type(event)]}
    if isinstance(event, RunStarted):
        out.update(event.meta)
        return out
    for field in attrs.fields(type(event)):
        value = getattr(event, field.name)
        if value is None and field.name in _OMITTED_WHEN_NONE:
            continue
        out[field.name] = value
    return out


def weakest(sources: Iterable[Optional[str]]) -> Optional[str]:
    """The cost source of several attempts or sessions: the weakest one (``estimate`` < ``stream`` < ``result``;
    None when none is given)."""
    present = set(sources) - {None}
    for source in ("estimate", "stream", "result"):
        if source in present:
            return source
    return None


def iso(ts: Optional[float]) -> Optional[str]:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds and ``Z`` (every timestamp the documents hold);
    None for None or 0 (never happened)."""
    if not ts:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def _stamp(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _attempt(started: Mapping[str, Any]) -> Count:
    n = started.get("attempt")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


# -- the edges -----------------------------------------------------------------------------------------------------


class RecordError(errors.RunDirError):
    """A record read back (journal, ``results.json``, ``merge`` input) holds a value of the wrong type: one line
    ``FILE: KEY: message`` (exit 1, like any unreadable run directory)."""


def _fail(expected: str, value: Any) -> ValueError:
    return ValueError(f"expected {expected}, got {errors.describe(value)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _count(v: Any, _: Any) -> int:
    if _is_int(v) and v >= 0:
        return int(v)
    raise _fail("a non-negative integer", v)


def _opt_count(v: Any, t: Any) -> Optional[int]:
    return None if v is None else _count(v, t)


def _opt_int(v: Any, _: Any) -> Optional[int]:
    if v is None:
        return None
    if _is_int(v):
        return int(v)
    raise _fail("an integer or null", v)


def _amount(v: Any, _: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return v
    raise _fail("a finite non-negative number", v)


def _opt_amount(v: Any, t: Any) -> Optional[float]:
    return None if v is None else _amount(v, t)


def _text(v: Any, _: Any) -> str:
    if isinstance(v, str):
        return v
    raise _fail("a string", v)


def _opt_text(v: Any, _: Any) -> Optional[str]:
    if v is None or isinstance(v, str):
        return v
    raise _fail("a string or null", v)


def _texts(v: Any, _: Any) -> Tuple[str, ...]:
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise _fail("a list of strings", v)


def _counts(v: Any, _: Any) -> Dict[str, int]:
    if not isinstance(v, dict):
        raise _fail("an object of counts", v)
    for key, n in v.items():
        if not (_is_int(n) and n >= 0):
            raise ValueError(f"{key}: expected a non-negative integer, got {errors.describe(n)}")
    return dict(v)


def _object(v: Any, _: Any) -> Optional[Dict[str, Any]]:
    if v is None or isinstance(v, dict):
        return v
    raise _fail("an object or null", v)


def _strict_object(v: Any, _: Any) -> Dict[str, Any]:
    if isinstance(v, dict):
        return v
    raise _fail("an object", v)


def _objects(v: Any, _: Any) -> List[Dict[str, Any]]:
    if isinstance(v, list) and all(isinstance(x, dict) for x in v):
        return v
    raise _fail("a list of objects", v)


def _is(wanted: Any) -> Callable[[Any], bool]:
    """A cattrs predicate matching exactly the annotated type ``wanted``."""
    return lambda t: bool(t == wanted)


def _attrs_hook(converter: cattrs.Converter, cls: type) -> Callable[[Any, Any], Any]:
    inner: Callable[[Any, Any], Any] = cattrs.gen.make_dict_structure_fn(cls, converter)

    def hook(v: Any, _: Any) -> Any:
        if not isinstance(v, dict):
            raise _fail("an object", v)
        return inner(v, cls)

    return hook


def _copy_object(v: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    return None if v is None else dict(v)


class _Edges:
    """The cattrs converter and the generated writers, built on first use: generating them costs tens of
    milliseconds, which commands that never read or write a record (``--version``, ``run --dry-run``) do not pay."""

    def __init__(self) -> None:
        converter = cattrs.Converter(detailed_validation=True)  # unknown keys are ignored (see the module docstring)
        hooks: Dict[Any, Callable[[Any, Any], Any]] = {
            Count: _count, OptCount: _opt_count, OptInt: _opt_int, Amount: _amount, OptAmount: _opt_amount,
            Text: _text, OptText: _opt_text, Texts: _texts, Counts: _counts, OptObject: _object,
            Object: _strict_object, Objects: _objects,
        }
        for wanted, hook in hooks.items():
            converter.register_structure_hook_func(_is(wanted), hook)
        converter.register_structure_hook(Tokens, _attrs_hook(converter, Tokens))
        # after Tokens: the record's hook uses it
        converter.register_structure_hook(InstanceRecord, _attrs_hook(converter, InstanceRecord))
        for cls in EVENT_KINDS:
            if cls is not RunStarted:  # its meta is the whole event (event_from_json)
                converter.register_structure_hook(cls, _attrs_hook(converter, cls))
        # Writing: cattrs' generated function (attribute order, no per-field type dispatch beyond what is needed).
        converter.register_unstructure_hook_func(_is(Texts), list)
        converter.register_unstructure_hook_func(_is(Counts), dict)
        converter.register_unstructure_hook_func(_is(OptObject), _copy_object)
        self.converter = converter
        self.to_json: Callable[[InstanceRecord], Dict[str, Any]] = cattrs.gen.make_dict_unstructure_fn(
            InstanceRecord, converter)
        self.totals_to_json: Callable[[Totals], Dict[str, Any]] = cattrs.gen.make_dict_unstructure_fn(
            Totals, converter)


_built: Optional[_Edges] = None


def _edges() -> _Edges:
    global _built
    if _built is None:
        _built = _Edges()
    return _built


def to_json(record: InstanceRecord) -> Dict[str, Any]:
    """``record`` as its JSON object (a fresh dict: the caller may keep or change it)."""
    return (_built or _edges()).to_json(record)


def totals_to_json(totals: Totals) -> Dict[str, Any]:
    """``totals`` as its JSON object."""
    return (_built or _edges()).totals_to_json(totals)


def encode(record: InstanceRecord) -> bytes:
    """``record`` as compact strict JSON bytes (how the scheduler keeps a finished record)."""
    return strictjson.dumps(to_json(record), separators=(",", ":")).encode()


def record_from_json(obj: Any, file: str, key: str = "", *, name: Optional[str] = None) -> InstanceRecord:
    """The record a JSON object holds (read leniently, see the module docstring); ``file`` and ``key`` say where it
    was read (``results.json``, ``instances[3]``) for the one-line :class:`RecordError`. ``name`` fills in a missing
    ``name`` (a journal event names its instance outside the record)."""
    if isinstance(obj, dict) and name is not None and "name" not in obj:
        obj = {**obj, "name": name}
    try:
        record: InstanceRecord = _edges().converter.structure(obj, InstanceRecord)
    except Exception as exc:  # noqa: BLE001 - every structuring failure becomes the one-line error
        where, message = _first_problem(exc, key)
        raise RecordError(file, where, message) from None
    return record


def _first_problem(exc: BaseException, path: str) -> Tuple[str, str]:
    """``(key path, message)`` of the first leaf problem inside a cattrs validation error."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            field = getattr(note, "name", None)
            return _first_problem(sub, f"{path}.{field}".lstrip(".") if field is not None
                                  else f"{path}[{getattr(note, 'index', '?')}]")
        for sub in without:
            return _first_problem(sub, path)
    if isinstance(exc, KeyError):
        return path, "required key is missing"
    message = str(exc)
    if ": expected" in message and not message.startswith("expected"):  # a key inside tokens/tools
        inner, message = message.split(": ", 1)
        path = f"{path}.{inner}".lstrip(".")
    return path, message


def typed_events(items: Iterable[Any], file: str, problems: Optional[List[str]] = None) -> Iterator[Event]:
    """``items`` as typed events: events pass through, JSON objects are structured by :func:`event_from_json` (their
    position in ``items`` standing for the line); an object of an unknown kind is left out, a malformed one left out
    and its one line (``...; event skipped``) appended to ``problems``."""
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            if type(item) in EVENT_KINDS:
                yield item
            continue
        try:
            event = event_from_json(item, file, index + 1)
        except RecordError as exc:
            if problems is not None:
                problems.append(f"{exc}; event skipped")
            continue
        if event is not None:
            yield event


_NOT_META = ("event", "schema_version")  # of run_started: every line has them; the results document adds its own


def event_from_json(obj: Any, file: str, line: int) -> Optional[Event]:
    """The event a JSON object holds (one line of a journal: ``file``, line number ``line``), read leniently like a
    record (missing fields take their defaults, unknown keys are dropped, ``schema_version`` too); None for an
    object that is not an event of a kind this version knows (readers skip those: a newer version's kinds). A field
    of the wrong type raises :class:`RecordError`, one line naming it: ``FILE: line 7: attempt: expected ...``.
    ``run_started`` keeps every key but ``event`` and ``schema_version`` in its ``meta``, in order (unchecked: the
    run metadata is read where it is used, as before)."""
    if not isinstance(obj, dict):
        return None
    kind = obj.get("event")
    cls = EVENT_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None
    if cls is RunStarted:
        return RunStarted({k: v for k, v in obj.items() if k not in _NOT_META})
    try:
        event: Event = _edges().converter.structure(obj, cls)
    except Exception as exc:  # noqa: BLE001 - every structuring failure becomes the one-line error
        where, message = _first_problem(exc, "")
        raise RecordError(file, f"line {line}: {where}" if where else f"line {line}", message) from None
    return event
