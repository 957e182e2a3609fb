"""``orchestrator-pex resume RUN_DIR``: finish a run that was interrupted (crash, SIGKILL, reboot, Ctrl-C, full disk).

What is rerun. The run's journal (``RUN_DIR/journal.jsonl``) is replayed; an instance the journal records as
``succeeded`` is never started again. By default resume reruns instances that never got to finish on their own:
``not-started``, ``cancelled``, ``timed-out``, ``stalled``, and instances the journal saw start but never finish
(the orchestrator died under them). ``--rerun-failed`` also reruns ``failed``, ``api-error`` and ``budget-stopped``
ones. Resuming a run with nothing to rerun does nothing and exits 0.

How. The batch is read from the run's verbatim copy (``batch.toml``/``batch.json`` in the run directory), resolved
against the original batch file's folder, so the rerun uses exactly the definitions of the first run. The resume
takes the same lock as a run of that batch (exit 75 if one is in progress), appends to the same journal (a new
``run_started`` event marks the resumed session) and rewrites ``results.json`` for the whole batch: earlier results
plus the reruns. Exit statuses are those of ``run``: 0 every instance of the batch succeeded, 1 some did not,
3 a blocking budget stopped the resumed session, 130/143 interrupted again (resume again to continue).

RUN_DIR may also be a run id (or unique prefix) under ``--results-dir``.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (or a run id under --results-dir)")
    parser.add_argument("--rerun-failed", action="store_true",
                        help="also rerun failed, api-error and budget-stopped instances (default: only interrupted, "
                             "cancelled, timed-out, stalled and not-started ones)")
    parser.add_argument("--json", action="store_true", help="print the whole batch's results document on stdout")
    parser.add_argument("--json-logs", action="store_true", help="progress as JSON lines on stderr")
    parser.add_argument("--concurrency", type=int, metavar="N", help="instances at once (default: the batch's)")
    parser.add_argument("--claude", metavar="PATH", help="the Claude Code executable (default: the batch's)")
    parser.add_argument("--results-dir", metavar="DIR", help="where to look up RUN_DIR given as a run id")
    parser.add_argument("--dry-run", action="store_true", help="print which instances would be rerun and exit")
    from orchestrator_pex.lock import add_lock_arguments

    add_lock_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex import history, journal
    from orchestrator_pex.errors import UsageError

    run_dir = args.run_dir
    if not os.path.isdir(run_dir):
        run_dir = history.find_run(args.results_dir or history.default_results_dir(), run_dir)
    run_dir = os.path.abspath(run_dir)
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    state, problems = journal.load_run(run_dir)
    for problem in problems:
        print(f"orchestrator-pex: warning: {problem}", file=sys.stderr)
    batch_path = state.run_meta.get("batch")
    if not isinstance(batch_path, str) or not batch_path:
        raise UsageError(f"{run_dir}: the journal does not name the run's batch file")

    from orchestrator_pex import lock

    with lock.acquire(lock.lock_for_args(args, batch_path), args.wait_lock) as held:
        # re-read under the lock: another resume may have finished meanwhile
        state, _ = journal.load_run(run_dir)
        batch = load_batch_copy(run_dir, state.run_meta)
        names = [inst.name for inst in batch.instances]
        rerun = state.to_rerun(names, rerun_failed=args.rerun_failed)
        if args.dry_run:
            for name in rerun:
                print(name)
            return 0
        if not rerun:
            return _nothing_to_do(run_dir, state, args)
        from orchestrator_pex import guardian

        guard = guardian.start(keep_fds=(held.fd,))
        try:
            return _resume(run_dir, state, batch, rerun, args, guard)
        finally:
            guard.close()


def load_batch_copy(run_dir: str, run_meta: dict):  # type: ignore[no-untyped-def]
    """The run's batch from its verbatim copy, with relative paths resolved against the original batch's folder."""
    from orchestrator_pex import config
    from orchestrator_pex.errors import RunDirError

    original = str(run_meta.get("batch") or "")
    copy = run_meta.get("batch_copy")
    candidates = [os.path.join(run_dir, copy)] if isinstance(copy, str) and copy else []
    candidates += [os.path.join(run_dir, n) for n in ("batch.toml", "batch.json")]
    for path in candidates:
        if os.path.isfile(path):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise RunDirError(f"{path}: cannot read the run's batch copy: {exc.strerror or exc}") from None
            # parse as if it were the original file: same relative paths, same label in messages
            suffix = os.path.splitext(path)[1]
            as_path = original if original.endswith(suffix) else os.path.splitext(original)[0] + suffix
            return config.parse_batch(data, as_path or path)
    raise RunDirError(f"{run_dir}: the run's batch copy (batch.toml or batch.json) is missing; cannot resume")


def _nothing_to_do(run_dir: str, state, args) -> int:  # type: ignore[no-untyped-def]
    """Nothing to rerun: make sure results.json reflects the journal, report, exit 0."""
    from orchestrator_pex import history, results

    doc = history.rebuild_document(run_dir, state, status=_final_status(history.all_records(run_dir, state)))
    results.write_atomic(os.path.join(run_dir, "results.json"), doc)
    left = [r["name"] for r in doc["instances"] if r["status"] != "succeeded"]
    hint = f"; {len(left)} instance(s) did not succeed (rerun them with --rerun-failed)" if left else ""
    print(f"orchestrator-pex: nothing to resume in {run_dir}{hint}", file=sys.stderr)
    if args.json:
        _print_doc(doc)
    return 0


def _final_status(records) -> str:  # type: ignore[no-untyped-def]
    return "succeeded" if all(r["status"] == "succeeded" for r in records) else "failed"


def _print_doc(doc: dict) -> None:
    import json

    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _resume(run_dir, state, batch, rerun, args, guard) -> int:  # type: ignore[no-untyped-def]
    import trio

    from orchestrator_pex import errors, history, journal, plan as plan_mod, report, results
    from orchestrator_pex.scheduler import Scheduler
    from orchestrator_pex.version import version

    the_plan = plan_mod.make_plan(batch, args.claude)
    only = set(rerun)
    sub_plan = plan_mod.Plan(batch=the_plan.batch, agent=the_plan.agent,
                             launches=tuple(l for l in the_plan.launches if l.name in only))
    agent_version = plan_mod.preflight(sub_plan)
    mode = "json" if args.json_logs else ("tty" if sys.stderr.isatty() else "lines")
    console = report.Console(mode)
    jr = journal.Journal.open(run_dir)
    scheduler = Scheduler(
        the_plan, run_dir, sinks=[jr, console], concurrency=args.concurrency, only=only,
        on_spawn=lambda a: guard.register(a.pid), on_exit=lambda a: guard.unregister(a.pid),
    )
    console.scheduler = scheduler
    os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
    signalled = []

    async def session() -> None:
        await jr.emit({
            "event": "run_started", "run_id": state.run_meta.get("run_id"), "batch": state.run_meta.get("batch"),
            "batch_copy": state.run_meta.get("batch_copy"), "started_at": results.iso(__import__("time").time()),
            "orchestrator_version": version(), "agent_version": agent_version, "resumed": True,
            "instances": len(rerun), "rerun": list(rerun),
        })
        await console.emit({"event": "run_started", "run_id": state.run_meta.get("run_id"),
                            "batch": state.run_meta.get("batch"), "instances": len(rerun)})
        import signal

        async with trio.open_nursery() as nursery:
            async def watch_signals() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        signalled.append(signum)
                        scheduler.interrupt()

            async def tick() -> None:
                while True:
                    await trio.sleep(1.0)
                    console.tick()

            nursery.start_soon(watch_signals)
            nursery.start_soon(tick)
            await scheduler.run()
            nursery.cancel_scope.cancel()

    try:
        trio.run(session)
    except errors.RunDirError:
        console.close()
        jr.close()
        raise
    console.close()
    # the whole batch, from the journal: earlier sessions plus this one (a success is never replaced)
    new_state, _ = journal.load_run(run_dir)
    records = history.all_records(run_dir, new_state)
    if signalled:
        status = "interrupted"
    else:
        status = results.run_status(records, budget_stopped=scheduler.budget_stopped)
    doc = history.rebuild_document(run_dir, new_state, status=status)
    doc["finished_at"] = results.iso(__import__("time").time())
    try:
        jr.append_sync({"event": "run_finished", "status": status, "finished_at": doc["finished_at"],
                        "totals": doc["totals"]})
    finally:
        jr.close()
    results.write_atomic(os.path.join(run_dir, "results.json"), doc)
    sys.stderr.write(report.summary_table(doc) + "\n")
    if args.json:
        _print_doc(doc)
    if signalled:
        import signal

        return errors.EXIT_SIGINT if signalled[0] == signal.SIGINT else errors.EXIT_SIGTERM
    if scheduler.budget_stopped:
        return errors.EXIT_BUDGET
    return errors.EXIT_OK if status == "succeeded" else errors.EXIT_FAILED
