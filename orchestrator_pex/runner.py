"""Runner: one run of a planned batch — its run directory, signals, report, and the results document.

:func:`execute` is shared by ``run`` and ``resume``. It owns the top nursery: the signal watcher, the report's
ticker and the scheduler run under it. SIGINT or SIGTERM stops launching and ends every running instance (its
process group gets SIGTERM, SIGKILL after the grace period); a second signal SIGKILLs them at once. Whatever
happens, ``results.json`` is written (atomically) before :func:`execute` returns, and the exit status says why the
run ended: 130/143 interrupted, 3 budget-stopped, 1 an instance did not succeed, 0 all succeeded.

Error boundary. An unexpected exception that reaches the top (not a user-facing
:class:`~orchestrator_pex.errors.OrchestratorError`, which keeps its own one line and status) ends the batch: the
running instances are cancelled (their process groups ended; recorded ``cancelled``, which ``resume`` reruns by
default), instances not launched yet are ``not-started``, the traceback is saved as
``<run_dir>/internal-errors/_run.txt``, and then, as on every other path, ``results.json`` is written and the journal
gets ``run_finished``; both carry ``internal_error`` (``error``: one line starting ``internal error:``,
``traceback``: the file's path or null). The run's status is ``failed`` and the exit status 70 (EX_SOFTWARE).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import signal
import sys
import time
from typing import Any, Awaitable, Callable, Dict, Iterator, Optional, Sequence, Set, Tuple

import attrs
import trio

from orchestrator_pex import errors, internal_errors, progress, results, secrets, vocabulary
from orchestrator_pex.plan import Plan
from orchestrator_pex.records import InstanceFinished, RunFinished, RunStarted, WarningEvent, event_to_json
from orchestrator_pex.report import Console
from orchestrator_pex.scheduler import Scheduler
from orchestrator_pex.version import version
from orchestrator_pex.vocabulary import RunStatus


class _Signals:
    received: Optional[int] = None


def console_mode(progress: str, stream=sys.stderr) -> str:
    """The report form for a ``--progress`` choice (``auto`` decided by ``stream``: a terminal or not)."""
    from orchestrator_pex.report import choose_mode

    return choose_mode(progress or "auto", stream)


def batch_copy_name(batch_path: str) -> str:
    return "batch" + (".json" if batch_path.endswith(".json") else ".toml")


def prepare_run_dir(
    results_dir: str, batch_path: str, run_id: Optional[str] = None, redactor=None
) -> Tuple[str, str, Dict[str, Any]]:
    """Create ``<results_dir>/<run_id>/logs`` and keep a copy of the batch file there.

    The copy is verbatim unless the batch holds secret values, which are masked (``batch_copy_masked``): then
    ``resume`` reads the original file, which must still have the recorded ``batch_sha256``. Returns the run id,
    the run directory and those facts for the ``run_started`` event.
    """
    run_id = run_id or results.new_run_id(batch_path, time.time())
    run_dir = os.path.join(os.path.abspath(results_dir), run_id)
    name = batch_copy_name(batch_path)
    try:
        with open(batch_path, "rb") as f:
            data = f.read()
        # never group/world-writable whatever the umask: resume refuses a run directory others could write
        os.makedirs(run_dir, mode=0o755, exist_ok=True)
        os.makedirs(os.path.join(run_dir, "logs"), mode=0o755, exist_ok=True)
        copy = secrets.masked_copy(data, name.endswith(".json"), redactor) if redactor else data
        path = os.path.join(run_dir, name)
        if not os.path.exists(path):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as f:
                f.write(copy)
    except OSError as exc:
        raise errors.UsageError(run_dir, "", f"cannot create the run directory: {exc.strerror}") from None
    except ValueError as exc:  # the batch changed under us and no longer parses: never write an unmasked copy
        raise errors.UsageError(batch_path, "", f"cannot write the run's masked batch copy: {exc}") from None
    facts = {"batch_copy": name, "batch_sha256": hashlib.sha256(data).hexdigest(), "batch_copy_masked": copy != data}
    return run_id, run_dir, facts


async def execute(
    plan: Plan,
    *,
    run_id: str,
    run_dir: str,
    console: Console,
    sinks: Sequence[Any] = (),
    agent_version: Optional[str] = None,
    start_at: Optional[datetime.datetime] = None,
    only: Optional[Set[str]] = None,
    prior: Optional[Dict[str, Dict[str, Any]]] = None,
    meta: Optional[Dict[str, Any]] = None,
    spent: Tuple[int, float] = (0, 0.0),
    watchers: Sequence[Callable[[Callable[[str], None]], Awaitable[None]]] = (),
    report_html: bool = True,
    metrics_file: Optional[str] = None,
    **scheduler_options: Any,
) -> Tuple[Dict[str, Any], int]:
    """Run ``plan`` (or only the instances named in ``only``; ``prior`` records stand for the others).

    ``spent`` (tokens, dollars) is what earlier sessions of this run already used: it counts against the batch budget.
    ``watchers`` are background tasks run beside the batch (e.g. the guardian's watch); each is called with a
    function that prints a warning.
    After ``results.json``: ``report.html`` in the run directory (unless ``report_html`` is false) and, with
    ``metrics_file``, the Prometheus metrics (also written at the start and every ``metrics.INTERVAL`` seconds).
    Neither can fail the run: a problem writing them is a warning.
    """
    scheduler = Scheduler(plan, run_dir, sinks=[console, *sinks], only=only, prior=prior, **scheduler_options)
    scheduler.tokens, scheduler.cost = spent
    started = time.time()
    console.view = lambda: progress.from_scheduler(scheduler, started)
    run_meta: Dict[str, Any] = {
        "run_id": run_id, "batch": plan.batch.path, "started_at": results.iso(started), "finished_at": None,
        "status": RunStatus.RUNNING, "run_dir": run_dir, "orchestrator_version": version(),
        "agent_version": agent_version, **(meta or {}),
    }
    if any(launch.instance.needs for launch in plan.launches):  # merge checks shards hold whole components
        run_meta["graph"] = {launch.name: list(launch.instance.needs or ()) for launch in plan.launches}
    sig = _Signals()
    why_unrecorded: Optional[str] = None
    failure: Optional[BaseException] = None
    try:
        async with trio.open_nursery() as top:
            wait_scope = trio.CancelScope()
            await top.start(_watch_signals, scheduler, sig, wait_scope)
            top.start_soon(_tick, console)
            for watch in watchers:
                top.start_soon(watch, scheduler.warn)
            if metrics_file:
                top.start_soon(_write_metrics_periodically, metrics_file, run_meta, scheduler, prior, console)
            try:
                await scheduler.emit(event_to_json(RunStarted.of(len(scheduler.states), run_meta)))
                if start_at is not None:
                    with wait_scope:
                        await console.emit(event_to_json(WarningEvent(f"waiting until {start_at.isoformat()}")))
                        await trio.sleep(max(0.0, start_at.timestamp() - time.time()))
                await scheduler.run_all()
            finally:
                top.cancel_scope.cancel()
    except Exception as exc:  # the run's error boundary (see the module docstring)
        if errors.find(exc) is not None:
            raise  # user-facing (e.g. the journal cannot be written): one line and its own exit status
        failure = exc
        why_unrecorded = "not started: the orchestrator failed (see internal_error)"
        await _record_failure(scheduler, run_dir, exc, run_meta, why_unrecorded)
    ordered = results.LazyRecords(lambda: _ordered(plan, scheduler, prior or {}, why_unrecorded),
                                  len(plan.launches))
    status = vocabulary.run_status(ordered, interrupted=sig.received is not None,
                                   budget_stopped=scheduler.budget_stopped)
    if failure is not None:
        status = RunStatus.FAILED
    exit_status = vocabulary.exit_status(status, received=sig.received, internal_error=failure is not None)
    run_meta.update(finished_at=results.iso(time.time()), status=status, exit_status=exit_status)
    doc = results.lazy_document(run_meta, ordered)
    results.write_atomic(os.path.join(run_dir, "results.json"), doc)
    ended = RunFinished(status, exit_status, run_meta["finished_at"], doc["totals"])
    finished = event_to_json(ended)
    with trio.CancelScope(shield=True):
        await _write_outputs(doc, run_dir, plan, console, report_html, metrics_file)
    with trio.CancelScope(shield=True):
        if failure is None:
            await scheduler.emit(finished)
        else:  # the failing part may be a sink: every other sink (the journal) still gets the run's end
            finished = event_to_json(attrs.evolve(ended, internal_error=run_meta["internal_error"]))
            for sink in scheduler.sinks:
                try:
                    await sink.emit(finished)
                except Exception:  # noqa: BLE001 - already failing; results.json holds the same facts
                    pass
    console.close()
    return doc, exit_status  # doc's instances read the scheduler's spill: closed when the scheduler is collected


def _ordered(plan: Plan, scheduler: Scheduler, prior: Dict[str, Dict[str, Any]],
             why: Optional[str]) -> Iterator[Dict[str, Any]]:
    """Every instance's record in batch order, decoded one at a time: the scheduler's (its states follow the
    plan's order), else ``prior``'s, else ``not-started``. ``why``: the run boundary caught a failure and an
    instance without a record yet is its earlier session's record or ``not-started`` with that reason."""
    states = iter(scheduler.states)
    state = next(states, None)
    for launch in plan.launches:
        record: Optional[Dict[str, Any]] = None
        if state is not None and state.launch is launch:
            record = state.record
            if record is None and why is not None:
                record = scheduler.carried.get(launch.name) or results.not_started(launch.name, why)
            state = next(states, None)
        yield record or prior.get(launch.name) or results.not_started(
            launch.name, tags=launch.instance.tags or (), description=launch.instance.description)


async def _record_failure(
    scheduler: Scheduler, run_dir: str, exc: BaseException, run_meta: Dict[str, Any], why: str
) -> None:
    """The run boundary's bookkeeping: save the traceback, describe it in ``run_meta["internal_error"]``, and
    journal (best-effort) a ``not-started`` record with ``why`` for every instance never launched."""
    redactor = scheduler._redactor
    path = internal_errors.save(run_dir, internal_errors.RUN_LABEL, exc, redactor.scrub_text if redactor else None)
    message = f"{internal_errors.PREFIX} {internal_errors.summary(exc)}"
    if redactor is not None:
        message = redactor.scrub_text(message)
    run_meta["internal_error"] = {"error": message, "traceback": path}
    unrecorded = [s.launch.name for s in scheduler.states if not s.recorded]
    with trio.CancelScope(shield=True):
        for sink in scheduler.sinks:
            try:
                for name in unrecorded:
                    record = scheduler.carried.get(name) or results.not_started(name, why)
                    await sink.emit(event_to_json(InstanceFinished(name, record)))
            except Exception:  # noqa: BLE001 - best effort: a record missing from the journal is rerun anyway
                continue


async def _watch_signals(scheduler: Scheduler, sig: _Signals, wait_scope: trio.CancelScope, task_status) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        task_status.started()
        async for signum in received:
            if sig.received is None:
                sig.received = signum
                wait_scope.cancel()
                scheduler.interrupt()
            else:  # asked twice: no more grace
                for attempt in scheduler.attempts_running():
                    if attempt.pid is None:  # never: running attempts have a pid (and killpg(0) is our own group)
                        continue
                    try:
                        os.killpg(attempt.pid, signal.SIGKILL)
                    except OSError:
                        pass


async def _tick(console: Console) -> None:
    while True:
        await trio.sleep(1.0)
        console.tick()


async def _write_outputs(doc: Dict[str, Any], run_dir: str, plan: Plan, console: Console, report_html: bool,
                         metrics_file: Optional[str]) -> None:
    """report.html and the metrics file of the finished run; a failure is a warning (results.json is written)."""
    from orchestrator_pex import html_report, metrics

    if report_html:
        try:
            await trio.to_thread.run_sync(
                lambda: html_report.write_for_run(run_dir, doc, budget=html_report.budget_of(plan.batch)))
        except Exception as exc:  # noqa: BLE001 - the report is a view; the run's results stand without it
            await console.emit(event_to_json(WarningEvent(f"report.html not written: {exc}")))
    if metrics_file:
        try:
            await trio.to_thread.run_sync(metrics.write, metrics_file, doc, time.time())
        except Exception as exc:  # noqa: BLE001 - metrics are a view; the run's results stand without them
            await console.emit(event_to_json(WarningEvent(f"{metrics_file}: metrics not written: {exc}")))


async def _write_metrics_periodically(path: str, run_meta: Dict[str, Any], scheduler: Scheduler,
                                      prior: Optional[Dict[str, Dict[str, Any]]], console: Console) -> None:
    """The metrics file of the running run: now, then every ``metrics.INTERVAL`` seconds (one warning if it fails)."""
    from orchestrator_pex import metrics

    warned = False
    while True:
        redactor = scheduler._redactor  # live values (a model name) have not been through a record's scrub
        snap = metrics.snapshot(redactor.scrub_data(run_meta) if redactor is not None else run_meta,
                                scheduler.states, list((prior or {}).values()),
                                scrub=redactor.scrub_data if redactor is not None else None)
        try:
            await trio.to_thread.run_sync(metrics.write, path, snap, time.time())
        except Exception as exc:  # noqa: BLE001 - metrics are best effort while running
            if not warned:
                warned = True
                await console.emit(event_to_json(WarningEvent(f"{path}: metrics not written: {exc}")))
        await trio.sleep(metrics.INTERVAL)
