"""Report: what a person or a log collector sees while a batch runs, and the summary at the end.

Three forms, all on stderr (stdout is reserved for ``--json`` and ``--dry-run``):

* ``tty`` — a live status table redrawn in place at least every second;
* ``lines`` — plain timestamped lines (no escape codes) per event, and a one-line summary every
  ``summary_every`` seconds: for cron, Ansible, systemd;
* ``json`` — one JSON object per event (``--json-logs``).

A report is a sink: the scheduler awaits :meth:`Console.emit` for each event; :meth:`Console.tick` is called
periodically by the runner.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, Dict, List, Optional, TextIO

from orchestrator_pex.results import iso

_CLEAR_LINE = "\x1b[2K"


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
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Console:
    def __init__(self, mode: str, stream: TextIO = sys.stderr, summary_every: float = 10.0,
                 scrub: Callable[[str], str] = lambda s: s) -> None:
        self.mode = mode
        self.stream = stream
        self.summary_every = summary_every
        self.scrub = scrub
        self.scheduler = None  # set by the runner; the table reads its states
        self._drawn = 0
        self._last_summary = time.monotonic()

    # -- sink ------------------------------------------------------------------------------------------------------

    async def emit(self, event: Dict[str, Any]) -> None:
        if self.mode == "json":
            self._write(json.dumps({"ts": iso(time.time()), **event}, ensure_ascii=False) + "\n")
            return
        text = self._describe(event)
        if text is None:
            return
        if self.mode == "tty":
            self._erase()
            self._write(text + "\n")
            self._draw()
        else:
            self._write(f"{iso(time.time())} {text}\n")

    def note(self, message: str) -> None:
        """A warning that is not an event of its own (budget crossed in warn mode, skipped lines...)."""
        if self.mode == "json":
            self._write(json.dumps({"ts": iso(time.time()), "event": "warning", "message": self.scrub(message)}) + "\n")
        elif self.mode == "tty":
            self._erase()
            self._write(f"warning: {self.scrub(message)}\n")
            self._draw()
        else:
            self._write(f"{iso(time.time())} warning: {self.scrub(message)}\n")

    def tick(self) -> None:
        """Redraw the table (tty) or print the periodic one-line summary (lines)."""
        if self.mode == "tty":
            self._erase()
            self._draw()
        elif self.mode == "lines" and self.scheduler is not None:
            now = time.monotonic()
            if now - self._last_summary >= self.summary_every:
                self._last_summary = now
                self._write(f"{iso(time.time())} {self.summary_line()}\n")

    def close(self) -> None:
        if self.mode == "tty":
            self._erase()

    # -- text ------------------------------------------------------------------------------------------------------

    def _describe(self, event: Dict[str, Any]) -> Optional[str]:
        kind = event.get("event")
        if kind == "run_started":
            return f"run {event['run_id']} started: {event['instances']} instances from {event['batch']}"
        if kind == "instance_started":
            again = f" (attempt {event['attempt']})" if event.get("attempt", 1) > 1 else ""
            return f"{event['name']}: started{again}"
        if kind == "instance_retry":
            return (f"{event['name']}: API error {event['api_error_status']}, retrying in {event['delay_s']:g}s "
                    f"(attempt {event['attempt'] + 1})")
        if kind == "instance_finished":
            r = event["record"]
            if r["status"] == "not-started" and self.mode == "tty":
                return None
            parts = [f"{r['name']}: {r['status']}"]
            if r["api_error_status"]:
                parts.append(f"api {r['api_error_status']}")
            if r["attempts"] and r["cost_source"]:
                parts.append(f"{fmt_duration(r['duration_s'])}, {fmt_tokens(r['tokens']['total'])} tokens, "
                             f"${r['cost_usd']:.4f} ({r['cost_source']})")
            elif r["attempts"]:
                parts.append(fmt_duration(r["duration_s"]))
            if r["error"] and r["status"] != "succeeded":
                parts.append(self.scrub(r["error"]))
            return " — ".join(parts)
        if kind == "warning":
            return f"warning: {self.scrub(event['message'])}"
        if kind == "run_finished":
            t = event["totals"]
            return (f"run finished: {event['status']} — {t['instances']} instances, {fmt_tokens(t['tokens']['total'])}"
                    f" tokens, ${t['cost_usd']:.4f}")
        return None

    def summary_line(self) -> str:
        counts: Dict[str, int] = {}
        for s in self.scheduler.states:
            counts[s.status] = counts.get(s.status, 0) + 1
        states = ", ".join(f"{n} {k}" for k, n in counts.items())
        return f"summary: {states}; {fmt_tokens(self.scheduler.tokens)} tokens, ${self.scheduler.cost:.4f}"

    def rows(self) -> List[List[str]]:
        rows = [["NAME", "STATE", "MODEL", "TIME", "TOKENS", "CACHE", "TOOLS", "COST", "BUDGET"]]
        for s in self.scheduler.states:
            a = s.current
            acct = a.acct if a else None
            if a and a.finished_at:
                duration = a.finished_at - s.attempts[0].started_at
            elif a and a.started_at:
                duration = time.time() - s.attempts[0].started_at
            else:
                duration = None
            inst = s.launch.instance
            limit = []
            if inst.max_tokens:
                limit.append(f"{100 * s.tokens() // inst.max_tokens}%tok")
            if inst.max_cost_usd:
                limit.append(f"{100 * s.cost() / inst.max_cost_usd:.0f}%$")
            tokens = s.tokens()
            cache = sum(x.acct.cache_read + x.acct.cache_creation for x in s.attempts)
            tools = sum(sum(x.acct.tools.values()) for x in s.attempts)
            rows.append([
                s.launch.name[:28], s.status, (acct.model or "-")[:22] if acct else "-", fmt_duration(duration),
                fmt_tokens(tokens - cache), fmt_tokens(cache), str(tools), f"${s.cost():.4f}", " ".join(limit) or "-",
            ])
        return rows

    def _draw(self) -> None:
        if self.scheduler is None:
            return
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.append(self.summary_line())
        self._write("".join(_CLEAR_LINE + line + "\n" for line in lines))
        self._drawn = len(lines)

    def _erase(self) -> None:
        if self._drawn:
            self._write(_up(self._drawn) + "\x1b[J")
            self._drawn = 0

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass


def summary_table(doc: Dict[str, Any]) -> str:
    """The final table: one row per instance and a totals row."""
    rows = [["NAME", "STATUS", "MODEL", "TIME", "TOKENS", "CACHE", "TOOLS", "COST", "SOURCE"]]
    for r in doc["instances"]:
        t = r["tokens"]
        cache = t["cache_read"] + t["cache_creation"]
        rows.append([r["name"], r["status"] + (f" ({r['api_error_status']})" if r["api_error_status"] else ""),
                     r["model"] or "-", fmt_duration(r["duration_s"]), fmt_tokens(t["input"] + t["output"]),
                     fmt_tokens(cache), str(sum(r["tools"].values())), f"${r['cost_usd']:.4f}",
                     r["cost_source"] or "-"])
    tot = doc["totals"]
    t = tot["tokens"]
    rows.append(["TOTAL", doc["status"], "", "", fmt_tokens(t["input"] + t["output"]),
                 fmt_tokens(t["cache_read"] + t["cache_creation"]), str(sum(tot["tools"].values())),
                 f"${tot['cost_usd']:.4f}", ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
