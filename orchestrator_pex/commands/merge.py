"""``orchestrator-pex merge RESULTS.json... [-o OUT]``: combine the results documents of one sharded batch into one.

Each input is a results document written by ``run`` (``results.json`` or the stdout of ``run --json``); a run
directory may be given instead of its ``results.json``. The merge refuses, with exit 2 and one line naming the
files:

* documents of different batches: their ``batch_sha256`` (digest of the batch file) differ, or, when a document
  has no digest, their ``batch`` paths differ;
* a mix of sharded and unsharded documents, or shards of different counts;
* two documents of the same shard, or the same instance name in two documents;
* an instance in a document whose shard (``shard_of(name, count)``) is not that document's shard;
* an instance that needs (``graph`` of its document) an instance recorded in another document (a shard holds
  whole connected components; the shard of an instance is that of its component's key);
* an incomplete set of shards, unless ``--partial`` (the merged ``shard`` then lists the indices present).

The merged document keeps the results shape: ``batch``; ``run_id`` ``merged-<first run_id>``; ``started_at`` the
earliest and ``finished_at`` the latest of the inputs; ``instances`` concatenated in shard order, each read with
:func:`orchestrator_pex.records.record_from_json` (a key an older version did not write gets its default, an
unknown key is dropped, a value of the wrong type is refused: exit 2, one line ``FILE: instances[N].KEY: ...``);
``totals``
recomputed from the instances (numbers summed, per-status counts recounted); ``status`` the worst input status
(``succeeded`` only if every input and instance succeeded); ``runs``: one summary per input (run_id, shard, status,
started_at, finished_at, source). Exit 0 when the merged document was written, whatever the runs' outcomes: read
its ``status`` (or use ``--exit-status`` to get ``run``'s exit codes: 0 all succeeded, 1 some did not, 3 budget).
With ``-o OUT`` the HTML report of the merged document is written beside it as ``OUT-stem.html`` (``--no-report``
to skip; times from the records, log links relative to OUT's folder); a report that cannot be written is a warning.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from orchestrator_pex import atomic_file, records, results, strictjson, untrusted, vocabulary
from orchestrator_pex.errors import EXIT_OK, UsageError
from orchestrator_pex.vocabulary import InstanceStatus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="results.json files or run directories")
    parser.add_argument("-o", "--output", metavar="OUT", help="write the merged document here (default: stdout)")
    parser.add_argument(
        "--partial", action="store_true", help="merge even when some shards' documents are missing"
    )
    parser.add_argument(
        "--no-report", action="store_true", help="with -o OUT: do not write the HTML report OUT-stem.html beside it"
    )
    parser.add_argument(
        "--exit-status",
        action="store_true",
        help="exit like `run` would for the merged status (0 all succeeded, 1 some did not, 3 budget stop)",
    )


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex.request import MergeRequest

    request = MergeRequest.from_args(args)
    docs = [(path, _load(path)) for path in request.results]
    merged = merge(docs, partial=request.partial)
    text = strictjson.dumps(merged, indent=2, sort_keys=False) + "\n"
    if request.output:
        _write_atomic(request.output, text)
        if request.report_html:
            _write_report(request.output, merged)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    counts = merged["totals"].get("by_status", {})
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print(
        f"orchestrator-pex merge: {len(docs)} documents, {len(merged['instances'])} instances ({summary}); "
        f"status {merged['status']}",
        file=sys.stderr,
    )
    if request.exit_status:
        return exit_status_for(merged)
    return EXIT_OK


def _write_report(output: str, merged: Dict[str, Any]) -> None:
    """The HTML report of the merged document beside it (``OUT-stem.html``); a failure is a warning."""
    from orchestrator_pex import html_report

    path = os.path.splitext(output)[0] + ".html"
    try:
        html_report.write(path, html_report.render(merged, base_dir=os.path.dirname(os.path.abspath(path))))
    except OSError as exc:
        print(f"orchestrator-pex merge: warning: {path}: report not written: {exc.strerror or exc}", file=sys.stderr)


def exit_status_for(doc: Dict[str, Any]) -> int:
    """``run``'s exit status for a (merged) document: 0 all succeeded, 3 budget stop, 1 otherwise."""
    return vocabulary.exit_status(doc.get("status"))


#: A results document larger than this is refused unread.
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def _load(path: str) -> Dict[str, Any]:
    """One input document: a regular file of at most MAX_DOCUMENT_BYTES, strict JSON (no NaN/Infinity), an object
    with ``batch`` and a list of ``instances`` objects; anything else is one line naming the file (exit 2)."""
    import stat

    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(path, "", "not a regular file")
            data = fh.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise UsageError(path, "", f"cannot read: {exc.strerror or exc}") from None
    except ValueError:  # NUL in the path
        raise UsageError(path, "", "cannot read: bad file name") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise UsageError(path, "", f"larger than {MAX_DOCUMENT_BYTES} bytes: not a results document")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise UsageError(path, "", f"not a JSON results document: {str(exc)[:200]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list) or "batch" not in doc:
        raise UsageError(path, "", "not a results document (expected an object with \"batch\" and \"instances\")")
    for i, inst in enumerate(doc["instances"]):
        if not isinstance(inst, dict) or not isinstance(inst.get("name"), str) or \
                not isinstance(inst.get("status"), str):
            raise UsageError(path, f"instances[{i}]", "expected an object with a string \"name\" and \"status\"")
    return doc


def _shard_of_doc(path: str, doc: Dict[str, Any]) -> Optional[Tuple[int, int]]:
    from orchestrator_pex.shard import recorded

    try:
        return recorded(doc.get("shard"))
    except ValueError as exc:
        raise UsageError(path, "shard", str(exc)) from None


def merge(docs: List[Tuple[str, Dict[str, Any]]], partial: bool = False) -> Dict[str, Any]:
    """Merge ``[(source, document), ...]`` into one document (see the module doc for the rules)."""
    from orchestrator_pex.shard import shard_of

    if not docs:
        raise UsageError("merge", "", "no results documents given")
    first_path, first = docs[0]
    # Same batch: the same content digest when every document records one (paths may differ between hosts),
    # else the same batch path.
    key = "batch_sha256" if all(isinstance(d.get("batch_sha256"), str) for _, d in docs) else "batch"
    for path, doc in docs[1:]:
        if doc.get(key) != first.get(key):
            raise UsageError(path, key, f"{json.dumps(doc.get(key))} differs from {first_path}'s "
                             f"{json.dumps(first.get(key))}: refusing to merge results of different batches")
    shards = [(path, _shard_of_doc(path, doc)) for path, doc in docs]
    sharded = [s for _, s in shards if s is not None]
    index_of: List[int] = [s[0] for s in sharded]  # the shard index of docs[i] (when every document has one)
    count = None
    if sharded:
        if len(sharded) != len(docs):
            unsharded = next(p for p, s in shards if s is None)
            raise UsageError(unsharded, "", "has no \"shard\" while other documents do: refusing to mix them")
        counts = {s[1] for s in sharded}
        if len(counts) != 1:
            raise UsageError("merge", "", f"documents come from different shard counts {sorted(counts)}: "
                             "refusing to merge")
        count = counts.pop()
        seen: Dict[int, str] = {}
        for (path, _), index in zip(shards, index_of):
            if index in seen:
                raise UsageError(path, "", f"shard {index}/{count} is also in {seen[index]}: overlapping shards")
            seen[index] = path
        missing = sorted(set(range(count)) - set(seen))
        if missing and not partial:
            raise UsageError("merge", "", f"shards {', '.join(f'{i}/{count}' for i in missing)} missing (have "
                             f"{len(seen)} of {count}); pass --partial to merge anyway")
        order = sorted(range(len(docs)), key=lambda i: index_of[i])
    else:
        order = list(range(len(docs)))

    graph: Dict[str, Any] = {}
    for _, doc in docs:
        if isinstance(doc.get("graph"), dict):
            graph.update({k: [n for n in v if isinstance(n, str)] for k, v in doc["graph"].items()
                          if isinstance(v, list)})
    from orchestrator_pex.shard import group_keys

    keys = group_keys(graph)
    owner: Dict[str, str] = {}
    instances: List[Dict[str, Any]] = []
    for i in order:
        path, doc = docs[i]
        for j, inst in enumerate(doc["instances"]):
            name = inst.get("name") if isinstance(inst, dict) else None
            if not isinstance(name, str):
                raise UsageError(path, "", "an instance has no name")
            try:
                record = records.to_json(records.record_from_json(inst, path, f"instances[{j}]"))
            except records.RecordError as exc:
                raise UsageError(exc.file, exc.key, exc.message) from None
            if name in owner:
                raise UsageError(path, "", f"instance {name!r} is also in {owner[name]}: overlapping instances")
            if count is not None and shard_of(keys.get(name, name), count) != index_of[i]:
                raise UsageError(path, "", f"instance {name!r} belongs to shard "
                                 f"{shard_of(keys.get(name, name), count)}/{count}, not {index_of[i]}/{count}: "
                                 "was the batch split differently?")
            owner[name] = path
            instances.append(record)

    for name, needs in graph.items():  # a shard holds whole connected components of the dependency graph
        for need in needs:
            if name in owner and need in owner and owner[need] != owner[name]:
                raise UsageError(owner[name], "", f"instance {name!r} needs {need!r}, which is in {owner[need]}: "
                                 "a shard must hold whole connected components of the dependency graph")
    ordered = [docs[i] for i in order]
    merged: Dict[str, Any] = {"schema_version": vocabulary.SCHEMA_VERSION}
    merged["run_id"] = f"merged-{ordered[0][1].get('run_id', 'run')}"
    merged["batch"] = copy.deepcopy(first["batch"])
    if key == "batch_sha256":
        merged["batch_sha256"] = first["batch_sha256"]
    starts = [d["started_at"] for _, d in ordered if isinstance(d.get("started_at"), str)]
    ends = [d["finished_at"] for _, d in ordered if isinstance(d.get("finished_at"), str)]
    merged["started_at"] = min(starts, key=_sort_key) if starts else None
    merged["finished_at"] = max(ends, key=_sort_key) if ends else None
    merged["status"] = vocabulary.combined_run_status([d.get("status") for _, d in ordered], instances)
    merged["totals"] = _totals([d.get("totals") for _, d in ordered], instances)
    if count is not None:
        merged["shard"] = {"count": count, "indices": sorted(index_of)}
    if graph:
        merged["graph"] = graph
    merged["runs"] = [
        {
            "run_id": d.get("run_id"),
            "shard": d.get("shard"),
            "status": d.get("status"),
            "started_at": d.get("started_at"),
            "finished_at": d.get("finished_at"),
            "source": os.path.abspath(p),
        }
        for p, d in ordered
    ]
    merged["instances"] = instances
    return merged


def _sort_key(stamp: str):
    """Timestamps compared as instants when they parse as ISO 8601 (``Z`` allowed), as text otherwise."""
    from datetime import datetime, timezone

    try:
        value = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return (1, stamp)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return (0, value.timestamp())


def _number(value: Any) -> bool:
    return untrusted.number(value) is not None


def _add(into: Dict[str, Any], key: str, value: Any) -> None:
    if _number(value):
        into[key] = into.get(key, 0) + value
    elif isinstance(value, dict):
        sub = into.setdefault(key, {})
        if isinstance(sub, dict):
            for k, v in value.items():
                _add(sub, k, v)


def _totals(inputs: List[Any], instances: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Numbers in the inputs' totals summed key by key, then the per-instance quantities recomputed exactly."""
    totals: Dict[str, Any] = {}
    for t in inputs:
        if isinstance(t, dict):
            for k, v in t.items():
                _add(totals, k, v)
    recomputed = results.totals(instances)
    totals.update(instances=recomputed["instances"], by_status=recomputed["by_status"])
    by_status = recomputed["by_status"]
    for status in (InstanceStatus.SUCCEEDED, InstanceStatus.FAILED):
        if status in totals and _number(totals[status]):
            totals[status] = by_status.get(status, 0)
    totals.update(tokens=recomputed["tokens"], cost_usd=recomputed["cost_usd"], tools=recomputed["tools"])
    return totals


def _write_atomic(path: str, text: str) -> None:
    """``path`` replaced atomically and durably (fsynced) by ``text``; a failure is one line (exit 2)."""
    try:
        atomic_file.write_text(path, text, prefix=".merge-")
    except OSError as exc:
        raise UsageError(path, "", f"cannot write: {exc.strerror or exc}") from None
