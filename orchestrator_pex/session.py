"""One session of a run, end to end: lock → run directory → guardian → scheduler → results (and their printing).

``run``, ``resume`` and ``demo`` each build a plan and a :class:`~orchestrator_pex.request.RunOptions`, then call
:func:`launch`; none of them reaches into another. Order and guarantees:

1. the batch lock (``shard-I-of-N`` variant for a shard; ``--lock`` replaces the derived path) is taken unless the
   caller already holds it (``resume`` decides what to rerun under it); a held lock is exit 75
   (:class:`~orchestrator_pex.errors.LockHeld`), or a wait of ``wait_lock`` seconds;
2. preflight (:func:`plan.preflight`) unless the caller's checks already ran it, then the run directory is
   created (or reused: ``run_id``) with the masked batch copy;
3. :func:`guardian.protect` opens the journal and starts the orphan guardian, whose hooks and marker are handed to
   the scheduler explicitly;
4. :func:`runner.execute` runs the batch under trio and writes ``results.json`` (and report/metrics);
5. the summary table goes to stderr (unless ``--progress json|none``), the document to stdout with ``--json``, and
   an internal error is named in one line. The return value is the run's exit status (see ``errors.EXIT_STATUSES``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Optional

from orchestrator_pex import results
from orchestrator_pex.request import RunOptions


def launch(plan: Any, options: RunOptions, *, start_at: Optional[str] = None, run_id: Optional[str] = None,
           only: Any = None, prior: Any = None, extra_sinks: Any = (), held_lock: Any = None,
           meta: Optional[Dict[str, Any]] = None, spent: Any = (0, 0.0), carried: Any = None,
           agent_versions: Optional[Dict[str, str]] = None) -> int:
    """Run ``plan`` as one session (see the module doc); returns its exit status. ``agent_versions``: preflight
    already passed (:func:`orchestrator_pex.checks.examine`) and found these; None: preflight runs under the lock."""
    from orchestrator_pex import lock, shard

    session = dict(start_at=start_at, run_id=run_id, only=only, prior=prior, extra_sinks=extra_sinks, meta=meta,
                   spent=spent, carried=carried, agent_versions=agent_versions)
    if held_lock is not None:
        return _launch_locked(plan, options, held_lock=held_lock, **session)
    variant = shard.lock_variant(shard.recorded((meta or {}).get("shard")))
    with lock.acquire(lock.lock_for(options.lock, plan.batch.path, variant=variant), options.wait_lock) as held:
        return _launch_locked(plan, options, held_lock=held, **session)


def _launch_locked(plan: Any, options: RunOptions, *, start_at: Any, run_id: Any, only: Any, prior: Any,
                   extra_sinks: Any, held_lock: Any, meta: Any, spent: Any, carried: Any,
                   agent_versions: Optional[Dict[str, str]]) -> int:
    import datetime

    import trio

    from orchestrator_pex import guardian, report, runner
    from orchestrator_pex.plan import preflight_agents, version_of
    from orchestrator_pex.pricing import PRICING_VERSION
    from orchestrator_pex.secrets import Redactor
    from orchestrator_pex.start_at import parse_start_at

    when = parse_start_at(start_at, datetime.datetime.now().astimezone()) if start_at else None
    if agent_versions is None:
        agent_versions = preflight_agents(plan)
    agent_version = version_of(agent_versions)
    results_dir = results_dir_for(plan, options.results_dir)
    redactor = Redactor.from_env(None, *(launch.env_add for launch in plan.launches),
                                 always=plan.env_file_values.values())
    run_id, run_dir, facts = runner.prepare_run_dir(results_dir, plan.batch.path, run_id, redactor)
    meta = {**facts, "agent_versions": agent_versions, "pricing_version": PRICING_VERSION, **(meta or {})}
    console = report.Console(runner.console_mode(options.progress), scrub=redactor.scrub_text)
    with guardian.protect(run_dir, held_lock, grace=plan.batch.grace_period) as safe:  # journal + orphan guardian
        doc, status = trio.run(
            lambda: runner.execute(
                plan, run_id=run_id, run_dir=run_dir, console=console, sinks=[*safe.sinks, *extra_sinks],
                agent_version=agent_version, start_at=when, only=only, prior=prior, meta=meta, spent=spent,
                carried=carried, report_html=options.report_html,
                metrics_file=options.metrics_file or batch_relative(plan.batch, plan.batch.metrics_file),
                concurrency=options.concurrency, stagger=options.stagger,
                deadline=options.deadline, redactor=redactor, watchers=[safe.watch],
                **safe.scheduler_options,
            )
        )
    if console.mode not in ("json", "none"):
        print(report.summary_table(doc), file=sys.stderr)
        print(f"results: {os.path.join(run_dir, 'results.json')}", file=sys.stderr)
    if options.json:  # record by record, as results.json is written (see results.dump_document)
        results.dump_document(doc, sys.stdout)
        sys.stdout.flush()
    internal = doc.get("internal_error")
    if isinstance(internal, dict):  # the run's error boundary caught a bug: one line naming the traceback
        where = f"traceback saved to {internal['traceback']}" if internal.get("traceback") else \
            "the traceback could not be saved"
        print(f"orchestrator-pex: {internal['error']} ({where}); resume reruns the instances it ended",
              file=sys.stderr)
    return int(status)


def results_dir_for(plan: Any, explicit: Optional[str]) -> str:
    """Where the run directory of ``plan`` goes: ``explicit`` (``--results-dir``), else the batch's ``results_dir``
    (relative to the batch file), else :func:`results.default_results_dir`."""
    from orchestrator_pex.results import default_results_dir

    return explicit or batch_relative(plan.batch, plan.batch.results_dir) or default_results_dir()


def batch_relative(batch: Any, path: Optional[str]) -> Optional[str]:
    """``path`` from the batch file, resolved against the batch file's folder."""
    if not path:
        return None
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(batch.path), path)
