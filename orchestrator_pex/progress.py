"""Progress: a read-only snapshot of a batch, the one thing every live view draws.

A :class:`Progress` is built either from a running scheduler (:func:`from_scheduler`, what ``run`` shows) or from a
run's journal (:func:`from_journal`, what ``runs show`` and ``runs watch`` show for a run started elsewhere, e.g. by
cron). Views never hold the scheduler: they call a function that returns a fresh snapshot, so nothing a view does
can change the run.

Semantics of the numbers:

* ``tokens`` of a row or the batch are *all* tokens (input + output + cache creation + cache read); ``cache`` is the
  part of ``tokens`` read from or written to the prompt cache. Every view says ``TOKENS`` and ``CACHE`` with these
  meanings.
* ``state`` is ``pending``, ``running``, ``retrying`` or a final instance status (see :mod:`vocabulary`).
* :attr:`Progress.done` counts instances with a final status; :meth:`Progress.eta` extrapolates the mean time per
  finished instance over the ones left (``None`` until one has finished).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import attrs

from orchestrator_pex import records
from orchestrator_pex.results import epoch
from orchestrator_pex.vocabulary import ACTIVE_STATUSES, InstanceStatus

ACTIVE = ACTIVE_STATUSES
WAITING = (InstanceStatus.PENDING,)


@attrs.frozen
class Row:
    """One instance as a view shows it."""

    name: str
    state: str
    model: Optional[str] = None
    started_at: Optional[float] = None  # wall clock of the first attempt
    finished_at: Optional[float] = None
    attempts: int = 0
    tokens: int = 0
    cache: int = 0
    tools: int = 0
    cost_usd: float = 0.0
    budget: Optional[str] = None  # share of the instance's own max_tokens / max_cost_usd used, e.g. "40%tok"
    tags: Tuple[str, ...] = ()

    def duration(self, now: float) -> Optional[float]:
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at


@attrs.frozen
class Progress:
    """The whole batch at one moment; ``rows`` in batch order."""

    rows: Tuple[Row, ...]
    started_at: float
    tokens: int = 0
    cost_usd: float = 0.0
    budget_tokens: Optional[int] = None
    budget_cost_usd: Optional[float] = None
    finished: bool = False

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def done(self) -> int:
        return sum(1 for r in self.rows if r.state not in ACTIVE and r.state not in WAITING)

    def counts(self) -> Dict[str, int]:
        """Instances per state, in the order states first appear in the batch."""
        out: Dict[str, int] = {}
        for r in self.rows:
            out[r.state] = out.get(r.state, 0) + 1
        return out

    def eta(self, now: float) -> Optional[float]:
        done, left = self.done, self.total - self.done
        if not done or not left:
            return 0.0 if not left else None
        return (now - self.started_at) / done * left


def _budget_share(tokens: int, cost: float, max_tokens: Optional[int], max_cost: Optional[float]) -> Optional[str]:
    parts = []
    if max_tokens:
        parts.append(f"{100 * tokens // max_tokens}%tok")
    if max_cost:
        parts.append(f"{100 * cost / max_cost:.0f}%$")
    return " ".join(parts) or None


def row_from_record(record: Mapping[str, Any], tags: Sequence[str] = ()) -> Row:
    """A finished instance's row, from its results record."""
    tokens = record.get("tokens") or {}
    started, finished = _epoch(record.get("started_at")), _epoch(record.get("finished_at"))
    return Row(
        name=str(record.get("name")), state=str(record.get("status")), model=record.get("model"),
        started_at=started, finished_at=finished or started, attempts=int(record.get("attempts") or 0),
        tokens=int(tokens.get("total") or 0),
        cache=int(tokens.get("cache_read") or 0) + int(tokens.get("cache_creation") or 0),
        tools=sum((record.get("tools") or {}).values()), cost_usd=float(record.get("cost_usd") or 0.0),
        tags=tuple(tags),
    )


def from_scheduler(scheduler: Any, started_at: float) -> Progress:
    """Snapshot of a running :class:`~orchestrator_pex.scheduler.Scheduler` (read only) started at ``started_at``."""
    rows = []
    for s in scheduler.states:
        inst = s.launch.instance
        tags = tuple(inst.tags or ())
        if s.record is not None:
            rows.append(row_from_record(s.record, tags))
            continue
        if not s.attempts:
            rows.append(Row(name=s.launch.name, state=s.status, tags=tags))
            continue
        tokens, cost = s.tokens(), s.cost()
        current = s.attempts[-1]
        rows.append(Row(
            name=s.launch.name, state=s.status, model=current.acct.model, started_at=s.attempts[0].started_at or None,
            finished_at=None, attempts=len(s.attempts), tokens=tokens,
            cache=sum(a.acct.cache_read + a.acct.cache_creation for a in s.attempts),
            tools=sum(sum(a.acct.tools.values()) for a in s.attempts), cost_usd=cost,
            budget=_budget_share(tokens, cost, inst.max_tokens, inst.max_cost_usd), tags=tags,
        ))
    budget = scheduler.budget
    return Progress(
        rows=tuple(rows), started_at=started_at,
        tokens=scheduler.tokens, cost_usd=scheduler.cost, budget_tokens=budget.max_tokens,
        budget_cost_usd=budget.max_cost_usd,
    )


def from_journal(events: Iterable[Any], names: Sequence[str], *,
                 budget_tokens: Optional[int] = None, budget_cost_usd: Optional[float] = None) -> Progress:
    """Snapshot of a run from its journal events (typed, :func:`orchestrator_pex.journal.read_events`; JSON objects
    are structured first, :func:`records.typed_events`); ``names`` are the instances of the run, in batch order.

    An instance with ``instance_started`` and no ``instance_finished`` since is ``running`` (``retrying`` after an
    ``instance_retry``); one with no event is ``pending``. The latest ``run_started`` gives the start time (a resumed
    run restarts the clock); ``run_finished`` after it marks the snapshot finished.
    """
    rows: Dict[str, Row] = {n: Row(name=n, state=InstanceStatus.PENDING) for n in names}
    started_at = None
    finished = False
    for e in records.typed_events(events, "journal"):
        if isinstance(e, records.RunStarted):
            started_at = _epoch(e.meta.get("started_at")) or started_at
            finished = False
        elif isinstance(e, records.RunFinished):
            finished = True
        elif isinstance(e, records.InstanceStarted):
            old = rows.get(e.name) or Row(name=e.name, state=InstanceStatus.PENDING)
            at = _epoch(e.at)
            retrying = old.state == InstanceStatus.RETRYING
            rows[e.name] = attrs.evolve(old, state=InstanceStatus.RUNNING, attempts=e.attempt or old.attempts + 1,
                                        started_at=old.started_at if retrying else at or old.started_at,
                                        finished_at=None)
        elif isinstance(e, records.InstanceRetry) and e.name in rows:
            rows[e.name] = attrs.evolve(rows[e.name], state=InstanceStatus.RETRYING)
        elif isinstance(e, records.InstanceFinished):
            tags = e.record.get("tags")
            tags = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else ()
            rows[e.name] = row_from_record(e.record, tags)
    ordered = tuple(rows.values())
    return Progress(
        rows=ordered, started_at=started_at or time.time(), tokens=sum(r.tokens for r in ordered),
        cost_usd=sum(r.cost_usd for r in ordered), budget_tokens=budget_tokens, budget_cost_usd=budget_cost_usd,
        finished=finished,
    )


def _epoch(text: Any) -> Optional[float]:
    """Seconds since the epoch from the ISO 8601 UTC timestamps the results and journal use."""
    return epoch(text)
