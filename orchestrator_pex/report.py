"""Report: what a person or a log collector sees while a batch runs, and the summary at the end.

Forms (``--progress``), all on stderr (stdout is reserved for ``--json`` and ``--dry-run``):

* ``table`` — a live view redrawn in place every second and on every event: a header (progress bar, done/total,
  elapsed, ETA, tokens, spend against the batch budget when there is one), then one row per instance. It reads the
  terminal size at every redraw and never draws a line as wide as the terminal nor more lines than it is tall:
  running instances come first, then failed, then succeeded, then pending ones, each group in batch order; what does
  not fit is folded into one count line; columns are dropped by priority (NAME, STATE, TIME, TOKENS, COST first;
  BUDGET, MODEL, CACHE, TOOLS, ATT, TAGS later). Event lines scroll above it; when the run ends the view is erased, so
  scrollback keeps the event lines and the final summary table once, never redrawn copies.
* ``lines`` — plain timestamped lines (no escape codes) per event, and a one-line summary every ``summary_every``
  seconds: for cron, Ansible, systemd;
* ``json`` — one JSON object per event (``--json-logs``), plus a ``progress`` event every ``summary_every`` seconds;
* ``none`` — nothing while the run goes on (warnings still appear).

``auto`` (the default) is ``table`` when stderr is a terminal whose ``TERM`` is not ``dumb``, else ``lines``.

Columns: TOKENS are all tokens (input, output, cache creation and cache read); CACHE is the part of them read from or
written to the prompt cache; COST is dollars (the agent's own figure, or an estimate); BUDGET is the share of the
instance's own ``max_tokens``/``max_cost_usd`` used; ATT is the attempt number.

A report is a sink: the scheduler awaits :meth:`Console.emit` for each event; :meth:`Console.tick` is called
periodically by the runner. The console reads the batch only through ``view``, a function returning a fresh
:class:`~orchestrator_pex.progress.Progress` snapshot.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from orchestrator_pex import strictjson
from orchestrator_pex.errors import plural
from orchestrator_pex.progress import ACTIVE, Progress, Row
from orchestrator_pex.records import ProgressEvent, WarningEvent, event_to_json
from orchestrator_pex.results import iso
from orchestrator_pex.vocabulary import SCHEMA_VERSION, InstanceStatus

PROGRESS_MODES = ("auto", "table", "lines", "json", "none")
_CLEAR_LINE = "\x1b[2K"
_ERASE_DOWN = "\x1b[J"
#: group order of rows in the live view (lower first); states not named here sort with the failures
_GROUP: Dict[str, int] = {InstanceStatus.RUNNING: 0, InstanceStatus.RETRYING: 0, InstanceStatus.SUCCEEDED: 2,
                          InstanceStatus.PENDING: 3}


def _up(n: int) -> str:
    return f"\x1b[{n}F" if n else ""


def fmt_tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    return str(n)


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def choose_mode(progress: str, stream: Optional[TextIO] = None) -> str:
    """The concrete form for ``--progress`` (``auto`` looks at ``stream``, default ``sys.stderr``, and ``$TERM``)."""
    if progress != "auto":
        return progress
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except ValueError:
        tty = False
    return "table" if tty and os.environ.get("TERM", "dumb") != "dumb" else "lines"


# -- the live table ------------------------------------------------------------------------------------------------

#: (title, priority: lower is kept longer, minimum width, right-aligned)
_COLUMNS: Tuple[Tuple[str, int, int, bool], ...] = (
    ("NAME", 0, 8, False), ("STATE", 0, 9, False), ("TIME", 1, 5, True), ("TOKENS", 1, 6, True),
    ("COST", 2, 7, True), ("BUDGET", 3, 6, False), ("MODEL", 4, 5, False), ("CACHE", 5, 5, True),
    ("TOOLS", 6, 5, True), ("ATT", 7, 3, True), ("TAGS", 8, 4, False),
)


def _cells(row: Row, now: float) -> Dict[str, str]:
    waiting = row.state == InstanceStatus.PENDING
    return {
        "NAME": row.name, "STATE": row.state, "TIME": fmt_duration(row.duration(now)),
        "TOKENS": "-" if waiting else fmt_tokens(row.tokens), "COST": "-" if waiting else f"${row.cost_usd:.4f}",
        "BUDGET": row.budget or "-", "MODEL": row.model or "-", "CACHE": "-" if waiting else fmt_tokens(row.cache),
        "TOOLS": "-" if waiting else str(row.tools), "ATT": str(row.attempts) if row.attempts else "-",
        "TAGS": ",".join(row.tags)[:24] or "-",
    }


def _bar(fraction: float, width: int) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def header_lines(p: Progress, now: float, width: int) -> List[str]:
    """The live view's header: progress and spend, then instances per state; each fitted to ``width``."""
    elapsed = now - p.started_at
    eta = p.eta(now)
    spend = f"${p.cost_usd:.4f}"
    if p.budget_cost_usd:
        spend += f" of ${p.budget_cost_usd:g} budget ({100 * p.cost_usd / p.budget_cost_usd:.0f}%)"
    tokens = f"{fmt_tokens(p.tokens)} tokens"
    if p.budget_tokens:
        tokens += f" of {fmt_tokens(p.budget_tokens)} ({100 * p.tokens // p.budget_tokens}%)"
    parts = [f"{p.done}/{p.total} done", f"{fmt_duration(elapsed)} elapsed",
             f"ETA {fmt_duration(eta)}" if eta is not None else "ETA -", tokens, spend]
    first = _fit_parts(parts, width, bar=True, fraction=p.done / p.total if p.total else 1.0)
    counts = p.counts()
    order = sorted(counts, key=lambda s: (_GROUP.get(s, 1), s != InstanceStatus.RUNNING, s))
    second = _fit_parts([f"{counts[s]} {s}" for s in order], width)
    return [first, second]


def _fit_parts(parts: Sequence[str], width: int, bar: bool = False, fraction: float = 0.0) -> str:
    """Join ``parts`` with separators, dropping trailing parts (then the bar) until the line fits ``width``."""
    parts = list(parts)
    while True:
        text = " · ".join(parts)
        if bar:
            room = width - len(text) - 1
            if room >= 12:
                return _bar(fraction, min(30, room - 2)) + " " + text
        if len(text) <= width or len(parts) <= 1:
            return text[:width]
        parts.pop()


def render_table(p: Progress, width: int, height: int, now: float) -> List[str]:
    """The live view for a ``width`` x ``height`` terminal: at most ``height`` lines, each shorter than ``width``."""
    width = max(20, width - 1)  # never write into the last column: no terminal wraps the line then
    height = max(4, height)
    lines = header_lines(p, now, width)
    ordered = sorted(p.rows, key=lambda r: _GROUP.get(r.state, 1))  # stable: batch order within a group
    room = height - len(lines) - 1  # minus the column titles
    shown = ordered if len(ordered) <= room else ordered[: max(0, room - 1)]
    folded = ordered[len(shown):]
    cells = [_cells(r, now) for r in shown]
    columns = [c for c in _COLUMNS if (c[0] != "BUDGET" or any(r.budget for r in shown))
               and (c[0] != "TAGS" or any(r.tags for r in shown))]
    widths = {t: max([len(t)] + [len(c[t]) for c in cells]) for t, *_ in columns}

    def total(cols: Sequence[Tuple[str, int, int, bool]]) -> int:
        return sum(widths[t] for t, *_ in cols) + 2 * (len(cols) - 1)

    while total(columns) > width and len(columns) > 2:
        drop = max(columns[2:], key=lambda c: (c[1], columns.index(c)))
        columns.remove(drop)
    if total(columns) > width:  # only NAME and STATE left: shorten the names
        widths["NAME"] = max(8, width - widths["STATE"] - 2)
    titles = [(t, widths[t], right) for t, _, _, right in columns]

    def fmt(values: Dict[str, str]) -> str:
        out = []
        for t, w, right in titles:
            v = values[t]
            if len(v) > w:
                v = v[: max(1, w - 1)] + "…"
            out.append(v.rjust(w) if right else v.ljust(w))
        return "  ".join(out).rstrip()[:width]

    lines.append(fmt({t: t for t, _, _ in titles}))
    lines.extend(fmt(c) for c in cells)
    if folded:
        counts: Dict[str, int] = {}
        for r in folded:
            counts[r.state] = counts.get(r.state, 0) + 1
        text = ", ".join(f"{n} {s}" for s, n in counts.items())
        lines.append(f"… {len(folded)} more: {text}"[:width])
    return lines[:height]


class Console:
    def __init__(self, mode: str, stream: Optional[TextIO] = None, summary_every: float = 10.0,
                 scrub: Callable[[str], str] = lambda s: s) -> None:
        if mode == "tty":  # the old name of the table form
            mode = "table"
        self.mode = mode
        #: sys.stderr as it is now (cli.whole_writes may have replaced the one of import time)
        self.stream = sys.stderr if stream is None else stream
        self.summary_every = summary_every
        self.scrub = scrub
        #: returns a fresh Progress snapshot; set by the runner once the batch exists
        self.view: Optional[Callable[[], Progress]] = None
        self._drawn: List[int] = []  # lengths of the lines of the view on screen now
        self._drawn_width = 0
        self._last_summary = time.monotonic()

    # -- sink ------------------------------------------------------------------------------------------------------

    async def emit(self, event: Dict[str, Any]) -> None:
        if self.mode == "json":
            self._write(strictjson.dumps({"schema_version": SCHEMA_VERSION, "ts": iso(time.time()), **event},
                                   ensure_ascii=False) + "\n")
            return
        if self.mode == "none":
            return
        text = self._describe(event)
        if text is None:
            return
        if self.mode == "table":
            self._erase()
            self._write(text + "\n")
            self._draw()
        else:
            self._write(f"{iso(time.time())} {text}\n")

    def note(self, message: str) -> None:
        """A warning that is not an event of its own (budget crossed in warn mode, skipped lines...)."""
        if self.mode == "json":
            self._write(strictjson.dumps({"schema_version": SCHEMA_VERSION, "ts": iso(time.time()),
                                          **event_to_json(WarningEvent(self.scrub(message)))},
                                         ensure_ascii=False) + "\n")
        elif self.mode == "table":
            self._erase()
            self._write(f"warning: {self.scrub(message)}\n")
            self._draw()
        else:
            self._write(f"{iso(time.time())} warning: {self.scrub(message)}\n")

    def tick(self) -> None:
        """Redraw the table, or print the periodic summary line (lines) / ``progress`` event (json)."""
        if self.mode == "table":
            self._erase()
            self._draw()
            return
        if self.mode not in ("lines", "json") or self.view is None:
            return
        now = time.monotonic()
        if now - self._last_summary < self.summary_every:
            return
        self._last_summary = now
        if self.mode == "lines":
            self._write(f"{iso(time.time())} {self.summary_line()}\n")
        else:
            self._write(strictjson.dumps({"ts": iso(time.time()), **progress_event(self.view(), time.time())}) + "\n")

    def close(self) -> None:
        if self.mode == "table":
            self._erase()

    # -- text ------------------------------------------------------------------------------------------------------

    def _describe(self, event: Dict[str, Any]) -> Optional[str]:
        kind = event.get("event")
        if kind == "run_started":
            return (f"run {event['run_id']} started: {plural(event['instances'], 'instance')} "
                    f"from {event['batch']}")
        if kind == "instance_started":
            again = f" (attempt {event['attempt']})" if event.get("attempt", 1) > 1 else ""
            return f"{event['name']}: started{again}"
        if kind == "instance_retry":
            return (f"{event['name']}: API error {event['api_error_status']}, retrying in {event['delay_s']:g}s "
                    f"(attempt {event['attempt'] + 1})")
        if kind == "instance_finished":
            r = event["record"]
            if r["status"] == InstanceStatus.NOT_STARTED and self.mode == "table":
                return None
            parts = [f"{r['name']}: {r['status']}"]
            if r["api_error_status"]:
                parts.append(f"api {r['api_error_status']}")
            if r["attempts"] and r["cost_source"]:
                parts.append(f"{fmt_duration(r['duration_s'])}, {fmt_tokens(r['tokens']['total'])} tokens, "
                             f"${r['cost_usd']:.4f} ({r['cost_source']})")
            elif r["attempts"]:
                parts.append(fmt_duration(r["duration_s"]))
            if r["error"] and r["status"] != InstanceStatus.SUCCEEDED:
                parts.append(self.scrub(r["error"]))
            return " — ".join(parts)
        if kind == "warning":
            return f"warning: {self.scrub(event['message'])}"
        if kind == "run_finished":
            t = event["totals"]
            return (f"run finished: {event['status']} — {plural(t['instances'], 'instance')}, "
                    f"{fmt_tokens(t['tokens']['total'])} tokens, ${t['cost_usd']:.4f}")
        return None

    def summary_line(self) -> str:
        if self.view is None:
            return "summary: -"
        p = self.view()
        states = ", ".join(f"{n} {k}" for k, n in p.counts().items())
        return (f"summary: {p.done}/{p.total} done ({states}); {fmt_tokens(p.tokens)} tokens, "
                f"${p.cost_usd:.4f}")

    def _size(self) -> Tuple[int, int]:
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (AttributeError, ValueError, OSError):
            return 80, 24
        # A pseudo-terminal nobody sized reports 0 x 0: assume the classic 80 x 24.
        return size.columns or 80, size.lines or 24

    def _draw(self) -> None:
        if self.view is None:
            return
        width, height = self._size()
        # Two rows stay free: the cursor's, and one above the view, so erasing the view never clears the whole
        # screen from its top-left corner (tmux and others then push the screen into the scrollback first).
        lines = render_table(self.view(), width, max(4, height - 2), time.time())
        self._write("".join(_CLEAR_LINE + line + "\n" for line in lines))
        self._drawn = [len(line) for line in lines]
        self._drawn_width = width

    def _erase(self) -> None:
        if not self._drawn:
            return
        width, height = self._size()
        rows = len(self._drawn)
        if width < self._drawn_width:  # the terminal shrank: a terminal that rewraps made long lines taller
            rows = sum(max(1, math.ceil(n / max(1, width))) for n in self._drawn)
        # What scrolled above the screen (it shrank) is in the scrollback already; never start erasing at row 0.
        self._write(_up(min(rows, max(1, height - 1))) + _ERASE_DOWN)
        self._drawn = []

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass


def progress_event(p: Progress, now: float) -> Dict[str, Any]:
    """The periodic ``progress`` event of ``--json-logs`` (and ``runs watch --json``)."""
    eta = p.eta(now)
    return {"schema_version": SCHEMA_VERSION, **event_to_json(ProgressEvent(
        p.done, p.total, p.counts(), sum(1 for r in p.rows if r.state in ACTIVE), round(now - p.started_at, 3),
        None if eta is None else round(eta, 3), p.tokens, round(p.cost_usd, 6),
        {"max_tokens": p.budget_tokens, "max_cost_usd": p.budget_cost_usd}))}


def summary_table(doc: Dict[str, Any]) -> str:
    """The final table: one row per instance and a totals row (TOKENS and CACHE as in the live view)."""
    rows = [["NAME", "STATUS", "MODEL", "TIME", "TOKENS", "CACHE", "TOOLS", "COST", "SOURCE"]]
    for r in doc["instances"]:
        t = r["tokens"]
        cache = t["cache_read"] + t["cache_creation"]
        rows.append([r["name"], r["status"] + (f" ({r['api_error_status']})" if r["api_error_status"] else ""),
                     r["model"] or "-", fmt_duration(r["duration_s"]), fmt_tokens(t["total"]),
                     fmt_tokens(cache), str(sum(r["tools"].values())), f"${r['cost_usd']:.4f}",
                     r["cost_source"] or "-"])
    tot = doc["totals"]
    t = tot["tokens"]
    rows.append(["TOTAL", doc["status"], "", "", fmt_tokens(t["total"]),
                 fmt_tokens(t["cache_read"] + t["cache_creation"]), str(sum(tot["tools"].values())),
                 f"${tot['cost_usd']:.4f}", ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
