"""Metrics: a run's numbers in the Prometheus text exposition format, for node_exporter's textfile collector.

:func:`render` turns a results document (or a live snapshot of one, see :func:`snapshot`) into exposition text;
:func:`write` replaces the metrics file atomically (a temporary file in the same directory, fsync'd, mode 0644, then
``rename``), so node_exporter never reads a torn file. The runner writes the file when the run starts, every
:data:`INTERVAL` seconds while it runs, and at the end.

Guarantees:

* Names follow Prometheus conventions: prefix ``orchestrator_pex_``, base units in the name (``_seconds``,
  ``_usd``), ``_total`` on counters (the per-run counters restart from zero with each run, which ``rate()`` and
  ``increase()`` treat as a counter reset), and every family has ``# HELP`` and ``# TYPE`` lines.
* Label values are bounded: ``batch`` is the batch file's stem, ``shard`` is ``I/N`` or ``all``, ``status`` one of
  the fixed instance or run statuses, ``kind`` one of the four token kinds, ``model`` at most :data:`MAX_MODELS`
  distinct model names (cut to 100 characters, the rest summed as ``other``). Instance names are never labels.
  Label values are escaped as the format requires (backslash, double quote, newline).
* Every value is a finite number; anything else in the document counts as absent (zero).
* ``orchestrator_pex_last_success_timestamp_seconds`` is carried over from the metrics file being replaced when
  this run did not succeed, so it keeps the time of the batch's last successful run across failed ones.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from orchestrator_pex import atomic_file, results, shard, untrusted
from orchestrator_pex.results import epoch
from orchestrator_pex.vocabulary import FINAL_STATUSES, LIVE_STATUSES, TOKEN_KEYS, InstanceStatus, RunStatus

PREFIX = "orchestrator_pex_"
INTERVAL = 15.0  #: seconds between two writes of the metrics file while a run is going on
MAX_MODELS = 20  #: distinct ``model`` label values per file; further models are summed as "other"
TOKEN_KINDS = TOKEN_KEYS
#: every instance status, live then final: each is a label value of ``instances`` (zero-filled)
INSTANCE_STATUSES = (*LIVE_STATUSES, *FINAL_STATUSES)
RUN_STATUSES = tuple(RunStatus)

#: name -> (type, help, label names): every metric this module writes.
METRICS: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "run_status": ("gauge", "1 for the run's current status, 0 for the others", ("batch", "shard", "status")),
    "run_start_time_seconds": ("gauge", "Unix time the run started", ("batch", "shard")),
    "run_duration_seconds": ("gauge", "Seconds from the run's start to its end (or to now while it runs)",
                             ("batch", "shard")),
    "run_exit_status": ("gauge", "Exit status of the finished run (absent while it runs)", ("batch", "shard")),
    "instances": ("gauge", "Instances of the run by status", ("batch", "shard", "status")),
    "tokens_total": ("counter", "Tokens used by the run's instances, by kind and model", ("batch", "shard", "kind",
                                                                                        "model")),
    "cost_usd_total": ("counter", "Cost of the run's instances in US dollars, by model", ("batch", "shard", "model")),
    "retries_total": ("counter", "Attempts beyond each instance's first (retried transient API errors)",
                      ("batch", "shard")),
    "last_success_timestamp_seconds": ("gauge", "Unix time the last run of this batch that succeeded finished",
                                       ("batch", "shard")),
}


def _num(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def _epoch(stamp: Any) -> Optional[float]:
    return epoch(stamp)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def batch_label(doc: Dict[str, Any]) -> str:
    batch = doc.get("batch")
    stem = os.path.splitext(os.path.basename(batch))[0] if isinstance(batch, str) else ""
    return untrusted.name(stem[:100]) or "batch"


def shard_label(doc: Dict[str, Any]) -> str:
    """``I/N`` for a document of shard I of N (see :func:`shard.recorded`), ``all`` otherwise (or malformed)."""
    try:
        where = shard.recorded(doc.get("shard"))
    except ValueError:
        where = None
    return "all" if where is None else f"{where[0]}/{where[1]}"


def render(doc: Dict[str, Any], now: float, previous_success: Optional[float] = None) -> str:
    """Exposition text for ``doc`` (a results document or a :func:`snapshot`) as of ``now`` (Unix time)."""
    base = {"batch": batch_label(doc), "shard": shard_label(doc)}
    samples: Dict[str, List[Tuple[Dict[str, str], float]]] = {name: [] for name in METRICS}
    status: str = doc["status"] if doc.get("status") in RUN_STATUSES else RunStatus.FAILED
    for s in RUN_STATUSES:
        samples["run_status"].append(({**base, "status": s}, 1.0 if s == status else 0.0))
    started = _epoch(doc.get("started_at"))
    finished = _epoch(doc.get("finished_at"))
    if started is not None:
        samples["run_start_time_seconds"].append((base, started))
        samples["run_duration_seconds"].append((base, round(max(0.0, (finished or now) - started), 3)))
    if status != RunStatus.RUNNING and isinstance(doc.get("exit_status"), int):
        samples["run_exit_status"].append((base, float(doc["exit_status"])))

    records = (r for r in doc.get("instances") or () if isinstance(r, dict))  # one at a time (a LazyRecords)
    counts = {s: 0 for s in INSTANCE_STATUSES}
    models: Dict[str, Dict[str, float]] = {}
    retries = 0.0
    for r in records:
        st = r.get("status")
        counts[st if st in counts else InstanceStatus.FAILED] += 1
        model = untrusted.name(r.get("model")) or "unknown"
        model = model[:100]
        if model not in models and len(models) >= MAX_MODELS:
            model = "other"
        m = models.setdefault(model, {k: 0.0 for k in (*TOKEN_KINDS, "cost")})
        tokens: Dict[str, Any] = r["tokens"] if isinstance(r.get("tokens"), dict) else {}
        for k in TOKEN_KINDS:
            m[k] += float(untrusted.count(tokens.get(k)) or 0)
        m["cost"] += untrusted.dollars(r.get("cost_usd")) or 0.0
        attempts = untrusted.count(r.get("attempts")) or 0
        retries += max(0, attempts - 1)
    for instance_status, n in counts.items():
        samples["instances"].append(({**base, "status": instance_status}, float(n)))
    for model, m in sorted(models.items()):
        for k in TOKEN_KINDS:
            samples["tokens_total"].append(({**base, "kind": k, "model": model}, m[k]))
        samples["cost_usd_total"].append(({**base, "model": model}, round(m["cost"], 6)))
    samples["retries_total"].append((base, retries))
    last_success = finished if status == RunStatus.SUCCEEDED and finished is not None else previous_success
    if last_success is not None:
        samples["last_success_timestamp_seconds"].append((base, last_success))

    lines: List[str] = []
    for name, (kind, help_text, _) in METRICS.items():
        if not samples[name]:
            continue
        full = PREFIX + name
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples[name]:
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{full}{{{text}}} {_fmt(_num(value))}")
    return "\n".join(lines) + "\n"


_LAST_SUCCESS = re.compile(r'^' + PREFIX + r'last_success_timestamp_seconds\{batch="((?:[^"\\]|\\.)*)",'
                           r'shard="((?:[^"\\]|\\.)*)"\} (\S+)$')


def previous_success(path: str, batch: str, shard: str) -> Optional[float]:
    """The last-success timestamp for ``batch``/``shard`` in the metrics file at ``path``, if it has one."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return None
    for line in lines:
        m = _LAST_SUCCESS.match(line)
        if m and m.group(1) == escape_label(batch) and m.group(2) == escape_label(shard):
            try:
                value = float(m.group(3))
            except ValueError:
                return None
            return value if math.isfinite(value) and value > 0 else None
    return None


def write(path: str, doc: Dict[str, Any], now: float) -> None:
    """Render ``doc`` and replace the metrics file at ``path`` atomically (raises ``OSError``)."""
    previous = previous_success(path, batch_label(doc), shard_label(doc))
    write_text(path, render(doc, now, previous))


def write_text(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` (mode 0644) through :func:`atomic_file.write_text`."""
    atomic_file.write_text(path, text, prefix=".metrics.", mode=0o644)


def snapshot(run_meta: Dict[str, Any], states: Sequence[Any], extra: Sequence[Dict[str, Any]] = (),
             scrub: Optional[Callable[[Any], Any]] = None) -> Dict[str, Any]:
    """A results-shaped document of a run still going on: finished instances' records, live ones summed so far,
    then ``extra`` records (a resumed run's earlier ones). Its ``instances`` are produced one at a time on each
    read (:class:`~orchestrator_pex.results.LazyRecords`), each through ``scrub`` if given: a snapshot of 100,000
    instances never holds them all."""
    def produce() -> Iterator[Dict[str, Any]]:
        for s in states:
            record = s.record
            if record is not None:
                yield record
                continue
            tokens = {k: 0 for k in TOKEN_KINDS}
            for a in s.attempts:
                for k, v in a.acct.tokens().items():
                    if k in tokens:
                        tokens[k] += v
            current = s.current
            yield {"status": s.status, "tokens": tokens, "cost_usd": s.cost(), "attempts": len(s.attempts),
                   "model": current.acct.model if current else None}
        yield from extra

    records = results.LazyRecords(produce, len(states) + len(extra), to_json=scrub or (lambda r: r))
    return {**run_meta, "status": RunStatus.RUNNING, "instances": records}
