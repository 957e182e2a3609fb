"""Scheduler: run a plan's instances in parallel on one trio nursery, within limits, and record every outcome.

Structure: :meth:`Scheduler.run` owns the *batch nursery*; each started instance is one task in it, which runs its
attempts one after another (:func:`orchestrator_pex.runtime.run_attempt`). Launching is sequential, in batch order:
the next instance starts when the concurrency cap, the admission by measured pressure
(:mod:`orchestrator_pex.pressure`; the busy rule of :mod:`orchestrator_pex.headroom` where pressure cannot be read)
and the stagger allow, and only while launching has not been stopped.

Launching stops — the rest are reported ``not-started`` — when a blocking budget is crossed, when an attempt fails
authentication (401), when the batch deadline passes, or on :meth:`Scheduler.interrupt`. Budget, deadline and
interrupt also stop the running instances (``budget-stopped``, ``timed-out``, ``cancelled``): their process groups
get SIGTERM, then SIGKILL after the grace period. Whatever ends the batch, every instance gets exactly one record and
every sink receives ``instance_finished`` for it before :meth:`run` returns.

Dependencies (:mod:`orchestrator_pex.graph`): the launcher takes the first instance in batch order whose ``needs``
have all finished (in this run, or in ``prior`` records of an earlier session); one that must not start
(:func:`~orchestrator_pex.graph.decide`) is recorded ``skipped`` at once, the others wait for admission like any
instance, with their placeholders filled from the records they need. Workspaces
(:mod:`orchestrator_pex.workspace`): an instance with ``workspace = "worktree"`` gets its worktree (journaled
``workspace_created``) before its first attempt and has it collected and cleaned up after its last; its record
carries ``workspace``. A worktree that cannot be made fails the instance with that error.

Error boundary. An unexpected exception inside one instance's task (filling its placeholders, making its worktree,
its runtime, accounting, a hook, anything but a user-facing :class:`~orchestrator_pex.errors.OrchestratorError` or
trio's cancellation) ends that instance only: its process group is ended by the runtime, its worktree (if made) is
still collected, it is recorded ``failed`` with an ``error`` starting ``internal error:``
(:mod:`orchestrator_pex.internal_errors`), the traceback is saved as ``<run_dir>/internal-errors/NAME.txt``, and the
batch goes on (instances that need it decide on that ``failed`` record). An instance whose task is cancelled from
outside the scheduler's own stops (the orchestrator itself is failing) is recorded ``cancelled``, which ``resume``
reruns by default.
"""

from __future__ import annotations

import json
import os
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import attrs
import trio

from orchestrator_pex import errors, graph, internal_errors, records, results
from orchestrator_pex.agents import dialect
from orchestrator_pex.headroom import Headroom
from orchestrator_pex.plan import Launch, Plan
from orchestrator_pex.pressure import admission
from orchestrator_pex.records import (
    InstanceFinished,
    InstanceRecord,
    InstanceRetry,
    InstanceStarted,
    WarningEvent,
    WorkspaceBases,
    WorkspaceCreated,
    event_to_json,
)
from orchestrator_pex.runtime import DEFAULT_MAX_LINE, Attempt, run_attempt
from orchestrator_pex.spill import Spill
from orchestrator_pex.vocabulary import InstanceStatus, StopReason

if TYPE_CHECKING:  # annotations only
    from orchestrator_pex.secrets import Redactor

TRANSIENT_API_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
DEFAULT_CONCURRENCY = 32  # hard cap when neither --concurrency nor the batch sets one (API rate limits)
_POLL = 0.1  # seconds between admission checks when nothing else wakes the launcher
_DECODE_CHUNK = 1024  # finished records decoded together at the end of a run

#: runs one attempt to its end (the signature of :func:`orchestrator_pex.runtime.run_attempt`, its default); tests
#: inject a stand-in that needs no process, so launch timing can be checked on trio's MockClock
AttemptRunner = Callable[..., Awaitable[None]]


class InstanceState:
    """An instance's progress through the batch, read by reports.

    Memory: once an instance is finished (:meth:`finish`) its record goes, as compact JSON bytes, to the run's
    :class:`~orchestrator_pex.spill.Spill` (on disk) and the state keeps only its key (without a spill: the bytes,
    about a third of the dict's size); :attr:`record` decodes a fresh dict on each read. Its attempts are dropped.
    A state not started yet holds no list or set of its own (``attempts`` and ``warned`` are empty tuples)."""

    __slots__ = ("launch", "status", "attempts", "_record", "backoff_scope", "_tokens", "_cost", "warned", "_spill")

    def __init__(self, launch: Launch, spill: Optional[Spill] = None) -> None:
        self.launch = launch
        self.status: str = InstanceStatus.PENDING  # then running, retrying, then one of vocabulary.FINAL_STATUSES
        self.attempts: Sequence[Attempt] = ()  # a list once started
        self._record: Union[None, Dict[str, Any], bytes, int] = None  # the record; once finished, its spill key
        self.backoff_scope: Optional[trio.CancelScope] = None
        self._tokens = 0  # what this instance's attempts have added to the batch ledger so far
        self._cost = 0.0
        self.warned: Tuple[str, ...] = ()  # the warnings given once for this instance
        self._spill = spill

    @property
    def record(self) -> Optional[Dict[str, Any]]:
        record = self._record
        if isinstance(record, int):
            assert self._spill is not None
            record = self._spill.get(record)
        if isinstance(record, bytes):
            decoded: Dict[str, Any] = json.loads(record)
            return decoded
        return record

    @record.setter
    def record(self, value: Optional[Dict[str, Any]]) -> None:
        self._record = value

    @property
    def recorded(self) -> bool:
        """The instance has its record (cheap: :attr:`record` decodes it)."""
        return self._record is not None

    def finish(self) -> None:
        """The instance is over and its record final: keep that record compactly, drop the attempts."""
        if isinstance(self._record, dict):
            try:
                encoded = json.dumps(self._record, separators=(",", ":"), allow_nan=False).encode()
            except (TypeError, ValueError):
                pass  # not plain JSON (never expected): keep the dict itself
            else:
                self._record = self._spill.put(encoded) if self._spill is not None else encoded
        self.attempts = ()
        self.backoff_scope = None

    @property
    def current(self) -> Optional[Attempt]:
        return self.attempts[-1] if self.attempts else None

    def tokens(self) -> int:  # asked after every chunk an instance prints (budgets): one attempt without a sum
        attempts = self.attempts
        if len(attempts) == 1:
            return attempts[0].acct.total_tokens
        return sum(a.acct.total_tokens for a in attempts)

    def cost(self) -> float:
        attempts = self.attempts
        if len(attempts) == 1:
            return attempts[0].acct.cost_usd
        return sum(a.acct.cost_usd for a in attempts)


def classify(launch: Launch, attempt: Attempt) -> str:
    """The outcome of one finished attempt."""
    if attempt.stop_reason:
        return attempt.stop_reason
    acct = attempt.acct
    agent = launch.kind != "generic"  # an agent dialect: a run without its final event did not finish
    if agent or acct.result_seen:
        if acct.is_error and acct.api_error_status:
            attempt.error = f"API error {acct.api_error_status}: {(acct.result_text or '')[:300]}".rstrip(": ")
            return InstanceStatus.API_ERROR
        if acct.is_error:
            attempt.error = attempt.error or f"agent reported an error: {(acct.result_text or '')[:300]}"
            return InstanceStatus.FAILED
        if attempt.exit_code == 0 and agent and not acct.result_seen:
            attempt.error = "exited 0 without a result event"
            return InstanceStatus.FAILED
        if agent and not acct.result_seen and attempt.exit_code:
            hint = dialect(launch.kind).exit_hints.get(attempt.exit_code)
            if hint:
                attempt.error = f"{hint}: {attempt.error}" if attempt.error else hint
    return InstanceStatus.SUCCEEDED if attempt.exit_code == 0 else InstanceStatus.FAILED


def _cancellation(exc: BaseException) -> bool:
    """``trio.Cancelled``, or an exception group (from a nursery) holding only cancellations."""
    if isinstance(exc, trio.Cancelled):
        return True
    inner = getattr(exc, "exceptions", None) or ()
    return bool(inner) and all(_cancellation(e) for e in inner)


def _session_name(launch: Launch) -> Optional[str]:
    """The batch's own session name when it was mapped to a UUID for the agent (zen names), else None."""
    from orchestrator_pex.agents import session_uuid

    inst = launch.instance
    if inst.session_id and launch.kind in ("claude", "gemini") and session_uuid(inst.session_id) != inst.session_id:
        return inst.session_id
    if inst.resume and launch.kind == "claude" and session_uuid(inst.resume) != inst.resume:
        return inst.resume
    return None


class Scheduler:
    """Runs one plan. ``sinks`` receive events (dicts) through ``await sink.emit(event)``, in order."""

    def __init__(
        self,
        plan: Plan,
        run_dir: str,
        *,
        sinks: Sequence[Any] = (),
        concurrency: Optional[int] = None,
        stagger: Optional[float] = None,
        deadline: Optional[float] = None,
        only: Optional[Set[str]] = None,
        max_line: int = DEFAULT_MAX_LINE,
        headroom: Optional[Headroom] = None,
        on_spawn: Optional[Callable[[Attempt], None]] = None,
        on_exit: Optional[Callable[[Attempt], None]] = None,
        redactor: Optional[Redactor] = None,
        carried: Optional[Dict[str, Dict[str, Any]]] = None,
        prior: Optional[Dict[str, Dict[str, Any]]] = None,
        env_add: Optional[Dict[str, str]] = None,
        attempt_runner: AttemptRunner = run_attempt,
    ) -> None:
        batch = plan.batch
        self.plan = plan
        self.run_dir = run_dir
        self.sinks = list(sinks)
        self.cap = concurrency or batch.concurrency or DEFAULT_CONCURRENCY
        self.stagger = stagger if stagger is not None else (batch.stagger or 0.0)
        self.deadline = deadline if deadline is not None else batch.deadline
        self.grace = batch.grace_period
        self.budget = batch.budget
        self.retry = batch.retry
        self.max_line = max_line
        self.headroom = headroom or admission(self.cap, {one.kind for one in plan.launches})
        self._on_spawn = on_spawn
        self._on_exit = on_exit
        self._redactor = redactor if redactor else None  # masks secret values in records and raw stdout logs
        self.carried = carried or {}  # resume: earlier sessions' records of the instances rerun now
        self._run_attempt = attempt_runner
        #: every instance's environment before its own ``env``: ours, plus ``env_add`` (the guardian's marker)
        self.env_base = {**os.environ, **(env_add or {})}
        #: finished records, on disk until results.json is written (the file goes with the scheduler: spill.Spill)
        self.spill = Spill(run_dir if os.path.isdir(run_dir) else None)
        self.states = [InstanceState(launch, self.spill) for launch in plan.launches
                       if only is None or launch.name in only]
        self.running: Dict[str, InstanceState] = {}
        self.tokens = 0  # the batch ledger: every attempt of every instance, running or done
        self.cost = 0.0
        self.stopped: Optional[StopReason] = None  # why launching stopped
        self.budget_stopped = False
        self._batch_warned = False
        self.interrupted = False
        self._changed = trio.Event()
        self._last_launch = -1e9
        self.started_mono = 0.0
        self.prior = dict(prior or {})  # resume: final records of instances not run now (dependencies, placeholders)
        self.workspaces: Optional[Any] = None  # workspace.Manager when an instance uses a worktree
        if any(s.launch.instance.workspace == "worktree" for s in self.states):
            from orchestrator_pex import journal, workspace

            events: List[Dict[str, Any]] = []
            try:  # resume: the worktrees and bases earlier sessions recorded
                events, _ = journal.read_journal(journal.journal_path(run_dir))
            except Exception:  # noqa: BLE001 - a new run (no journal or no run_started yet)
                events = []
            self.workspaces = workspace.Manager(run_dir, os.path.basename(run_dir),
                                                os.path.dirname(batch.path) or os.getcwd(), events)
        self.progress = 0  # stdout chunks read + instances finished: the throughput admission watches
        self._needs = any(s.launch.instance.needs for s in self.states)  # else launching needs no dependency scan

    # -- control ---------------------------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Stop launching; stop every running instance (``cancelled``); cut retry back-offs short."""
        self.interrupted = True
        self._stop_all(StopReason.INTERRUPTED)

    def _stop_all(self, why: StopReason) -> None:
        """Stop launching for ``why``; end every running attempt with the status ``why`` gives it."""
        if self.stopped is None:
            self.stopped = why
        status = why.instance_status
        assert status is not None  # only the stops that end running attempts come here
        for state in list(self.running.values()):
            if state.current is not None:
                state.current.stop(status)
            if state.backoff_scope is not None:
                state.backoff_scope.cancel()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def emit(self, event: Dict[str, Any]) -> None:
        """Hand ``event`` to every sink in turn (the journal returns once it is durable)."""
        for sink in self.sinks:
            await sink.emit(event)

    # -- the batch -------------------------------------------------------------------------------------------------

    async def run(self) -> List[Dict[str, Any]]:
        """Run every instance (or record why not); return the records in batch order."""
        await self.run_all()
        return self._final_records()

    async def run_all(self) -> None:
        """Run every instance (or record why not). Each state keeps its record compactly (see
        :class:`InstanceState`); the runner writes them one at a time, never all decoded at once."""
        self.started_mono = trio.current_time()
        self._check_batch_budget()  # a resumed run may already have spent it
        if self.workspaces is not None:
            bases = await trio.to_thread.run_sync(self.workspaces.resolve_bases, [s.launch for s in self.states])
            if bases:
                await self.emit(event_to_json(WorkspaceBases(bases)))
        async with trio.open_nursery() as batch_nursery:
            if self.deadline is not None:
                batch_nursery.start_soon(self._deadline_watch)
            pending = list(self.states)
            while pending and self.stopped is None:
                state = self._next_ready(pending)
                if state is None:  # everything left waits for an instance still running
                    await self._changed.wait()
                    continue
                needs = state.launch.instance.needs or ()
                if needs:
                    records = self._records_of(needs)
                    why = graph.decide(state.launch.instance.when, needs, records)
                    if why is not None:
                        pending.remove(state)
                        await self._skip(state, why)
                        continue
                if not await self._admit(state):
                    break
                pending.remove(state)
                self.running[state.launch.name] = state
                state.status = InstanceStatus.RUNNING
                self._last_launch = trio.current_time()
                batch_nursery.start_soon(self._run_instance, state)
            await self._all_done()
            batch_nursery.cancel_scope.cancel()  # the deadline watch
        if self.workspaces is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.workspaces.prune)
        for state in self.states:
            if not state.recorded:
                why = self.stopped.not_started if self.stopped is not None else None
                earlier = self.carried.get(state.launch.name)  # resumed, but not started again: nothing changed
                state.status = earlier["status"] if earlier else InstanceStatus.NOT_STARTED
                inst = state.launch.instance
                state.record = earlier or results.not_started(state.launch.name, why, tags=inst.tags or (),
                                                              description=inst.description, agent=state.launch.kind)
                await self.emit(event_to_json(InstanceFinished(state.launch.name, state.record)))
                state.finish()

    def _final_records(self) -> List[Dict[str, Any]]:
        """Every state's record, decoded :data:`_DECODE_CHUNK` at a time: one ``json.loads`` per chunk shares the
        key strings among its records (half the memory of decoding each record on its own)."""
        raw = [self.spill.get(s._record) if isinstance(s._record, int) else s._record for s in self.states]
        out: List[Dict[str, Any]] = []
        for i in range(0, len(raw), _DECODE_CHUNK):
            chunk = raw[i:i + _DECODE_CHUNK]
            encoded = [r for r in chunk if isinstance(r, bytes)]
            decoded = iter(json.loads(b"[" + b",".join(encoded) + b"]") if encoded else ())
            for r in chunk:
                record = next(decoded) if isinstance(r, bytes) else r
                assert record is not None  # every state got its record in run()
                out.append(record)
        return out

    def _records_of(self, names: Sequence[str]) -> Dict[str, Dict[str, Any]]:
        names = list(names)
        wanted = set(names)
        by_name = {s.launch.name: s.record for s in self.states if s.launch.name in wanted and s.recorded}
        return {n: by_name.get(n) or self.prior.get(n) or results.not_started(n) for n in names}

    def _next_ready(self, pending: List[InstanceState]) -> Optional[InstanceState]:
        """The first pending instance (batch order) whose needs have all finished."""
        if not self._needs:  # no instance needs another: the first pending one (no scan of every state per launch)
            return pending[0] if pending else None
        waiting: Optional[Set[str]] = None  # built only if an instance with needs comes first: O(1) per launch else
        for state in pending:
            needs = state.launch.instance.needs
            if not needs:
                return state
            if waiting is None:  # a name not run now counts as done
                waiting = {s.launch.name for s in self.states if not s.recorded}
            if not any(n in waiting for n in needs):
                return state
        return None

    def _carry(self, name: str, record: InstanceRecord) -> InstanceRecord:
        """``record`` with what earlier sessions of a resumed run spent on ``name`` added (never free)."""
        earlier = self.carried.get(name)
        if earlier is None:
            return record
        return record.carry(records.record_from_json(earlier, self.run_dir, f"record of {name!r}", name=name))

    async def _skip(self, state: InstanceState, why: str) -> None:
        name = state.launch.name
        state.status = InstanceStatus.SKIPPED
        state.record = records.to_json(self._carry(name, InstanceRecord.skipped(name, why)))
        await self.emit(event_to_json(InstanceFinished(name, state.record)))
        self._wake()

    async def _all_done(self) -> None:
        while self.running:
            await self._changed.wait()

    async def _deadline_watch(self) -> None:
        assert self.deadline is not None  # started only when there is one
        await trio.sleep_until(self.started_mono + self.deadline)
        await self.emit(event_to_json(WarningEvent(f"batch deadline of {self.deadline:g}s reached")))
        self._stop_all(StopReason.DEADLINE)

    async def _admit(self, state: InstanceState) -> bool:
        """Wait until ``state`` may start; False if launching has stopped."""
        kind = state.launch.kind
        while True:
            if self.stopped is not None:
                return False
            now = trio.current_time()
            wait = self._last_launch + self.stagger - now
            if wait <= 0 and len(self.running) < self.cap and self.headroom.allows(now, self._probe(), kind,
                                                                                             self.progress):
                return True
            with trio.move_on_after(max(wait, 0) if wait > 0 else _POLL):
                await self._changed.wait()

    def _probe(self) -> Iterator[Tuple[Optional[int], bool]]:
        """(pid, has output) of each running instance; an instance admitted but not spawned yet is (None, False).
        Instances waiting out a retry back-off use no CPU and are left out."""
        for state in self.running.values():
            a = state.current
            if a is None or a.pid is None:
                if state.status != InstanceStatus.RETRYING:
                    yield None, False
            elif a.exit_code is None:
                yield a.pid, a.last_output_mono > a.started_mono

    def attempts_running(self) -> Iterator[Attempt]:
        """The attempts whose process is running now (pid known, not exited)."""
        for state in self.running.values():
            a = state.current
            if a is not None and a.pid is not None and a.exit_code is None:
                yield a

    # -- one instance ----------------------------------------------------------------------------------------------

    async def _run_instance(self, state: InstanceState) -> None:
        launch = state.launch
        inst = launch.instance
        name = launch.name
        logs = os.path.join(self.run_dir, "logs")
        stem = results.log_stem(name)
        stdout_log = os.path.join(logs, f"{stem}.stdout")
        stderr_log = os.path.join(logs, f"{stem}.stderr")
        reader = dialect(launch.kind).reader if launch.kind != "generic" else None
        env = {**self.env_base, **launch.env_add}
        status: str = InstanceStatus.FAILED
        error: Optional[str] = None  # set by the boundaries below; else the last attempt's error
        ws = None
        ws_record: Optional[Dict[str, Any]] = None
        try:
            # inside the instance's error boundary: a bug in filling placeholders or making the worktree ends this
            # instance only
            if inst.needs:
                from orchestrator_pex.plan import FillError, filled

                try:
                    launch = filled(self.plan, launch, self._records_of(inst.needs))
                except FillError as exc:
                    error = f"placeholder: {exc}"
                    return
                inst = launch.instance
                env = {**self.env_base, **launch.env_add}
            if inst.workspace == "worktree" and self.workspaces is not None:
                from orchestrator_pex.workspace import WorkspaceError

                try:
                    ws = await trio.to_thread.run_sync(self.workspaces.create, launch)
                except WorkspaceError as exc:
                    error = f"workspace: {exc}"
                    return
                await self.emit(event_to_json(WorkspaceCreated(name, ws.repo, ws.path, ws.branch, ws.base)))
                self.workspaces.created[name] = {"base": ws.base}
                launch = attrs.evolve(launch, cwd=ws.cwd)
                if self.stopped is not None and self.stopped.instance_status is not None:
                    status = self.stopped.instance_status  # stopped while the worktree was made
                    return
            for number in range(1, (inst.retries or 0) + 2):
                attempt = Attempt(number, reader(inst.model) if reader is not None else None)
                state.attempts = [*state.attempts, attempt]
                state.status = InstanceStatus.RUNNING
                # where this attempt's output starts in the raw log: resume re-reads it if no end gets recorded
                await self.emit(event_to_json(InstanceStarted(
                    name, number, results.iso(time.time()), _size(stdout_log), launch.kind)))
                try:
                    await self._run_attempt(
                        attempt, launch.argv, env=env, cwd=launch.cwd, stdout_log=stdout_log, stderr_log=stderr_log,
                        timeout=inst.timeout, stall_timeout=inst.stall_timeout, grace=self.grace,
                        max_line=self.max_line, on_output=lambda a, s=state: self._account(s, a),
                        on_spawn=self._on_spawn or (lambda a: None),
                        redactor=self._redactor,
                    )
                except OSError as exc:
                    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
                    attempt.error = f"cannot start {launch.argv[0]}: {exc.strerror or exc}{where}"
                    attempt.finished_at = time.time()
                    status = InstanceStatus.FAILED
                    break
                finally:
                    if self._on_exit is not None and attempt.pid is not None:
                        self._on_exit(attempt)
                self._account(state, attempt)
                status = classify(launch, attempt)
                api = attempt.acct.api_error_status
                if status == InstanceStatus.API_ERROR and api in TRANSIENT_API_STATUSES \
                        and number <= (inst.retries or 0):
                    if not await self._backoff(state, number, api):
                        # the batch stopped during the wait: the instance ends the way its running peers did
                        if self.stopped is not None and self.stopped.instance_status is not None:
                            status = self.stopped.instance_status
                        break
                    continue
                break
            last = state.current
            auth_failed = last is not None and last.acct.api_error_status == 401
            if status == InstanceStatus.API_ERROR and auth_failed and self.stopped is None:
                self.stopped = StopReason.AUTH
                await self.emit(event_to_json(WarningEvent(f"{name}: authentication failed (401): "
                                                          "no further instances will be started")))
        except BaseException as exc:  # noqa: BLE001 - the instance's error boundary
            if _cancellation(exc):
                # Cancelled from outside the scheduler's own stops (those end attempts through Attempt.stop): the
                # orchestrator itself is failing (the journal cannot be written, an internal error at the top).
                status = InstanceStatus.CANCELLED
                error = "cancelled: the orchestrator stopped while this instance ran (resume reruns it)"
                raise
            if not isinstance(exc, Exception) or errors.find(exc) is not None:
                raise  # KeyboardInterrupt, or a user-facing error of the whole run (the journal cannot be written)
            status = InstanceStatus.FAILED  # a bug ends this instance, never the batch
            error = self._internal_error(name, exc)
        finally:
            manager = self.workspaces
            if ws is not None and manager is not None:
                with trio.CancelScope(shield=True):
                    try:
                        ws_record = await trio.to_thread.run_sync(
                            lambda: manager.finish(ws, commit=bool(inst.commit), keep=inst.keep or "changed",
                                                   delete_branch=bool(inst.delete_branch)))
                    except Exception as exc:  # noqa: BLE001 - a git failure must not lose the instance's record
                        ws_record = ws.describe(error=f"cannot collect the worktree: {exc}")
            state.status = status
            state.record = records.to_json(self._carry(name, InstanceRecord.of_attempts(
                name, status, state.attempts, stdout_log=stdout_log if state.attempts else None,
                stderr_log=stderr_log if state.attempts else None, error=error, workspace=ws_record,
                agent=launch.kind, session_name=_session_name(launch),
                tags=inst.tags or (), description=inst.description,
            )))
            if self._redactor is not None:
                state.record = self._redactor.scrub_data(state.record)
            with trio.CancelScope(shield=True):
                await self.emit(event_to_json(InstanceFinished(name, state.record)))
            del self.running[name]
            state.finish()
            self.progress += 1
            self._wake()

    def _internal_error(self, name: str, exc: BaseException) -> str:
        """Save ``exc``'s traceback under the run directory; the record's ``error`` (``internal error: ...``)."""
        scrub = self._redactor.scrub_text if self._redactor is not None else None
        path = internal_errors.save(self.run_dir, results.log_stem(name), exc, scrub)
        where = f"traceback in {os.path.relpath(path, self.run_dir)}" if path else "the traceback could not be saved"
        message = f"{internal_errors.PREFIX} {internal_errors.summary(exc)} ({where})"
        self.warn(f"{name}: {message}")
        return message

    def records_so_far(self, why: str) -> List[Dict[str, Any]]:
        """Every instance's record as things stand (run boundary: the batch did not end normally). An instance
        without a record yet is its earlier session's record (resume) or ``not-started`` with ``why``."""
        out = []
        for state in self.states:
            record = state.record or self.carried.get(state.launch.name) or results.not_started(state.launch.name, why)
            out.append(record)
        return out

    async def _backoff(self, state: InstanceState, number: int, api_status: int) -> bool:
        """Sleep before retrying a transient API error; False if the batch stopped meanwhile."""
        if self.stopped is not None:
            return False
        delay = min(self.retry.backoff * (2 ** (number - 1)), self.retry.backoff_max)
        state.status = InstanceStatus.RETRYING
        await self.emit(event_to_json(InstanceRetry(state.launch.name, number, api_status, delay)))
        with trio.CancelScope() as state.backoff_scope:
            if self.stopped is not None:  # stopped while the event above was being written: no back-off at all
                state.backoff_scope.cancel()
            await trio.sleep(delay)
        state.backoff_scope = None
        return self.stopped is None

    # -- budgets ---------------------------------------------------------------------------------------------------

    def _account(self, state: InstanceState, attempt: Attempt) -> None:
        """Fold an attempt's latest numbers into the ledger; enforce the instance's and the batch's budgets."""
        self.progress += 1
        tokens, cost = state.tokens(), state.cost()
        self.tokens += tokens - state._tokens
        self.cost += cost - state._cost
        state._tokens, state._cost = tokens, cost
        inst, budget = state.launch.instance, self.budget
        block = budget.mode == "block"
        over = None
        if inst.max_tokens is not None and tokens > inst.max_tokens:
            over = f"{tokens} tokens > max_tokens {inst.max_tokens}"
        elif inst.max_cost_usd is not None and cost > inst.max_cost_usd:
            over = f"${cost:.4f} > max_cost_usd {inst.max_cost_usd:g}"
        if over:
            if block and attempt.exit_code is None:
                attempt.error = f"instance budget: {over}"
                attempt.stop(InstanceStatus.BUDGET_STOPPED)
            elif "instance" not in state.warned:
                state.warned += ("instance",)
                self.warn(f"{state.launch.name}: instance budget crossed: {over}")
        self._check_batch_budget()

    def _check_batch_budget(self) -> None:
        """Enforce the batch budget against the ledger (block: stop everything; warn: say so once)."""
        budget = self.budget
        over = None
        if budget.max_tokens is not None and self.tokens > budget.max_tokens:
            over = f"batch {self.tokens} tokens > budget.max_tokens {budget.max_tokens}"
        elif budget.max_cost_usd is not None and self.cost > budget.max_cost_usd:
            over = f"batch ${self.cost:.4f} > budget.max_cost_usd {budget.max_cost_usd:g}"
        if over and not self.budget_stopped and not self._batch_warned:
            if budget.mode == "block":
                self.budget_stopped = True
                for s in list(self.running.values()):
                    if s.current is not None and s.current.exit_code is None:
                        s.current.error = over
                self.warn(f"{over}: stopping the batch")
                self._stop_all(StopReason.BUDGET)
            else:
                self._batch_warned = True
                self.warn(f"{over} (mode warn: continuing)")

    def warn(self, message: str) -> None:
        """A warning to every sink that takes notes (the console), outside the journal."""
        for sink in self.sinks:
            note = getattr(sink, "note", None)
            if note is not None:
                note(message)


def _size(path: str) -> int:
    """The size of the raw log ``path`` in bytes, creating it (mode 0644 whatever the umask: resume refuses a log
    other users could write) when it does not exist yet; 0 if it cannot be opened (the attempt then says why)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError:
        return 0
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)
