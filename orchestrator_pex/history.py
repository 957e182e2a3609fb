"""Run history: list, show and prune the run directories under a results directory.

A *run directory* is a directory directly under the results directory holding ``journal.jsonl`` or
``results.json``; nothing else is ever listed or deleted. A run's state comes from its journal when readable (the
journal is the source of truth; ``results.json`` may be missing or stale after a crash), else from ``results.json``.

Run status shown: the run's own final status once the journal records ``run_finished``; ``running`` while the
orchestrator that wrote it is alive on this host; otherwise ``interrupted`` (``orchestrator-pex resume`` finishes it).
``prune`` never removes a ``running`` run.

A live run's document tells the truth about it: an instance the journal saw start and not finish is ``running``
(``retrying`` after an ``instance_retry``), one not started yet is ``pending``; only once the writer is gone are they
``cancelled`` (interrupted) and ``not-started``. ``RUN_ID`` may be ``latest``: the newest run (by start time).

Hostile or damaged run directories (anyone who can write the results directory can plant one) never make these
commands raise: a symlink directly under the results directory is never listed, followed or deleted (so ``prune``
cannot be led outside the results directory); a ``results.json`` that is not strict JSON (``NaN``, bad UTF-8) or not
an object is unreadable; one whose fields have the wrong types is shown with those fields as missing; a run
directory that cannot be summarised is listed as ``unreadable`` with the reason. ``prune`` that cannot remove a
directory stops with one line naming it (exit 1).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

import attrs

from orchestrator_pex import journal, procfs, records
from orchestrator_pex.errors import RunDirError, UsageError
from orchestrator_pex.records import InstanceRecord
from orchestrator_pex.results import default_results_dir  # noqa: F401  (re-exported for the history commands)
from orchestrator_pex.vocabulary import InstanceStatus, RunStatus

RESULTS_NAME = "results.json"




def is_run_dir(path: str) -> bool:
    if os.path.islink(path):
        return False
    return os.path.isfile(os.path.join(path, journal.JOURNAL_NAME)) or os.path.isfile(os.path.join(path, RESULTS_NAME))


def run_dirs(results_dir: str) -> List[str]:
    try:
        entries = sorted(os.listdir(results_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RunDirError(results_dir, "", f"cannot list the results directory: {exc.strerror or exc}") from None
    return [os.path.join(results_dir, e) for e in entries if is_run_dir(os.path.join(results_dir, e))]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def read_results(run_dir: str) -> Optional[Dict[str, Any]]:
    """``results.json`` as a dict with ``instances`` a list of dicts, or None if unreadable/not strict JSON."""
    try:
        with open(os.path.join(run_dir, RESULTS_NAME), "rb") as f:
            doc = json.loads(f.read(64 * 1024 * 1024).decode("utf-8"), parse_constant=_refuse_constant)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    if not isinstance(doc.get("instances"), list):
        doc["instances"] = []
    doc["instances"] = [r for r in doc["instances"] if isinstance(r, dict)]
    for key in ("run_id", "status", "batch", "started_at", "finished_at"):
        if key in doc and not isinstance(doc[key], str):
            doc.pop(key)
    return doc


def writer_alive(run_meta: Dict[str, Any]) -> bool:
    """Is the orchestrator that last started this run (pid noted in run_started) still alive on this host?"""
    pid = run_meta.get("orchestrator_pid")
    host = run_meta.get("host")
    if not isinstance(pid, int) or pid <= 1 or (host and host != socket.gethostname()):
        return False
    return not procfs.gone_or_zombie(pid)


def load(run_dir: str) -> Tuple[Optional[journal.RunState], Optional[Dict[str, Any]], List[str]]:
    """``(journal state or None, results.json document or None, problems)`` for one run directory."""
    problems: List[str] = []
    state = None
    if os.path.isfile(os.path.join(run_dir, journal.JOURNAL_NAME)):
        try:
            state, problems = journal.load_run(run_dir)
        except RunDirError as exc:
            problems.append(str(exc))
    doc = read_results(run_dir)
    if state is None and doc is None:
        raise RunDirError(run_dir, "", "neither a readable journal nor a readable results.json; not a run directory")
    return state, doc, problems


def run_status(state: Optional[journal.RunState], doc: Optional[Dict[str, Any]]) -> str:
    if state is None:
        return str(doc.get("status", "unknown")) if doc else "unknown"
    if state.finished and not state.in_flight:
        return str(state.run_meta.get("status") or (doc or {}).get("status") or "finished")
    if writer_alive(state.run_meta):
        return RunStatus.RUNNING
    return RunStatus.INTERRUPTED


def summary(run_dir: str) -> Dict[str, Any]:
    """One line of ``runs list``: id, status, batch, times, instance counts by status, cost."""
    state, doc, problems = load(run_dir)
    meta = dict(state.run_meta) if state else {}
    doc = doc or {}
    records: Dict[Any, Dict[str, Any]] = dict(state.records) if state else {
        r.get("name"): r for r in doc.get("instances", []) if isinstance(r, dict)
    }
    counts: Dict[str, int] = {}
    for record in records.values():
        status = str(record.get("status", "unknown"))
        counts[status] = counts.get(status, 0) + 1
    if state:
        for name in state.in_flight:
            if name not in records or records[name].get("status") != InstanceStatus.SUCCEEDED:
                counts[RunStatus.INTERRUPTED] = counts.get(RunStatus.INTERRUPTED, 0) + 1
    cost = 0.0
    for record in records.values():
        try:
            cost += float(record.get("cost_usd") or 0.0)
        except (TypeError, ValueError):
            pass
    total = len(doc.get("instances", [])) if isinstance(doc.get("instances"), list) else 0
    if state is not None and not (state.finished and not state.in_flight):
        names = batch_instance_names(run_dir, state, doc)  # an unfinished run: the batch says how many
        total = len(names)
        missing = sum(1 for n in names if n not in records and n not in state.in_flight)
        if missing:
            counts[InstanceStatus.NOT_STARTED] = counts.get(InstanceStatus.NOT_STARTED, 0) + missing
    return {
        "run_id": meta.get("run_id") or doc.get("run_id") or os.path.basename(run_dir),
        "path": run_dir,
        "status": run_status(state, doc),
        "batch": meta.get("batch") or doc.get("batch"),
        "started_at": meta.get("started_at") or doc.get("started_at"),
        "finished_at": meta.get("finished_at") or doc.get("finished_at") if (state is None or state.finished) else None,
        "sessions": state.sessions if state else 1,
        "instances": max(total, len(records)),
        "counts": dict(sorted(counts.items())),
        "cost_usd": round(cost, 6),
        "problems": problems,
    }


def list_runs(results_dir: str) -> List[Dict[str, Any]]:
    """Summaries of every run directory, oldest first (by start time, then id)."""
    from orchestrator_pex.errors import one_line

    out = []
    for path in run_dirs(results_dir):
        try:
            out.append(summary(path))
        except Exception as exc:  # noqa: BLE001 - one damaged run dir must not hide the others
            reason = str(exc) if isinstance(exc, RunDirError) else f"{path}: cannot be read: {exc!r}"
            out.append({"run_id": os.path.basename(path), "path": path, "status": "unreadable",
                        "started_at": None, "problems": [one_line(reason)[:300]], "counts": {}, "instances": 0})
    out.sort(key=lambda s: (str(s.get("started_at") or ""), str(s["run_id"])))
    return out


def find_run(results_dir: str, run_id: str) -> str:
    """The run directory for ``run_id`` (an exact id, a unique prefix, ``latest``, or a path to a run directory)."""
    if run_id == "latest" and not is_run_dir(os.path.join(results_dir, run_id)):
        runs = [r for r in list_runs(results_dir) if r.get("status") != "unreadable"]
        if not runs:
            raise UsageError(results_dir, "", "no runs here")
        return str(runs[-1]["path"])
    if os.sep in run_id or run_id.startswith("."):
        if is_run_dir(run_id):
            return os.path.abspath(run_id)
        raise UsageError(run_id, "", "not a run directory (no journal.jsonl or results.json)")
    exact = os.path.join(results_dir, run_id)
    if is_run_dir(exact):
        return exact
    matches = [p for p in run_dirs(results_dir) if os.path.basename(p).startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(results_dir, "", f"no run {run_id!r} here")
    raise UsageError(results_dir, "", f"run id {run_id!r} is ambiguous here: " +
                     ", ".join(os.path.basename(p) for p in matches[:5]))


def document(run_dir: str) -> Dict[str, Any]:
    """The run's results document: ``results.json`` when it is final and agrees with the journal, else rebuilt
    from the journal (instances the journal saw start but never finish appear as ``cancelled`` with an
    ``interrupted`` error)."""
    state, doc, problems = load(run_dir)
    if state is None:
        return doc  # type: ignore[return-value]  # load() returns a doc whenever it returns no state
    if doc is not None and state.finished and not state.in_flight and agrees_with_journal(doc, state):
        return doc
    return rebuild_document(run_dir, state, doc)


def agrees_with_journal(doc: Dict[str, Any], state: journal.RunState) -> bool:
    """Does ``doc`` (a results document) give every instance the journal recorded the journal's status?"""
    by_name = {r.get("name"): r.get("status") for r in doc.get("instances", []) if isinstance(r, dict)}
    return all(by_name.get(n) == r.get("status") for n, r in state.records.items())


def batch_instance_names(run_dir: str, state: journal.RunState, doc: Optional[Dict[str, Any]]) -> List[str]:
    """Instance names of the run's batch, in batch order: from the batch copy, else results.json, else the journal."""
    copy = state.run_meta.get("batch_copy")
    candidates = [os.path.join(run_dir, copy)] if isinstance(copy, str) and copy else []
    candidates += [os.path.join(run_dir, n) for n in ("batch.toml", "batch.json")]
    for path in candidates:
        if os.path.isfile(path):
            try:
                from orchestrator_pex import config
                from orchestrator_pex.selection import recorded_names

                instances = config.load_batch(path).instances
                in_batch: List[str] = [str(inst.name) for inst in instances]
                return recorded_names(state.run_meta, shard_names(state.run_meta, in_batch,
                                                                  {inst.name: inst.needs or () for inst in instances}))
            except Exception:  # noqa: BLE001 - fall back to what the run recorded
                break
    if doc and isinstance(doc.get("instances"), list):
        names = [r["name"] for r in doc["instances"] if isinstance(r, dict) and isinstance(r.get("name"), str)]
        if names:
            return names
    seen = list(dict.fromkeys([*state.starts, *state.records]))
    return seen


def shard_names(run_meta: Dict[str, Any], names: List[str],
                needs: Optional[Dict[str, Any]] = None) -> List[str]:
    """``names`` restricted to the run's shard when it ran one (``run --shard I/N`` records ``shard`` in the journal),
    whole dependency components (``needs``) together. ``ValueError`` if the recorded shard is malformed (see
    :func:`shard.recorded`)."""
    from orchestrator_pex import shard

    where = shard.recorded(run_meta.get("shard"))
    return names if where is None else shard.select(names, *where, needs)


def _with_recovered_spend(run_dir: str, state: journal.RunState, name: str, started: records.InstanceStarted,
                          earlier: Optional[InstanceRecord]) -> InstanceRecord:
    """The interrupted record of ``name``, holding what its unfinished attempts spent according to their raw stdout
    log plus what its last recorded record (``earlier``) holds (:mod:`orchestrator_pex.recovery`)."""
    from orchestrator_pex import recovery

    record = InstanceRecord.interrupted(name, records.event_to_json(started))
    starts = [records.event_to_json(e) for e in state.unfinished.get(name) or [started]]
    recovered, _ = recovery.recover(run_dir, name, starts,
                                    None if earlier is None else records.to_json(earlier))
    if recovered is not None:
        spent = records.record_from_json(recovered, journal.journal_path(run_dir), name=name)
        started_at = earlier.started_at if earlier is not None else None
        return attrs.evolve(record.with_spend_of(spent, attempts=True), started_at=started_at or record.started_at)
    if earlier is not None:  # no log to read: keep what was recorded
        return record.with_spend_of(earlier)
    return record


def all_records(run_dir: str, state: journal.RunState, doc: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """One record per instance of the batch, in batch order: the journal's (a success is final); for instances
    started and not finished, ``running``/``retrying`` while the run's orchestrator lives, else ``cancelled``; for the
    rest ``pending`` while it lives, else ``not-started``. Records are read from the journal with
    :func:`records.record_from_json` (a garbled one raises :class:`records.RecordError`, one line)."""
    names = batch_instance_names(run_dir, state, doc)
    where = journal.journal_path(run_dir)
    recorded = {name: records.record_from_json(r, where, f"record of {name!r}", name=name)
                for name, r in state.records.items()}
    live = not state.finished and writer_alive(state.run_meta)
    for name, started in state.in_flight.items():
        earlier = recorded.get(name)
        if earlier is None or earlier.status != InstanceStatus.SUCCEEDED:
            if live:
                recorded[name] = InstanceRecord.live(
                    name, InstanceStatus.RETRYING if name in state.retrying else InstanceStatus.RUNNING,
                    records.event_to_json(started))
            else:
                recorded[name] = _with_recovered_spend(run_dir, state, name, started, earlier)
    out = []
    for name in names:
        record = recorded.pop(name, None) or (
            InstanceRecord.live(name, InstanceStatus.PENDING) if live
            else InstanceRecord.not_started(name, "not started: the run ended before it"))
        out.append(record)
    out.extend(recorded.values())  # recorded but no longer in the batch copy
    return [records.to_json(r) for r in _with_batch_labels(run_dir, state, out)]


def _with_batch_labels(run_dir: str, state: journal.RunState, out: List[InstanceRecord]) -> List[InstanceRecord]:
    """Records the journal did not write (running, pending, interrupted) get ``tags`` and ``description`` from the
    run's batch copy; a record that carries its own keeps them."""
    if all(r.tags or r.description is not None for r in out):
        return out
    copy = state.run_meta.get("batch_copy")
    path = os.path.join(run_dir, copy) if isinstance(copy, str) and copy and "/" not in copy else ""
    try:
        from orchestrator_pex import config

        labels: Dict[str, Tuple[List[str], Optional[str]]] = {
            i.name: (list(i.tags or ()), i.description)
            for i in config.apply_defaults(config.load_batch(path))} if os.path.isfile(path) else {}
    except Exception:  # noqa: BLE001 - an unreadable copy only costs the labels
        labels = {}
    labelled = []
    for record in out:
        tags, description = labels.get(record.name, ([], None))
        if not record.tags and record.description is None and (tags or description is not None):
            record = record.labelled(tags, description)
        labelled.append(record)
    return labelled


def rebuild_document(run_dir: str, state: journal.RunState, doc: Optional[Dict[str, Any]] = None,
                     status: Optional[str] = None, finished_at: Optional[str] = None) -> Dict[str, Any]:
    """The results document rebuilt from the journal (``results.build_document``). ``status`` overrides the run
    status; by default it is the journal's final status, or ``running``/``interrupted`` for an unfinished run.
    ``finished_at`` is the end time when the journal records none (a run closed now)."""
    from orchestrator_pex import results

    records = all_records(run_dir, state, doc)
    meta = {k: v for k, v in state.run_meta.items() if k not in ("orchestrator_pid", "host")}
    if status is not None:
        meta["status"] = status
        if finished_at is not None and not meta.get("finished_at"):
            meta["finished_at"] = finished_at
    elif not state.finished or state.in_flight:
        meta["status"] = RunStatus.RUNNING if writer_alive(state.run_meta) else RunStatus.INTERRUPTED
        meta.pop("finished_at", None)
    return results.build_document(meta, records)


def prune(results_dir: str, keep: Optional[int] = None, older_than_days: Optional[float] = None,
          dry_run: bool = False) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Remove old run directories: all but the ``keep`` newest, or those started more than ``older_than_days`` ago.

    Returns ``(removed, kept_running)``; a ``running`` run is never removed.
    """
    if (keep is None) == (older_than_days is None):
        raise UsageError("runs prune", "", "give exactly one of --keep N or --older-than DAYS")
    if keep is not None and keep < 0:
        raise UsageError("runs prune", "--keep", "must be >= 0")
    runs = list_runs(results_dir)
    if keep is not None:
        victims = runs[: max(0, len(runs) - keep)]
    else:
        cutoff = time.time() - float(older_than_days) * 86400  # type: ignore[arg-type]  # set when keep is None
        victims = [r for r in runs if _started_epoch(r) < cutoff]
    removed: List[Dict[str, Any]] = []
    skipped: List[Dict[str, Any]] = []
    for run in victims:
        if run.get("status") == RunStatus.RUNNING:
            skipped.append(run)
            continue
        if not dry_run:
            path = run["path"]
            if os.path.islink(path) or os.path.dirname(os.path.abspath(path)) != os.path.abspath(results_dir):
                continue  # never follow a symlink or leave the results directory (run_dirs never lists these)
            try:
                shutil.rmtree(path)  # fd-based on Linux: a symlink planted inside is unlinked, never followed
            except OSError as exc:
                raise RunDirError(path, "", f"cannot remove: {exc.strerror or exc}; "
                                  f"{len(removed)} run(s) removed before it") from None
        removed.append(run)
    return removed, skipped


def _started_epoch(run: Dict[str, Any]) -> float:
    text = run.get("started_at")
    if isinstance(text, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    try:
        return os.path.getmtime(run["path"])
    except OSError:
        return time.time()
