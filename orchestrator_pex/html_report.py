"""HTML report: one self-contained, offline HTML file showing a run (``report.html`` in the run directory).

:func:`render` builds the page from a results document and, when the run directory is known, the events of its
journal; :func:`write` replaces a file with it atomically (temporary file in the same directory, then ``rename``).

Guarantees:

* **Self-contained, offline.** One file: inline CSS, inline SVG charts and one small inline script (table
  sorting). No external fonts, scripts, styles or images; a Content-Security-Policy ``<meta>`` forbids every
  fetch (``default-src 'none'``) and allows only that one script, by its sha256. Links to instance logs are
  relative (to the directory the report is written in), so the run directory can be copied off the host whole.
* **Everything is escaped.** Every value taken from the document or the journal (names, models, tools, errors,
  results, paths) goes through :func:`html.escape`; numbers are re-checked (:mod:`orchestrator_pex.untrusted`)
  and anything implausible shows as absent. An instance whose result contains ``<script>`` shows it as text.
* **Bounded size.** The timeline draws at most :data:`MAX_TIMELINE_ROWS` instances: when a run has more, every
  instance that did not succeed is drawn first (up to the limit), then an even sample of the others; the page says
  so. The concurrency chart is reduced to at most :data:`MAX_CONCURRENCY_POINTS` points (each the maximum of its
  time slice). The per-instance bar chart shows the :data:`TOP_INSTANCES` most expensive instances. The table lists
  every instance; its result excerpt and its error are each cut to between 40 and 300 characters (shorter the more
  instances there are: at most about 600,000 characters of each in all). A 10,000-instance run with names and
  models of usual length (tens of characters) gives a report under 5 MB.
* **Bounded memory.** A document of more than :data:`MAX_TABLE_ROWS` instances (its ``instances`` may be produced
  one at a time, see :class:`~orchestrator_pex.results.LazyRecords`) is read in one pass that keeps only what the
  page shows: the table lists :data:`SAMPLE_ROWS` of them (every instance that did not succeed first, then an
  even sample of the others; the page says so), while the summary, the per-model and per-agent tables, the top
  instances by cost and the concurrency chart count every instance. Attempt times then come from the records (one
  bar per instance), not from the journal, which is not read.
* **Attempt times.** With the journal, each attempt is drawn from its ``instance_started`` event to the next
  attempt's start minus the retry's backoff (``instance_retry``), the last one to the record's ``finished_at``;
  a retried attempt is coloured ``retried``. Without it (a bare ``results.json``) one bar per instance spans
  ``started_at`` to ``finished_at``, labelled with its number of attempts.
* **Agents.** A record's ``agent`` field names the CLI that ran it; records without one count as ``claude``.
"""

from __future__ import annotations

import array
import base64
import datetime
import hashlib
import heapq
import html
import os
import urllib.parse
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from orchestrator_pex import atomic_file, untrusted
from orchestrator_pex.results import epoch
from orchestrator_pex.vocabulary import FINAL_STATUSES, TOKEN_KEYS, InstanceStatus, RunStatus

MAX_TIMELINE_ROWS = 300
MAX_TABLE_ROWS = 10_000  #: above this many instances, the table shows a sample (see "Bounded memory")
SAMPLE_ROWS = 5_000  #: the size of that sample
MAX_CONCURRENCY_POINTS = 600
TOP_INSTANCES = 25
EXCERPT_BUDGET = 600_000  #: characters of result excerpts (and of errors) in the whole table
TEXT_LIMIT = 300  #: the most characters of a result excerpt or an error shown for one instance
TOKEN_KINDS = TOKEN_KEYS
STATUS_ORDER = FINAL_STATUSES
COLORS = {
    "succeeded": "#2e9d4f", "failed": "#d33c3c", "timed-out": "#e8871e", "stalled": "#a0642a",
    "cancelled": "#8a8f98", "budget-stopped": "#8d4fd1", "api-error": "#c2185b", "not-started": "#c9ced6",
    "skipped": "#b0a890", "retried": "#f2c230", "running": "#3b7dd8", "interrupted": "#5b6270",
}

_SCRIPT = """\
document.documentElement.setAttribute("data-sortable", "ready");
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var num = th.classList.contains("num"), dir = th.getAttribute("data-dir") === "asc" ? -1 : 1;
      th.setAttribute("data-dir", dir === 1 ? "asc" : "desc");
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent, y = b.cells[col].textContent;
        if (num) { return ((parseFloat(x) || 0) - (parseFloat(y) || 0)) * dir; }
        return x.localeCompare(y) * dir;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

_CSS = """\
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:16px;
color:#1d2330;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px;border-bottom:1px solid #dde1e7}
.muted{color:#667085}.cards{display:flex;flex-wrap:wrap;gap:8px}
.card{border:1px solid #dde1e7;border-radius:6px;padding:8px 12px;min-width:130px}
.card b{display:block;font-size:18px}.bar{background:#eef0f4;border-radius:3px;height:10px;width:240px}
.bar i{display:block;height:10px;border-radius:3px;background:#3b7dd8}.bar i.over{background:#d33c3c}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;border-bottom:1px solid #eef0f4;
text-align:left;vertical-align:top}th{background:#f6f7f9;cursor:pointer;white-space:nowrap}
td.n,th.num{text-align:right;font-variant-numeric:tabular-nums}
.st{display:inline-block;width:9px;height:9px;border-radius:2px;margin-right:4px}
.legend span{margin-right:12px;white-space:nowrap}td.d{max-width:420px;word-break:break-word}
.err{color:#b42318}#instances td:nth-child(n+5):nth-child(-n+13){text-align:right}
svg{display:block}svg text{font-size:11px;fill:#1d2330}
"""


def _status_css() -> str:
    return "".join(f".s-{k}{{background:{v}}}" for k, v in COLORS.items())


# -- values from the document: checked, never trusted --------------------------------------------------------------


def e(value: Any) -> str:
    """``value`` as escaped HTML text (attribute-safe)."""
    return html.escape("" if value is None else str(value), quote=True)


def _epoch(stamp: Any) -> Optional[float]:
    return epoch(stamp)


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return untrusted.count(value) or 0


def _dollars(value: Any) -> float:
    return untrusted.dollars(value) or 0.0


def _name(value: Any, default: str = "-") -> str:
    return untrusted.name(value) or default


def _status(value: Any) -> str:
    if isinstance(value, str) and value in COLORS:
        return value
    return InstanceStatus.FAILED if value else InstanceStatus.NOT_STARTED


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_cost(x: float) -> str:
    return f"${x:.4f}"


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


def _clock(ts: Optional[float]) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# -- attempts ------------------------------------------------------------------------------------------------------

Span = Tuple[float, float, str]  # start, end, outcome


def attempt_spans(records: Sequence[Dict[str, Any]], events: Optional[Iterable[Dict[str, Any]]],
                  run_end: Optional[float]) -> Dict[str, List[Span]]:
    """Per instance name, its attempts as (start, end, outcome): from the journal's events when given."""
    spans: Dict[str, List[List[Any]]] = {}
    if events is not None:
        pending_delay: Dict[str, float] = {}
        for ev in events:
            if not isinstance(ev, dict) or not isinstance(ev.get("name"), str):
                continue
            name, kind = ev["name"], ev.get("event")
            own = spans.setdefault(name, [])
            if kind == "instance_started":
                at = _epoch(ev.get("at"))
                if at is None:
                    continue
                if own and own[-1][1] is None:  # the previous attempt ended before its backoff
                    own[-1][1] = max(own[-1][0], at - pending_delay.pop(name, 0.0))
                    own[-1][2] = own[-1][2] or RunStatus.INTERRUPTED
                own.append([at, None, None])
            elif kind == "instance_retry" and own and own[-1][1] is None:
                own[-1][2] = "retried"
                delay = ev.get("delay_s")
                pending_delay[name] = untrusted.dollars(delay) or 0.0
            elif kind == "instance_finished" and own and own[-1][1] is None:
                rec = _dict(ev.get("record"))
                end = _epoch(rec.get("finished_at")) or own[-1][0]
                own[-1][1] = max(own[-1][0], end)
                own[-1][2] = _status(rec.get("status"))
    out: Dict[str, List[Span]] = {}
    for r in records:
        name = r.get("name")
        if not isinstance(name, str):
            continue
        own = [s for s in spans.get(name, []) if s[0] is not None]
        status = _status(r.get("status"))
        if own:
            fixed = []
            for start, end, outcome in own:
                end = end if end is not None else (_epoch(r.get("finished_at")) or run_end or start)
                fixed.append((start, max(start, end), outcome or status))
            out[name] = fixed
            continue
        start, end = _epoch(r.get("started_at")), _epoch(r.get("finished_at"))
        if start is not None:
            out[name] = [(start, max(start, end if end is not None else (run_end or start)), status)]
    return out


def concurrency(spans: Dict[str, List[Span]]) -> List[Tuple[float, int]]:
    """Step points (time, attempts running from then on), reduced to at most MAX_CONCURRENCY_POINTS slices."""
    changes: List[Tuple[float, int]] = []
    for own in spans.values():
        for start, end, _ in own:
            changes.append((start, 1))
            changes.append((end, -1))
    changes.sort(key=lambda c: (c[0], c[1]))
    return _reduce_points(changes)


def _reduce_points(changes: List[Tuple[float, int]]) -> List[Tuple[float, int]]:
    """Sorted (time, +1/-1) changes as step points, reduced to at most MAX_CONCURRENCY_POINTS slices."""
    if not changes:
        return []
    points: List[Tuple[float, int]] = []
    level = 0
    for t, delta in changes:
        level += delta
        if points and points[-1][0] == t:
            points[-1] = (t, level)
        else:
            points.append((t, level))
    if len(points) <= MAX_CONCURRENCY_POINTS:
        return points
    t0, t1 = points[0][0], points[-1][0]
    width = (t1 - t0) / MAX_CONCURRENCY_POINTS or 1.0
    reduced: Dict[int, int] = {}
    for t, lvl in points:
        k = min(MAX_CONCURRENCY_POINTS - 1, int((t - t0) / width))
        reduced[k] = max(reduced.get(k, 0), lvl)
    out = [(t0 + k * width, lvl) for k, lvl in sorted(reduced.items())]
    out.append((t1, points[-1][1]))
    return out


def timeline_rows(records: Sequence[Dict[str, Any]], spans: Dict[str, List[Span]]) -> Tuple[List[str], bool]:
    """Names drawn in the timeline (by first start) and whether it was sampled: non-successes first, then evenly."""
    names = [r["name"] for r in records if isinstance(r.get("name"), str) and r["name"] in spans]
    if len(names) <= MAX_TIMELINE_ROWS:
        chosen = names
    else:
        status = {r.get("name"): r.get("status") for r in records}
        bad = [n for n in names if status.get(n) != InstanceStatus.SUCCEEDED][:MAX_TIMELINE_ROWS]
        good = [n for n in names if status.get(n) == InstanceStatus.SUCCEEDED]
        room = MAX_TIMELINE_ROWS - len(bad)
        step = len(good) / room if room else 0
        chosen = bad + ([good[int(i * step)] for i in range(room)] if room and good else [])
    chosen.sort(key=lambda n: spans[n][0][0])
    return chosen, len(chosen) < len(names)


# -- the page ------------------------------------------------------------------------------------------------------


def _aggregate(records: Iterable[Dict[str, Any]],
               key: Callable[[Dict[str, Any]], str]) -> List[Tuple[str, Dict[str, float]]]:
    groups: Dict[str, Dict[str, float]] = {}
    for r in records:
        _add_to_group(groups, key(r), r)
    return _sorted_groups(groups)


def _add_to_group(groups: Dict[str, Dict[str, float]], key: str, r: Dict[str, Any]) -> None:
    g = groups.setdefault(key, {k: 0.0 for k in ("instances", *TOKEN_KINDS, "total", "cost")})
    g["instances"] += 1
    tokens = _dict(r.get("tokens"))
    for k in TOKEN_KINDS:
        g[k] += _count(tokens.get(k))
    g["total"] += _count(tokens.get("total"))
    g["cost"] += _dollars(r.get("cost_usd"))


def _sorted_groups(groups: Dict[str, Dict[str, float]]) -> List[Tuple[str, Dict[str, float]]]:
    return sorted(groups.items(), key=lambda kv: (-kv[1]["cost"], -kv[1]["total"], kv[0]))


def _by_model(r: Dict[str, Any]) -> str:
    return _name(r.get("model"))


def _by_agent(r: Dict[str, Any]) -> str:
    return _name(r.get("agent"), "claude")


def _cost_key(r: Dict[str, Any]) -> float:
    return -_dollars(r.get("cost_usd"))


class _Digest:
    """One pass over a large document's instances (see "Bounded memory"): what the page needs, bounded."""

    def __init__(self, instances: Iterable[Any], expected: int) -> None:
        self.count = 0
        self.per_model: Dict[str, Dict[str, float]] = {}
        self.per_agent: Dict[str, Dict[str, float]] = {}
        self.top: List[Tuple[float, int, Dict[str, Any]]] = []  # a min-heap of (cost, -order, record)
        self.by_status: Dict[str, int] = {}
        self.tokens = {k: 0 for k in (*TOKEN_KINDS, "total")}
        self.tools: Dict[str, int] = {}
        self.cost = 0.0
        self.starts, self.ends = array.array("d"), array.array("d")  # one bar per instance
        bad: List[Tuple[int, Dict[str, Any]]] = []
        good: List[Tuple[int, Dict[str, Any]]] = []
        stride, good_seen = max(1, expected // SAMPLE_ROWS), 0  # about SAMPLE_ROWS successes kept at most
        limit = max(40, min(TEXT_LIMIT, EXCERPT_BUDGET // SAMPLE_ROWS))  # what the table cuts texts to
        for r in instances:
            if not isinstance(r, dict) or not isinstance(r.get("name"), str):
                continue
            self.count += 1
            _add_to_group(self.per_model, _by_model(r), r)
            _add_to_group(self.per_agent, _by_agent(r), r)
            cost = _dollars(r.get("cost_usd"))
            item = (cost, -self.count, r)
            if len(self.top) < TOP_INSTANCES:
                heapq.heappush(self.top, item)
            elif item[:2] > self.top[0][:2]:
                heapq.heapreplace(self.top, item)
            st = _status(r.get("status"))
            self.by_status[st] = self.by_status.get(st, 0) + 1
            rt = _dict(r.get("tokens"))
            for k in self.tokens:
                self.tokens[k] += _count(rt.get(k))
            for tool, n in (r.get("tools") or {}).items() if isinstance(r.get("tools"), dict) else ():
                self.tools[_name(tool)] = self.tools.get(_name(tool), 0) + _count(n)
            self.cost += cost
            start, end = _epoch(r.get("started_at")), _epoch(r.get("finished_at"))
            if start is not None:
                self.starts.append(start)
                self.ends.append(max(start, end if end is not None else start))
            if st != InstanceStatus.SUCCEEDED:
                if len(bad) < SAMPLE_ROWS:
                    bad.append((self.count, _slim(r, limit)))
                continue
            if good_seen % stride == 0:  # every stride-th success; when the sample is full, keep every other one
                good.append((self.count, _slim(r, limit)))
                if len(good) >= 2 * SAMPLE_ROWS:
                    good = good[::2]
                    stride *= 2
            good_seen += 1
        room = SAMPLE_ROWS - len(bad)
        step = len(good) / room if room > 0 else 0.0
        if step > 1:
            good = [good[int(i * step)] for i in range(room)]
        elif room <= 0:
            good = []
        #: the instances the table shows, in document order
        self.sample = [r for _, r in sorted(bad + good, key=lambda pair: pair[0])]

    def totals(self) -> Dict[str, Any]:
        return {"instances": self.count, "by_status": self.by_status, "tokens": self.tokens,
                "cost_usd": round(self.cost, 6), "tools": self.tools}

    def top_records(self) -> List[Dict[str, Any]]:
        return [r for _, _, r in sorted(self.top, key=lambda item: (-item[0], -item[1]))]

    def concurrency(self) -> List[Tuple[float, int]]:
        """:func:`concurrency` of one bar per instance, from the start and end times alone, reduced while it is
        computed (no list of every change or step point)."""
        starts, ends = sorted(self.starts), sorted(self.ends)
        if 2 * len(starts) <= MAX_CONCURRENCY_POINTS:
            return _reduce_points(sorted([(t, 1) for t in starts] + [(t, -1) for t in ends]))
        t0, t1 = starts[0], max(starts[-1], ends[-1])
        width = (t1 - t0) / MAX_CONCURRENCY_POINTS or 1.0
        reduced: Dict[int, int] = {}
        level, i, j, n = 0, 0, 0, len(starts)
        prev: Optional[float] = None
        while i < n or j < n:
            if j < n and (i >= n or ends[j] <= starts[i]):  # at equal times ends first, as (t, -1) < (t, 1)
                t, delta = ends[j], -1
                j += 1
            else:
                t, delta = starts[i], 1
                i += 1
            if prev is not None and t != prev:  # the level at prev is final: one step point
                k = min(MAX_CONCURRENCY_POINTS - 1, int((prev - t0) / width))
                reduced[k] = max(reduced.get(k, 0), level)
            level += delta
            prev = t
        out = [(t0 + k * width, lvl) for k, lvl in sorted(reduced.items())]
        out.append((t1, level))
        return out


def _slim(r: Dict[str, Any], limit: int) -> Dict[str, Any]:
    """What the table and the timeline read of a sampled record (texts already cut to ``limit``): a large run's
    sample of 10,000 holds a fraction of the records' size."""
    tools = r.get("tools")
    return {
        "name": r["name"], "status": r.get("status"), "model": r.get("model"), "agent": r.get("agent"),
        "attempts": r.get("attempts"), "started_at": r.get("started_at"), "finished_at": r.get("finished_at"),
        "duration_s": r.get("duration_s"), "tokens": {k: v for k, v in _dict(r.get("tokens")).items()
                                                      if k in ("input", "output", "cache_creation", "cache_read",
                                                               "total")},
        "cost_usd": r.get("cost_usd"),
        "tools": {"": sum(_count(v) for v in tools.values())} if isinstance(tools, dict) else None,
        "error": untrusted.text(r.get("error"), limit), "result": untrusted.text(r.get("result"), limit),
        "stdout_log": r.get("stdout_log"), "stderr_log": r.get("stderr_log"),
    }


def _has_totals(doc: Dict[str, Any]) -> bool:
    t = doc.get("totals")
    return isinstance(t, dict) and isinstance(t.get("tokens"), dict) and isinstance(t.get("by_status"), dict)


def _totals(doc: Dict[str, Any], records: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The document's totals when they are well-formed, else recomputed from the instances."""
    t = doc.get("totals")
    if isinstance(t, dict) and _has_totals(doc):
        return {
            "instances": _count(t.get("instances")),
            "by_status": {str(k): _count(v) for k, v in t["by_status"].items()},
            "tokens": {k: _count(t["tokens"].get(k)) for k in (*TOKEN_KINDS, "total")},
            "cost_usd": _dollars(t.get("cost_usd")),
            "tools": {_name(k): _count(v) for k, v in (t.get("tools") or {}).items()}
            if isinstance(t.get("tools"), dict) else {},
        }
    by_status: Dict[str, int] = {}
    tokens = {k: 0 for k in (*TOKEN_KINDS, "total")}
    tools: Dict[str, int] = {}
    cost = 0.0
    for r in records:
        s = _status(r.get("status"))
        by_status[s] = by_status.get(s, 0) + 1
        rt = _dict(r.get("tokens"))
        for k in tokens:
            tokens[k] += _count(rt.get(k))
        for tool, n in (r.get("tools") or {}).items() if isinstance(r.get("tools"), dict) else ():
            tools[_name(tool)] = tools.get(_name(tool), 0) + _count(n)
        cost += _dollars(r.get("cost_usd"))
    return {"instances": len(records), "by_status": by_status, "tokens": tokens, "cost_usd": round(cost, 6),
            "tools": tools}


def _href(path: Any, base_dir: Optional[str]) -> Optional[str]:
    if not isinstance(path, str) or not path:
        return None
    if base_dir and os.path.isabs(path):
        try:
            path = os.path.relpath(path, base_dir)
        except ValueError:
            pass
    return urllib.parse.quote(path.replace(os.sep, "/"))


def _budget_html(label: str, used: float, limit: Optional[float], text: Callable[[float], str]) -> str:
    if not limit:
        return f'<div class="card"><span class="muted">{e(label)}</span><b>{e(text(used))}</b>no budget set</div>'
    pct = 100.0 * used / limit
    cls = ' class="over"' if pct >= 100 else ""
    return (f'<div class="card"><span class="muted">{e(label)}</span><b>{e(text(used))}</b>'
            f'of {e(text(limit))} ({pct:.0f} %)<div class="bar"><i{cls} style="width:{min(100.0, pct):.1f}%">'
            f'</i></div></div>')


def _legend(statuses: Iterable[str]) -> str:
    return '<p class="legend">' + "".join(
        f'<span><i class="st" style="background:{COLORS[s]}"></i>{e(s)}</span>' for s in statuses) + "</p>"


def _timeline_svg(rows: List[str], spans: Dict[str, List[Span]], t0: float, t1: float) -> str:
    label_w, width, row_h = 180, 1000, 14
    plot_w = width - label_w - 10
    scale = plot_w / max(t1 - t0, 1e-6)
    height = 24 + row_h * len(rows)
    parts = [f'<svg id="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             'xmlns="http://www.w3.org/2000/svg" role="img">']
    for i in range(5):
        x = label_w + plot_w * i / 4
        parts.append(f'<line x1="{x:.1f}" y1="16" x2="{x:.1f}" y2="{height}" stroke="#eef0f4"/>'
                     f'<text x="{x:.1f}" y="11" text-anchor="{"end" if i == 4 else "middle"}">'
                     f'+{e(fmt_duration((t1 - t0) * i / 4))}</text>')
    for i, name in enumerate(rows):
        y = 20 + i * row_h
        short = name if len(name) <= 28 else name[:27] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 10}" text-anchor="end">{e(short)}</text>')
        own = spans[name]
        for n, (start, end, outcome) in enumerate(own, 1):
            x = label_w + (start - t0) * scale
            w = max(1.0, (end - start) * scale)
            parts.append(f'<rect x="{x:.1f}" y="{y + 1}" width="{w:.1f}" height="{row_h - 3}" rx="2" '
                         f'fill="{COLORS.get(outcome, COLORS["failed"])}"><title>{e(name)} attempt {n}: '
                         f'{e(outcome)}, {e(fmt_duration(end - start))}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _concurrency_svg(points: List[Tuple[float, int]], t0: float, t1: float) -> str:
    width, height, left, bottom = 1000, 140, 40, 20
    plot_w, plot_h = width - left - 10, height - bottom - 10
    peak = max((lvl for _, lvl in points), default=0) or 1
    sx = plot_w / max(t1 - t0, 1e-6)
    path = [f"M{left},{height - bottom}"]
    level = 0
    for t, lvl in points:
        x = left + (t - t0) * sx
        path.append(f"L{x:.1f},{height - bottom - plot_h * level / peak:.1f}")
        path.append(f"L{x:.1f},{height - bottom - plot_h * lvl / peak:.1f}")
        level = lvl
    path.append(f"L{left + plot_w},{height - bottom - plot_h * level / peak:.1f}L{left + plot_w},{height - bottom}Z")
    return (f'<svg id="concurrency" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" role="img">'
            f'<path d="{"".join(path)}" fill="#3b7dd8" fill-opacity="0.35" stroke="#3b7dd8"/>'
            f'<text x="{left - 4}" y="16" text-anchor="end">{peak}</text>'
            f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>'
            f'<text x="{left}" y="{height - 4}">0s</text>'
            f'<text x="{left + plot_w}" y="{height - 4}" text-anchor="end">+{e(fmt_duration(t1 - t0))}</text></svg>')


def _group_table(title: str, key_name: str, groups: List[Tuple[str, Dict[str, float]]], table_id: str) -> str:
    top_cost = max((g["cost"] for _, g in groups), default=0.0) or 1.0
    rows = "".join(
        f'<tr><td>{e(k)}</td><td class="n">{int(g["instances"])}</td><td class="n">{fmt_int(int(g["input"]))}</td>'
        f'<td class="n">{fmt_int(int(g["output"]))}</td><td class="n">{fmt_int(int(g["cache_creation"]))}</td>'
        f'<td class="n">{fmt_int(int(g["cache_read"]))}</td><td class="n">{fmt_int(int(g["total"]))}</td>'
        f'<td class="n">{fmt_cost(g["cost"])}</td><td><div class="bar">'
        f'<i style="width:{100 * g["cost"] / top_cost:.1f}%"></i></div></td></tr>' for k, g in groups)
    return (f'<h2>{e(title)}</h2><table class="sortable" id="{table_id}"><thead><tr><th>{e(key_name)}</th>'
            '<th class="num">instances</th><th class="num">input</th><th class="num">output</th>'
            '<th class="num">cache write</th><th class="num">cache read</th><th class="num">tokens</th>'
            f'<th class="num">cost</th><th>share of cost</th></tr></thead><tbody>{rows}</tbody></table>')


def render(doc: Dict[str, Any], *, events: Optional[Iterable[Dict[str, Any]]] = None, base_dir: Optional[str] = None,
           budget: Optional[Dict[str, Optional[float]]] = None) -> str:
    """The report page of ``doc``. ``events``: the run journal's events; ``base_dir``: the directory the report
    is written in (log links are made relative to it); ``budget``: the batch's ``max_tokens``/``max_cost_usd``."""
    instances = doc.get("instances") or ()
    digest = (_Digest(instances, len(instances)) if hasattr(instances, "__len__") and len(instances) > MAX_TABLE_ROWS
              else None)
    if digest is not None:  # a large run (see "Bounded memory"): the table shows a sample; times from the records
        records = digest.sample
        events = None
    else:
        records = [r for r in instances if isinstance(r, dict) and isinstance(r.get("name"), str)]
    totals = digest.totals() if digest is not None and not _has_totals(doc) else _totals(doc, records)
    started, finished = _epoch(doc.get("started_at")), _epoch(doc.get("finished_at"))
    spans = attempt_spans(records, events, finished)
    all_times = [t for own in spans.values() for s in own for t in (s[0], s[1])]
    if digest is not None and digest.starts:
        all_times += [min(digest.starts), max(digest.ends)]
    t0 = min([t for t in (started, *all_times) if t is not None], default=0.0)
    t1 = max([t for t in (finished, *all_times) if t is not None], default=t0)
    status = _name(doc.get("status"), "unknown")
    run_id = _name(doc.get("run_id"), "run")
    duration = finished - started if started is not None and finished is not None else None
    budget = budget or {}
    n = digest.count if digest is not None else len(records)
    excerpt_limit = max(40, min(TEXT_LIMIT, EXCERPT_BUDGET // max(len(records) if digest is None else SAMPLE_ROWS,
                                                                 1)))

    out: List[str] = []
    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    out.append('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
               '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; '
               f'script-src \'sha256-{script_hash}\'; img-src data:; base-uri \'none\'; form-action \'none\'">'
               f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>orchestrator-pex run '
               f'{e(run_id)}</title><style>{_CSS}{_status_css()}</style></head><body>')
    out.append(f'<h1>Run <span id="run-id">{e(run_id)}</span></h1><p class="muted">batch {e(doc.get("batch"))} · '
               f'started {e(_clock(started))} UTC · finished {e(_clock(finished))} UTC · orchestrator-pex '
               f'{e(doc.get("orchestrator_version") or "-")} · agent {e(doc.get("agent_version") or "-")}</p>')

    # summary
    tok = totals["tokens"]
    out.append('<h2>Summary</h2><div class="cards">')
    out.append(f'<div class="card"><span class="muted">status</span><b id="sum-status" style="color:'
               f'{COLORS.get(status, "#1d2330")}">{e(status)}</b></div>')
    out.append(f'<div class="card"><span class="muted">duration</span><b id="sum-duration">{e(fmt_duration(duration))}'
               '</b></div>')
    out.append(f'<div class="card"><span class="muted">instances</span><b id="sum-instances">{totals["instances"]}'
               '</b></div>')
    for s in STATUS_ORDER:
        count = totals["by_status"].get(s, 0)
        if count:
            out.append(f'<div class="card"><span class="muted"><i class="st" style="background:{COLORS[s]}"></i>{e(s)}'
                       f'</span><b id="sum-status-{e(s)}">{count}</b></div>')
    out.append(_budget_html("tokens", tok["total"], budget.get("max_tokens"), lambda v: fmt_int(int(v)))
               .replace("<b>", '<b id="sum-tokens">', 1))
    out.append(_budget_html("cost", totals["cost_usd"], budget.get("max_cost_usd"), fmt_cost)
               .replace("<b>", '<b id="sum-cost">', 1))
    out.append("</div>")
    out.append('<table id="token-kinds"><tr>' + "".join(f"<th>{e(k)}</th>" for k in (*TOKEN_KINDS, "total")) +
               "</tr><tr>" + "".join(f'<td class="n" id="sum-tokens-{k}">{fmt_int(tok[k])}</td>'
                                     for k in (*TOKEN_KINDS, "total")) + "</tr></table>")

    # timeline and concurrency
    out.append("<h2>Timeline</h2>")
    if spans:
        rows, sampled = timeline_rows(records, spans)
        attempts = sum(len(v) for v in spans.values()) if digest is None else len(digest.starts)
        source = "journal" if events is not None else "results (one bar per instance)"
        drawn_of = len(digest.starts) if digest is not None else len(spans)
        sampled = sampled or len(rows) < drawn_of
        note = (f"showing {len(rows)} of {drawn_of} instances: every one that did not succeed first, then an even "
                "sample of the others; the table below lists " + ("all" if digest is None else "a sample")
                if sampled else f"{len(rows)} instances")
        out.append(f'<p class="muted" id="timeline-note">{e(note)}; {attempts} attempts; times from the '
                   f'{e(source)}.</p>')
        outcomes = sorted({o for v in spans.values() for _, _, o in v}, key=lambda s: list(COLORS).index(s))
        out.append(_legend(outcomes))
        out.append(_timeline_svg(rows, spans, t0, t1))
        out.append("<h2>Concurrency</h2>")
        points = concurrency(spans) if digest is None else digest.concurrency()
        peak = max((lvl for _, lvl in points), default=0)
        out.append(f'<p class="muted">attempts running at once; peak <b id="peak-concurrency">{peak}</b></p>')
        out.append(_concurrency_svg(points, t0, t1))
    else:
        out.append('<p class="muted">no instance started.</p>')

    # money
    per_model = _aggregate(records, _by_model) if digest is None else _sorted_groups(digest.per_model)
    per_agent = _aggregate(records, _by_agent) if digest is None else _sorted_groups(digest.per_agent)
    out.append(_group_table("Tokens and cost per model", "model", per_model, "per-model"))
    out.append(_group_table("Tokens and cost per agent", "agent", per_agent, "per-agent"))
    top = sorted(records, key=_cost_key)[:TOP_INSTANCES] if digest is None else digest.top_records()
    top_cost = max((_dollars(r.get("cost_usd")) for r in top), default=0.0) or 1.0
    out.append(f"<h2>Cost per instance (top {len(top)})</h2><table id=\"top-cost\">")
    for r in top:
        c = _dollars(r.get("cost_usd"))
        out.append(f'<tr><td>{e(r["name"])}</td><td class="n">{fmt_cost(c)}</td><td><div class="bar">'
                   f'<i style="width:{100 * c / top_cost:.1f}%"></i></div></td></tr>')
    out.append("</table>")

    tools = sorted(totals["tools"].items(), key=lambda kv: (-kv[1], kv[0]))
    out.append('<h2>Tools used</h2>')
    if tools:
        top_tool = tools[0][1] or 1
        out.append('<table class="sortable" id="tools"><thead><tr><th>tool</th><th class="num">calls</th><th></th></tr>'
                   '</thead><tbody>' + "".join(
                       f'<tr><td>{e(k)}</td><td class="n">{v}</td><td><div class="bar"><i style="width:'
                       f'{100 * v / top_tool:.1f}%"></i></div></td></tr>' for k, v in tools) + "</tbody></table>")
    else:
        out.append('<p class="muted">no tool calls.</p>')

    # instances
    shown = "" if digest is None else (
        f'<span id="table-note">the table shows {len(records)} of the {n} instances (more than {MAX_TABLE_ROWS}): '
        'every one that did not succeed first, then an even sample of the others; results.json lists all. </span>')
    out.append(f'<h2>Instances ({n})</h2><p class="muted">{shown}click a column to sort; errors and result excerpts '
               f'are cut to {excerpt_limit} characters; logs are linked relative to this file.</p>')
    out.append('<table class="sortable" id="instances"><thead><tr><th>name</th><th>status</th><th>model</th>'
               '<th>agent</th><th class="num">attempts</th><th>started (UTC)</th><th class="num">duration s</th>'
               '<th class="num">input</th><th class="num">output</th><th class="num">cache</th>'
               '<th class="num">tokens</th><th class="num">cost $</th><th class="num">tools</th>'
               '<th>error / result / logs</th></tr></thead><tbody>')
    for r in records:
        st = _status(r.get("status"))
        t = _dict(r.get("tokens"))
        tools_n = sum(_count(v) for v in r["tools"].values()) if isinstance(r.get("tools"), dict) else 0
        dur = r.get("duration_s")
        dur_text = f"{dur:.1f}" if untrusted.dollars(dur) is not None else "-"
        detail = []
        err = untrusted.text(r.get("error"), excerpt_limit)
        if err:
            detail.append(f'<div class="err">{e(err)}</div>')
        res = untrusted.text(r.get("result"), excerpt_limit)
        if res:
            detail.append(f"<div>{e(res)}</div>")
        links = [f'<a href="{e(h)}">{k}</a>' for k, h in (("stdout", _href(r.get("stdout_log"), base_dir)),
                                                          ("stderr", _href(r.get("stderr_log"), base_dir))) if h]
        if links:
            detail.append(" ".join(links))
        started_at = _epoch(r.get("started_at"))
        out.append(
            f'<tr><td>{e(r["name"])}</td><td><i class="st s-{st}"></i>{e(st)}</td>'
            f'<td>{e(_name(r.get("model")))}</td><td>{e(_name(r.get("agent"), "claude"))}</td>'
            f'<td>{_count(r.get("attempts"))}</td>'
            f'<td>{e(_clock(started_at)[11:] if started_at else "-")}</td>'
            f'<td>{dur_text}</td><td>{_count(t.get("input"))}</td><td>{_count(t.get("output"))}</td>'
            f'<td>{_count(t.get("cache_creation")) + _count(t.get("cache_read"))}</td>'
            f'<td>{_count(t.get("total"))}</td><td>{_dollars(r.get("cost_usd")):.6f}</td>'
            f'<td>{tools_n}</td><td class="d">{"".join(detail)}</td></tr>')
    out.append("</tbody></table>")
    out.append(f'<p class="muted">generated {e(_clock(datetime.datetime.now(datetime.timezone.utc).timestamp()))} UTC '
               'by orchestrator-pex report</p>')
    out.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "".join(out)


def write(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (temporary file in the same directory, fsync, rename).

    Mode 0600 like ``results.json``: the page holds the agents' output."""
    atomic_file.write_text(path, text, prefix=".report.")


def budget_of(batch: Any) -> Dict[str, Optional[float]]:
    """``max_tokens``/``max_cost_usd`` of a loaded batch's ``[budget]`` (None when unset)."""
    b = getattr(batch, "budget", None)
    return {"max_tokens": getattr(b, "max_tokens", None), "max_cost_usd": getattr(b, "max_cost_usd", None)}


def load_budget(run_dir: str, doc: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """The batch budget from the run directory's batch copy (empty when it cannot be read: the page says so)."""
    from orchestrator_pex import config

    copy = doc.get("batch_copy") if isinstance(doc.get("batch_copy"), str) else None
    for name in ([copy] if copy else []) + ["batch.toml", "batch.json"]:
        path = os.path.join(run_dir, os.path.basename(name))
        if os.path.isfile(path):
            try:
                with open(path, "rb") as f:
                    return budget_of(config.parse_batch(f.read(), path))
            except Exception:  # noqa: BLE001 - a copy that no longer parses only costs the budget bar
                return {}
    return {}


def write_for_run(run_dir: str, doc: Dict[str, Any], path: Optional[str] = None,
                  budget: Optional[Dict[str, Optional[float]]] = None) -> str:
    """Write the report of the run in ``run_dir`` (attempt times from its journal) to ``path`` (default
    ``RUN_DIR/report.html``); returns the path. Raises ``OSError`` when it cannot be written."""
    from orchestrator_pex import journal

    path = path or os.path.join(run_dir, "report.html")
    events: Optional[List[Dict[str, Any]]] = None
    instances = doc.get("instances") or ()
    if not (hasattr(instances, "__len__") and len(instances) > MAX_TABLE_ROWS):  # else not read: "Bounded memory"
        try:
            events, _ = journal.read_journal(journal.journal_path(run_dir))
        except Exception:  # noqa: BLE001 - no usable journal: times from the records
            events = None
    if budget is None:
        budget = load_budget(run_dir, doc)
    write(path, render(doc, events=events, base_dir=os.path.dirname(os.path.abspath(path)), budget=budget))
    return path
