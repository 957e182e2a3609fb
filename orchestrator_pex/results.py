"""Results: the per-instance record and the results document, written atomically.

The document is the contract for scripts (``run --json`` prints exactly it). It is built only from instance
records (:mod:`orchestrator_pex.records` defines their shape; here they are its JSON objects), so the same function
rebuilds it from the run journal after a crash.

Guarantees: the document is strict JSON (:mod:`~orchestrator_pex.strictjson`: no ``NaN``/``Infinity``, ever); every
number in a record comes from validated accounting (finite, non-negative); ``tools`` maps at most
:data:`~orchestrator_pex.accounting.MAX_TOOL_NAMES` names per record and per document, further names folded into
:data:`~orchestrator_pex.accounting.OTHER_TOOLS`. ``cost_source`` of a record (and across ``resume`` sessions) is
the weakest source among its attempts: ``"estimate"`` if any attempt's cost was estimated without a usable result
cost, else ``"stream"`` if any result reported less than its streamed usage, else ``"result"``; ``null`` when
nothing was spent.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import secrets
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, cast

from orchestrator_pex import atomic_file, strictjson, vocabulary
from orchestrator_pex.records import (
    InstanceRecord,
    RunDocument,
    Totals,
    document_to_json,
    to_json,
    totals_to_json,
)
from orchestrator_pex.records import (
    iso as iso,  # re-exported: the one timestamp format lives in records
)
from orchestrator_pex.vocabulary import SCHEMA_VERSION, TOKEN_KEYS, TOKEN_TOTAL  # noqa: F401  (re-exported, as before)

#: the final instance statuses, in ``totals.by_status`` order (defined in :mod:`vocabulary`).
STATUSES = vocabulary.FINAL_STATUSES
ENV_RESULTS_DIR = "ORCHESTRATOR_PEX_RESULTS_DIR"


_PLAIN_STEM = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")  # always fullmatch


def log_stem(name: str) -> str:
    """The file name stem of an instance's logs: safe and collision-free, also on case-insensitive filesystems.

    A name of lower-case ASCII letters, digits, ".", "_" and "-" (starting with a letter or digit) is its own stem.
    Any other name becomes ``SLUG~HASH``: SLUG is the name lower-cased with every run of other characters replaced
    by "-" (at most 40 characters, may be empty), HASH the first 12 hex digits of the SHA-256 of the exact name
    (UTF-8). "~" never occurs in a plain stem and both parts are lower case, so distinct names never share a stem
    (up to a 48-bit hash collision).
    """
    if _PLAIN_STEM.fullmatch(name):
        return name
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")[:40]
    return f"{slug}~{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def default_results_dir() -> str:
    """``$ORCHESTRATOR_PEX_RESULTS_DIR``, else ``./orchestrator-runs`` under the current directory."""
    return os.environ.get(ENV_RESULTS_DIR) or os.path.join(os.getcwd(), "orchestrator-runs")


def epoch(stamp: Any) -> Optional[float]:
    """Seconds since the epoch of an ISO 8601 timestamp (the inverse of :func:`iso`; ``Z`` or an offset, a naive one
    read as UTC), or None for anything else (not a string, not a timestamp)."""
    if not isinstance(stamp, str):
        return None
    try:
        value = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


def new_run_id(batch_path: str, now: float) -> str:
    stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem = os.path.splitext(os.path.basename(batch_path))[0][:40] or "batch"
    return f"{stamp}-{stem}-{secrets.token_hex(2)}"


def not_started(name: str, error: Optional[str] = None, *, tags: Sequence[str] = (),
                description: Optional[str] = None, agent: Optional[str] = None) -> Dict[str, Any]:
    """The record of an instance never started (:meth:`records.InstanceRecord.not_started`, as JSON)."""
    return to_json(InstanceRecord.not_started(name, error, tags=tags, description=description, agent=agent))


def skipped(name: str, error: str) -> Dict[str, Any]:
    """The record of an instance never started because of what the instances it needs did (see graph.decide)."""
    return to_json(InstanceRecord.skipped(name, error))


def instance_record(name: str, status: str, attempts: Sequence[Any], **facts: Any) -> Dict[str, Any]:
    """One entry of ``instances`` (:meth:`records.InstanceRecord.of_attempts`, as JSON): every attempt's tokens and
    cost are summed (retries are never free)."""
    return to_json(InstanceRecord.of_attempts(name, status, attempts, **facts))


def totals(records: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """``totals`` of a results document (:meth:`records.Totals.of`, as JSON): lenient, since ``merge`` totals
    documents it did not write (a value that is not a sane number counts as 0)."""
    totals: Dict[str, Any] = totals_to_json(Totals.of(records))
    return totals


def run_status(records: Sequence[Dict[str, Any]], interrupted: bool = False, budget_stopped: bool = False) -> str:
    """See :func:`vocabulary.run_status`."""
    return vocabulary.run_status(records, interrupted=interrupted, budget_stopped=budget_stopped)


def build_document(run_meta: Dict[str, Any], records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The results document (:class:`records.RunDocument`, as JSON): ``run_meta`` (run_id, batch, started_at,
    finished_at, status, ...), totals, instances."""
    return document_to_json(RunDocument.of(run_meta, records))


class LazyRecords:
    """The ``instances`` of a results document produced on demand: each iteration calls ``produce`` afresh and
    turns each item into its JSON object with ``to_json``, one at a time, so the whole list is never held.
    :func:`write_document` and :func:`dump_document` write a document holding one record by record."""

    __slots__ = ("_produce", "_to_json", "_count")

    def __init__(self, produce: Callable[[], Iterable[Any]], count: int,
                 to_json: Callable[[Any], Dict[str, Any]] = lambda r: r) -> None:
        self._produce, self._to_json, self._count = produce, to_json, count

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        to_json = self._to_json
        for item in self._produce():
            yield to_json(item)

    def __len__(self) -> int:
        return self._count


def lazy_document(run_meta: Dict[str, Any], records: LazyRecords) -> Dict[str, Any]:
    """:func:`build_document` for records produced on demand: ``totals`` in one pass over them, ``instances`` the
    :class:`LazyRecords` itself (write it with :func:`write_document` / :func:`dump_document`, not ``json``)."""
    instances = cast(Sequence[Dict[str, Any]], records)  # iterated, never indexed: see dump_document
    return document_to_json(RunDocument(run_meta, Totals.of(records), instances))


def dump_document(doc: Dict[str, Any], f: IO[str]) -> None:
    """Write ``doc`` to ``f`` exactly as ``strictjson.dump(doc, f, indent=2, ensure_ascii=False)`` followed by a
    newline would, but record by record: its ``instances`` may be a :class:`LazyRecords` (or any iterable of
    records), and at most one record's text is held at a time. Every other member is written whole."""
    f.write("{")
    first = True
    for key, value in doc.items():
        f.write("\n  " if first else ",\n  ")
        first = False
        f.write(strictjson.dumps(key, ensure_ascii=False) + ": ")
        if key == "instances" and not isinstance(value, (list, tuple)):
            _dump_records(value, f)
        else:
            f.write(strictjson.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  "))
    f.write("\n}\n" if not first else "}\n")


def _dump_records(records: Iterable[Dict[str, Any]], f: IO[str]) -> None:
    """``records`` as the indented list ``json`` writes at depth 1 (strings never hold a raw newline)."""
    empty = True
    for record in records:
        f.write("[\n    " if empty else ",\n    ")
        empty = False
        f.write(strictjson.dumps(record, indent=2, ensure_ascii=False).replace("\n", "\n    "))
    f.write("[]" if empty else "\n  ]")


def write_atomic(path: str, doc: Dict[str, Any]) -> None:
    """Replace ``path`` with ``doc`` as JSON: a reader sees the old file or the new one, never a torn one.

    Failing to write (disk full, read-only) raises :class:`~orchestrator_pex.errors.RunDirError` (one line, exit 1)
    and leaves the old file, if any, untouched.
    """
    try:
        _write_atomic(path, doc)
    except OSError as exc:
        from orchestrator_pex.errors import RunDirError

        raise RunDirError(path, "", f"cannot write: {exc.strerror or exc}; the journal keeps every record, "
                          f"`orchestrator-pex resume {os.path.dirname(path)}` writes it once that is fixed") from None


def _write_atomic(path: str, doc: Dict[str, Any]) -> None:
    def dump(f: IO[str]) -> None:
        if isinstance(doc.get("instances"), LazyRecords):
            dump_document(doc, f)
        else:
            strictjson.dump(doc, f, indent=2, ensure_ascii=False)
            f.write("\n")

    atomic_file.replace(path, dump, prefix=".results.")
