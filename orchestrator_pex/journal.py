"""The run journal: an append-only, fsynced JSON-lines file that ``results.json`` can always be rebuilt from.

File: ``<run_dir>/journal.jsonl``. One JSON object per line, each with an ``"event"`` key (``run_started``,
``instance_started``, ``instance_retry``, ``instance_finished``, ``workspace_bases``, ``workspace_created``,
``warning``, ``run_finished``: the classes of :mod:`orchestrator_pex.records`, written through
:func:`~orchestrator_pex.records.event_to_json`; readers ignore kinds they do not know). Lines are only ever
appended; a resumed run appends to the same file.

Durability: :meth:`Journal.emit` (trio) and :meth:`Journal.append_sync` (plain code) return only once the event's
line has been written *and* ``fsync``-ed. ``emit`` does the fsync in a worker thread with *group commit*: events that
arrive while an fsync is in flight are written and fsynced together by the next one, so hundreds of concurrent
instances do not queue behind one fsync each; and an emitter that finds no fsync in flight first yields one
scheduling round, so events emitted in the same tick of the event loop share one fsync. If a write fails (disk
full, I/O error) the file is truncated back to its last good size, so a failed append never leaves a torn line in
front of later ones, and :class:`RunDirError` is raised to the caller.

Every ``run_started`` written is annotated with the writer's ``orchestrator_pid`` and ``host`` (so ``runs list`` can
tell a live run from an interrupted one). With ``$ORCHESTRATOR_PEX_JOURNAL_STATS`` set, closing a journal appends its
event/fsync counts to that file (benchmarks).

Reading: :func:`read_events` recovers every valid line as a typed event (:func:`records.event_from_json`: missing
fields take their defaults, unknown keys are dropped, kinds this version does not know are skipped silently);
:func:`read_journal` recovers the same lines as JSON objects (every kind kept; the HTML report and the worktree
manager read those). A torn last line (the process died mid-write), undecodable or non-JSON lines, exact
duplicates of state events (run/instance started/finished) and, for :func:`read_events`, an event of a known kind
holding a value of the wrong type (``FILE: line N: KEY: expected ...; event skipped``) are reported as *problems*,
one line each, never raised; only a journal with no usable ``run_started`` event (or one that cannot be read at
all) raises :class:`RunDirError`. :func:`load_run` (typed) also trusts a success recorded in ``results.json`` that
the journal lost. :func:`replay_state` folds typed events (JSON objects given to it are structured first, a
malformed one skipped into :attr:`RunState.problems`) and :func:`replay` into ``(run_meta, records_by_name)`` where
a later record replaces an earlier one for the same instance, except that a recorded success is never replaced.
Records stay JSON objects in the fold; :func:`records.record_from_json` structures them where they are used
(``runs show``, the rebuilt document, recovery), so replaying a journal structures no record.
"""

from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

from orchestrator_pex import strictjson
from orchestrator_pex.errors import RunDirError
from orchestrator_pex.records import (
    Event,
    InstanceFinished,
    InstanceRetry,
    InstanceStarted,
    RecordError,
    RunFinished,
    RunStarted,
    event_from_json,
    typed_events,
)
from orchestrator_pex.vocabulary import FAILED_STATUSES, SCHEMA_VERSION, InstanceStatus

if TYPE_CHECKING:  # trio is imported where it is used: reading a journal needs no event loop
    import trio

JOURNAL_NAME = "journal.jsonl"


def journal_path(run_dir: str) -> str:
    return os.path.join(run_dir, JOURNAL_NAME)


def encode(event: Dict[str, Any]) -> bytes:
    """One journal line: compact strict JSON (non-finite floats as null), ASCII only (a line is never split inside
    a multi-byte character), newline."""
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise ValueError("a journal event is a dict with a string 'event' key")
    if "schema_version" not in event:
        event = {"schema_version": SCHEMA_VERSION, **event}
    return strictjson.dumps(event, separators=(",", ":"), ensure_ascii=True, default=str).encode("ascii") + b"\n"


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the file's own fsync still holds
    finally:
        os.close(fd)


class Journal:
    """An open journal file. Create with :meth:`open`; usable as a scheduler sink (``await journal.emit(event)``)."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: Optional[int] = fd
        self._io_lock = threading.Lock()  # one writer at a time: worker thread or append_sync
        self._size = os.fstat(fd).st_size
        self._needs_separator = self._size > 0 and not _ends_with_newline(fd, self._size)
        # group commit state (touched only from the trio thread)
        self._pending: List[bytes] = []
        self._next_seq = 1  # sequence number of the next event emitted
        self._durable_seq = 0  # every event with seq <= this is on disk
        self._flushing = False
        self._flush_done: Optional[trio.Event] = None  # created lazily inside trio
        self._failure: Optional[BaseException] = None
        #: added to every run_started event written (keys the event already has win): lets ``runs list`` tell a
        #: live run from an interrupted one
        self.annotations: Dict[str, Any] = {"orchestrator_pid": os.getpid(), "host": _hostname()}
        #: number of fsyncs done and events written (for benchmarks)
        self.fsyncs = 0
        self.events_written = 0
        self.fsync_seconds = 0.0

    @classmethod
    def open(cls, run_dir: str) -> Journal:
        """Open (creating if needed) ``run_dir/journal.jsonl`` for appending."""
        path = journal_path(run_dir)
        try:
            existed = os.path.exists(path)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise RunDirError(path, "", f"cannot open the run journal: {exc.strerror or exc}") from None
        if not existed:  # make the new file's directory entry durable, and the run directory's own entry
            _fsync_dir(run_dir)
            _fsync_dir(os.path.dirname(os.path.abspath(run_dir)))
        return cls(path, fd)

    # -- writing -------------------------------------------------------------------------------------------------

    def _write_and_sync(self, data: bytes, count: int) -> None:
        """Append ``data`` and fsync; on failure truncate back to the last good size and raise RunDirError."""
        import time

        with self._io_lock:
            if self._fd is None:
                raise RunDirError(self.path, "", "journal is closed")
            if self._needs_separator:
                data = b"\n" + data  # a previous torn line must not swallow this one
            start = self._size
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                t0 = time.perf_counter()
                os.fsync(self._fd)
                self.fsync_seconds += time.perf_counter() - t0
            except OSError as exc:
                try:
                    os.ftruncate(self._fd, start)
                    self._needs_separator = False if start == 0 else self._needs_separator
                except OSError:
                    self._needs_separator = True
                raise RunDirError(self.path, "", f"cannot write the run journal: {exc.strerror or exc}; results so far "
                                  "are kept") from None
            self._size = start + len(data)
            self._needs_separator = False
            self.fsyncs += 1
            self.events_written += count

    def _annotate(self, event: Dict[str, Any]) -> Dict[str, Any]:
        if event.get("event") == "run_started" and self.annotations:
            return {**event, **{k: v for k, v in self.annotations.items() if k not in event}}
        return event

    def append_sync(self, event: Dict[str, Any]) -> None:
        """Write and fsync one event from ordinary (non-trio) code; blocks the calling thread."""
        self._write_and_sync(encode(self._annotate(event)), 1)

    async def emit(self, event: Dict[str, Any]) -> None:
        """Sink API: return once ``event`` is durable. Concurrent callers share fsyncs (group commit)."""
        import trio

        line = encode(self._annotate(event))
        if self._flush_done is None:
            self._flush_done = trio.Event()
        self._pending.append(line)
        my_seq = self._next_seq
        self._next_seq += 1
        lingered = False
        while self._durable_seq < my_seq:
            if self._flushing:
                await self._flush_done.wait()
                if self._failure is not None and self._durable_seq < my_seq:
                    raise self._failure
                continue
            if not lingered:
                # One scheduling round before flushing: emitters that are runnable now (instances that ended or
                # started in the same tick) add their lines to this fsync instead of each paying for one.
                # Shielded: it adds no cancellation point.
                lingered = True
                await trio.lowlevel.cancel_shielded_checkpoint()
                continue
            batch, self._pending = self._pending, []
            upto = self._next_seq - 1
            self._flushing = True
            ok = False
            try:
                await trio.to_thread.run_sync(self._write_and_sync, b"".join(batch), len(batch))
                ok = True
            except RunDirError as exc:
                self._failure = exc
                raise
            finally:
                if ok:
                    self._durable_seq = upto
                    self._failure = None
                self._flushing = False
                done, self._flush_done = self._flush_done, trio.Event()
                done.set()

    def close(self) -> None:
        with self._io_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self._write_stats()

    def _write_stats(self) -> None:
        """For benchmarks: with ``$ORCHESTRATOR_PEX_JOURNAL_STATS`` set to a file, append this journal's figures."""
        target = os.environ.get("ORCHESTRATOR_PEX_JOURNAL_STATS")
        if not target:
            return
        line = strictjson.dumps({"journal": self.path, "events": self.events_written, "fsyncs": self.fsyncs,
                           "fsync_seconds": round(self.fsync_seconds, 6)})
        try:
            with open(target, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError:
            pass

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hostname() -> str:
    import socket

    try:
        return socket.gethostname()
    except OSError:
        return ""


def _ends_with_newline(fd: int, size: int) -> bool:
    try:
        return os.pread(fd, 1, size - 1) == b"\n"
    except OSError:
        return True


# -- reading -------------------------------------------------------------------------------------------------------


_STATE_EVENTS = frozenset({"run_started", "instance_started", "instance_finished", "run_finished"})


def _objects(data: bytes, path: str, problems: List[str]) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """``(line number, JSON object)`` of every usable line of journal bytes; damaged lines go to ``problems``."""
    seen = set()
    lines = data.split(b"\n")
    last = len(lines) - 1
    for index, raw in enumerate(lines):
        lineno = index + 1
        text = raw.strip()
        if not text:
            continue
        try:
            event = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            if index == last:
                problems.append(f"{path}: line {lineno}: torn last line ignored (the writer stopped mid-line)")
            else:
                problems.append(f"{path}: line {lineno}: not a JSON event, skipped")
            continue
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            problems.append(f"{path}: line {lineno}: not a journal event, skipped")
            continue
        if event["event"] in _STATE_EVENTS:  # other kinds (warnings...) may legitimately repeat
            if text in seen:
                problems.append(f"{path}: line {lineno}: duplicate of an earlier line, skipped")
                continue
            seen.add(text)
        yield lineno, event


def parse_journal_bytes(data: bytes, path: str = JOURNAL_NAME) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Events recovered from journal bytes as JSON objects, and a list of human-readable problems (empty for a clean
    journal). Kinds this version does not know are kept (the readers of objects ignore them)."""
    problems: List[str] = []
    return [event for _, event in _objects(data, path, problems)], problems


def parse_events(data: bytes, path: str = JOURNAL_NAME) -> Tuple[List[Event], List[str]]:
    """Events recovered from journal bytes as typed events (:func:`records.event_from_json`), and the problems: as
    :func:`parse_journal_bytes`, and also an event of a known kind holding a value of the wrong type is skipped and
    reported (``FILE: line N: KEY: expected ..., skipped``). An event of a kind this version does not know (a newer
    version wrote it) is skipped silently."""
    problems: List[str] = []
    events: List[Event] = []
    for lineno, obj in _objects(data, path, problems):
        try:
            event = event_from_json(obj, path, lineno)
        except RecordError as exc:
            problems.append(f"{exc}; event skipped")
            continue
        if event is not None:
            events.append(event)
    return events, problems


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise RunDirError(path, "", "no run journal here (is this a run directory?)") from None
    except OSError as exc:
        raise RunDirError(path, "", f"cannot read the run journal: {exc.strerror or exc}") from None


def _no_run_started(path: str, problems: List[str]) -> RunDirError:
    detail = f" ({len(problems)} damaged line(s))" if problems else ""
    return RunDirError(path, "", f"the journal holds no readable run_started event{detail}; cannot recover this run")


def read_events(path: str) -> Tuple[List[Event], List[str]]:
    """Read a journal file as typed events (:func:`parse_events`): ``(events, problems)``. Raises RunDirError if it
    is unreadable or holds no run_started."""
    events, problems = parse_events(_read(path), path)
    if not any(isinstance(e, RunStarted) for e in events):
        raise _no_run_started(path, problems)
    return events, problems


def read_journal(path: str) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Read a journal file as JSON objects (:func:`parse_journal_bytes`; the live view, the report and worktrees read
    these): ``(events, problems)``. Raises RunDirError if it is unreadable or holds no run_started."""
    events, problems = parse_journal_bytes(_read(path), path)
    if not any(e.get("event") == "run_started" for e in events):
        raise _no_run_started(path, problems)
    return events, problems


class RunState:
    """Everything replaying a journal tells: run metadata, final records, and instances started but not finished."""

    def __init__(self) -> None:
        self.run_meta: Dict[str, Any] = {}
        self.records: Dict[str, Dict[str, Any]] = {}  #: name -> its record's JSON object (records.record_from_json)
        self.in_flight: Dict[str, InstanceStarted] = {}  #: name -> its last instance_started, no finish since
        self.starts: Dict[str, int] = {}  #: name -> how many instance_started events
        self.retrying: Set[str] = set()  #: in flight, waiting out a retry back-off (instance_retry since the start)
        #: name -> every instance_started event since its last instance_finished (attempts that never recorded an
        #: end, in journal order; see :mod:`orchestrator_pex.recovery`)
        self.unfinished: Dict[str, List[InstanceStarted]] = {}
        self.sessions = 0  #: run_started events (1 + number of resumes)
        self.finished = False  #: the last session ended with run_finished
        #: events given as JSON objects that were skipped (a value of the wrong type), one line each
        self.problems: List[str] = []

    @property
    def succeeded(self) -> List[str]:
        return sorted(n for n, r in self.records.items() if r.get("status") == InstanceStatus.SUCCEEDED)

    def to_rerun(self, names: Iterable[str], rerun_failed: bool = False) -> List[str]:
        """Which of ``names`` a resume starts again (order kept). Never one recorded as succeeded."""
        out = []
        for name in names:
            record = self.records.get(name)
            status = record.get("status") if record else None
            if status == InstanceStatus.SUCCEEDED:
                continue
            if record is None or name in self.in_flight:
                out.append(name)  # never started, or started and never finished
            elif status in FAILED_STATUSES and not rerun_failed:
                continue
            else:
                out.append(name)  # interrupted statuses, and any status this version does not know
        return out


def replay_state(events: Iterable[Union[Event, Dict[str, Any]]], path: str = JOURNAL_NAME) -> RunState:
    """Fold journal events into a :class:`RunState` (see :func:`replay` for the rules). Events are typed
    (:func:`parse_events`); one given as a JSON object is structured first (:func:`records.event_from_json`, its
    position in ``events`` standing for its line): an unknown kind is ignored, a malformed one skipped and reported
    in :attr:`RunState.problems`."""
    state = RunState()
    for event in typed_events(events, path, state.problems):
        if isinstance(event, InstanceStarted):
            name = event.name
            state.in_flight[name] = event
            state.starts[name] = state.starts.get(name, 0) + 1
            state.retrying.discard(name)
            state.unfinished.setdefault(name, []).append(event)
        elif isinstance(event, InstanceFinished):
            record = event.record
            name = event.name
            state.in_flight.pop(name, None)
            state.retrying.discard(name)
            state.unfinished.pop(name, None)
            previous = state.records.get(name)
            if previous is not None and previous.get("status") == InstanceStatus.SUCCEEDED:
                continue  # a recorded success is never overridden
            if "name" not in record:
                record = {**record, "name": name}
            state.records[name] = record
        elif isinstance(event, InstanceRetry):
            if event.name in state.in_flight:
                state.retrying.add(event.name)
        elif isinstance(event, RunStarted):
            meta = event.meta
            state.sessions += 1
            state.finished = False
            if not state.run_meta:
                state.run_meta = dict(meta)
            else:
                state.run_meta.setdefault("resumed_at", []).append(meta.get("started_at"))
                for key in ("orchestrator_pid", "host"):  # who is writing now (runs list: running or not)
                    if key in meta:
                        state.run_meta[key] = meta[key]
                state.run_meta.pop("finished_at", None)
                state.run_meta.pop("status", None)
        elif isinstance(event, RunFinished):
            state.finished = True
            state.run_meta["status"] = event.status
            if event.finished_at is not None:
                state.run_meta["finished_at"] = event.finished_at
            if event.totals:
                state.run_meta["totals"] = event.totals
    return state


def replay(events: Iterable[Dict[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """``(run_meta, records_by_name)`` from journal events.

    ``run_meta`` is the first ``run_started`` event (without the ``event`` key), updated by the last ``run_finished``
    (``status``, ``finished_at``, ``totals``) and listing later sessions' start times under ``resumed_at``. For each
    instance the last ``instance_finished`` record wins, except that once a record says ``succeeded`` no later record
    replaces it.
    """
    state = replay_state(events)
    return state.run_meta, state.records


def load_run(run_dir: str) -> Tuple[RunState, List[str]]:
    """Replay ``run_dir``'s journal; also trust successes recorded in ``results.json`` the journal may have lost.

    Returns ``(state, problems)``; raises RunDirError when the journal cannot be recovered at all.
    """
    events, problems = read_events(journal_path(run_dir))
    state = replay_state(events)
    problems.extend(state.problems)
    results_path = os.path.join(run_dir, "results.json")
    try:
        with open(results_path, "rb") as f:
            document = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("instances"), list):
        for record in document["instances"]:
            if not isinstance(record, dict) or record.get("status") != InstanceStatus.SUCCEEDED:
                continue
            name = record.get("name")
            if isinstance(name, str) and state.records.get(name, {}).get("status") != InstanceStatus.SUCCEEDED:
                state.records[name] = dict(record)
                state.in_flight.pop(name, None)
                state.unfinished.pop(name, None)
                problems.append(f"{results_path}: success of {name!r} missing from the journal; kept from results.json")
    return state, problems
