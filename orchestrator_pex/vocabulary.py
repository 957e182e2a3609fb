"""The words of the machine interfaces, defined once: instance and run statuses, the scheduler's stop reasons, token
keys, the schema version, and the two functions that turn instance outcomes into a run status and a run status into
an exit status.

Guarantees:

* :class:`InstanceStatus` and :class:`RunStatus` are ``str``-valued enums whose members *are* their strings:
  ``InstanceStatus.SUCCEEDED == "succeeded"``, they hash, format, ``str()`` and JSON-encode as the plain string
  on every supported Python (3.9–3.13), so a document written with them is byte-for-byte the one written with
  bare strings, and a status read back from JSON compares equal to the member.
* :class:`StopReason` names why the scheduler stopped launching (``Scheduler.stopped``); each reason knows the
  status of an instance it stopped while running (:attr:`StopReason.instance_status`) and the ``error`` text of one it
  never started (:attr:`StopReason.not_started`), so those strings are written in one place.
* :data:`FINAL_STATUSES` is the ordered list of statuses an instance record can have (``totals.by_status`` lists
  them zero-filled in this order); :data:`LIVE_STATUSES` are the ones a live view shows before that.
* :func:`run_status` and :func:`exit_status` are the only derivations of a run's status and exit status; ``run``,
  ``resume``, ``merge --exit-status`` and the history views call them.

Nothing here reads input: values from files are checked at the edges (``results``, ``journal``, ``merge``).
"""

from __future__ import annotations

import enum
import signal
from typing import Any, Iterable, Mapping, Optional

from orchestrator_pex import errors

#: version of the machine interfaces (results and merged documents, journal and --json-logs events): see schemas/
SCHEMA_VERSION = 1

#: the token counters of an instance record and of totals (both add ``total``, their sum).
TOKEN_KEYS = ("input", "output", "cache_creation", "cache_read")
TOKEN_TOTAL = "total"


class _Word(str, enum.Enum):
    """A str enum that is its value everywhere a string is (``str``, ``format``, hashing, JSON)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)

    def __hash__(self) -> int:
        return str.__hash__(self)


class InstanceStatus(_Word):
    """An instance's status: the live ones (``pending``, ``running``, ``retrying``), then a final one."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    STALLED = "stalled"
    CANCELLED = "cancelled"
    BUDGET_STOPPED = "budget-stopped"
    API_ERROR = "api-error"
    NOT_STARTED = "not-started"
    SKIPPED = "skipped"  #: never started because of what the instances it needs did (see graph.decide)


class RunStatus(_Word):
    """A run's (or merged document's) status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BUDGET_STOPPED = "budget-stopped"
    INTERRUPTED = "interrupted"


class StopReason(_Word):
    """Why the scheduler stopped launching: a blocking budget, a failed authentication (401), the batch deadline, or
    an interrupt (SIGINT/SIGTERM)."""

    BUDGET = "budget"
    AUTH = "auth"
    DEADLINE = "deadline"
    INTERRUPTED = "interrupted"

    @property
    def instance_status(self) -> Optional[InstanceStatus]:
        """The status of an instance whose attempt this stop ended (None: ``auth`` ends no running attempt)."""
        return _STATUS_WHEN_STOPPED.get(self)

    @property
    def not_started(self) -> str:
        """The ``error`` of an instance this stop kept from starting."""
        return _NOT_STARTED_WHY[self]


_STATUS_WHEN_STOPPED = {
    StopReason.INTERRUPTED: InstanceStatus.CANCELLED, StopReason.DEADLINE: InstanceStatus.TIMED_OUT,
    StopReason.BUDGET: InstanceStatus.BUDGET_STOPPED,
}
_NOT_STARTED_WHY = {
    StopReason.BUDGET: "not started: the batch budget was reached",
    StopReason.AUTH: "not started: an earlier instance failed authentication (401)",
    StopReason.DEADLINE: "not started: the batch deadline passed",
    StopReason.INTERRUPTED: "not started: the run was interrupted",
}


#: every status an instance record (results.json, instance_finished) can have, in ``totals.by_status`` order.
FINAL_STATUSES = (
    InstanceStatus.SUCCEEDED, InstanceStatus.FAILED, InstanceStatus.TIMED_OUT, InstanceStatus.STALLED,
    InstanceStatus.CANCELLED, InstanceStatus.BUDGET_STOPPED, InstanceStatus.API_ERROR, InstanceStatus.NOT_STARTED,
    InstanceStatus.SKIPPED,
)
#: the statuses of an instance a live view shows before it has a final one.
LIVE_STATUSES = (InstanceStatus.PENDING, InstanceStatus.RUNNING, InstanceStatus.RETRYING)
#: live statuses of an instance that has a process (or is between two attempts).
ACTIVE_STATUSES = (InstanceStatus.RUNNING, InstanceStatus.RETRYING)

#: final statuses ``resume`` reruns by default (the run was cut short, the instance did nothing wrong); the journal
#: of older versions also wrote ``interrupted`` for an instance.
INTERRUPTED_STATUSES = frozenset({
    InstanceStatus.NOT_STARTED, InstanceStatus.CANCELLED, InstanceStatus.TIMED_OUT, InstanceStatus.STALLED,
    RunStatus.INTERRUPTED,
})
#: final statuses ``resume --rerun-failed`` reruns as well.
FAILED_STATUSES = frozenset({InstanceStatus.FAILED, InstanceStatus.API_ERROR, InstanceStatus.BUDGET_STOPPED})

#: run statuses from worst to best, for combining runs (``merge``); a status not listed ranks just above
#: ``succeeded``. ``cancelled`` is not written any more but may be in old documents.
RUN_STATUS_RANK = (RunStatus.INTERRUPTED, "cancelled", RunStatus.BUDGET_STOPPED, RunStatus.FAILED)


def all_succeeded(records: Iterable[Mapping[str, Any]]) -> bool:
    """Did every record (instance record or results.json entry) succeed? True for none."""
    return all(r.get("status") == InstanceStatus.SUCCEEDED for r in records)


def run_status(records: Iterable[Mapping[str, Any]], *, interrupted: bool = False,
               budget_stopped: bool = False) -> RunStatus:
    """The status of a finished run: interrupted (a signal), else budget-stopped, else succeeded only if every
    instance record succeeded."""
    if interrupted:
        return RunStatus.INTERRUPTED
    if budget_stopped:
        return RunStatus.BUDGET_STOPPED
    return RunStatus.SUCCEEDED if all_succeeded(records) else RunStatus.FAILED


def combined_run_status(statuses: Iterable[Any], records: Iterable[Mapping[str, Any]]) -> str:
    """The status of several runs taken together (``merge``): the worst of ``statuses`` (see
    :data:`RUN_STATUS_RANK`; an unranked one before ``succeeded``), ``succeeded`` only if every run and every
    record succeeded."""
    known = [s for s in statuses if isinstance(s, str)]
    for bad in RUN_STATUS_RANK:
        if bad in known:
            return str(bad)
    others = [s for s in known if s != RunStatus.SUCCEEDED]
    if others:
        return others[0]
    return run_status(records)


def exit_status(status: Any, *, received: Optional[int] = None, internal_error: bool = False) -> int:
    """``run``'s exit status for a run of ``status``: 70 after an internal error, 130/143 after SIGINT/SIGTERM
    (``received``), 3 for a budget stop, 0 when it succeeded, 1 otherwise (see errors.EXIT_STATUSES)."""
    if internal_error:
        return errors.EXIT_SOFTWARE
    if received is not None:
        return errors.EXIT_SIGINT if received == signal.SIGINT else errors.EXIT_SIGTERM
    if status == RunStatus.BUDGET_STOPPED:
        return errors.EXIT_BUDGET
    if status == RunStatus.SUCCEEDED:
        return errors.EXIT_OK
    return errors.EXIT_FAILED
