"""``orchestrator-pex resume RUN_DIR``: finish a run that was interrupted (crash, SIGKILL, reboot, Ctrl-C, full disk).

What is rerun. The run's journal (``RUN_DIR/journal.jsonl``) is replayed; an instance the journal records as
``succeeded`` is never started again. By default resume reruns instances that never got to finish on their own:
``not-started``, ``cancelled``, ``timed-out``, ``stalled``, and instances the journal saw start but never finish
(the orchestrator died under them), and ``failed`` ones whose ``error`` starts with ``internal error:`` (ended by
the orchestrator's own bug, see :mod:`orchestrator_pex.internal_errors`). ``--rerun-failed`` also reruns
``failed``, ``api-error`` and ``budget-stopped`` ones. Resuming a run with nothing to rerun does nothing and exits 0.

How. The batch is read from the run's verbatim copy (``batch.toml``/``batch.json`` in the run directory), resolved
against the original batch file's folder, so the rerun uses exactly the definitions of the first run. The resume
takes the same lock as a run of that batch (exit 75 if one is in progress), appends to the same journal (a new
``run_started`` event marks the resumed session) and rewrites ``results.json`` for the whole batch: earlier results
plus the reruns. Exit statuses are those of ``run``: 0 every instance of the batch succeeded, 1 some did not,
3 a blocking budget stopped the resumed session, 130/143 interrupted again (resume again to continue).

Trust. Resume reads only what it can verify (:func:`verify_run_dir`, :func:`verify_logs`,
:func:`load_batch_copy`): the run directory, its journal, ``results.json``, the batch copy, ``logs/`` and the raw
stdout logs it re-reads must each pass :func:`orchestrator_pex.lock.untrusted` (not a symlink, owned by this user or
root, not group/world-writable), else one line and exit 2 before anything is read or started; the batch copy must
hash to the ``batch_sha256`` the journal recorded at start. Everything that runs is derived from that verified
batch (or, for a masked copy, from the original file with the same hash).

Spend. Attempts the journal saw start but never end (the orchestrator was killed under them) keep what they spent:
their tokens and cost are re-read from their part of the raw stdout log (:mod:`orchestrator_pex.recovery`), count
against the batch budget, and are carried into the instance's next record, exactly once.

Dependencies. Instances that need one another are rerun together: a ``skipped`` instance is rerun only when an
instance it needs is rerun, and every instance that did not succeed and needs a rerun instance is rerun as well
(including one rerun because an internal error ended it). Placeholders of the reruns are filled from the recorded
results of the instances they need (a succeeded dependency is never run again). Worktrees recorded by the earlier
session are reused as they are (same branch, same directory).

RUN_DIR may also be a run id (or unique prefix) under ``--results-dir``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any, List

import attrs

from orchestrator_pex import vocabulary
from orchestrator_pex.request import ResumeRequest
from orchestrator_pex.vocabulary import InstanceStatus

if TYPE_CHECKING:
    from orchestrator_pex import journal

from orchestrator_pex import strictjson


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from orchestrator_pex.commands.run import add_run_options

    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (or a run id under --results-dir)")
    parser.add_argument("--rerun-failed", action="store_true",
                        help="also rerun failed, api-error and budget-stopped instances (default: only interrupted, "
                             "cancelled, timed-out, stalled and not-started ones)")
    parser.add_argument("--dry-run", action="store_true", help="print which instances would be rerun; start nothing")
    add_run_options(parser)  # --json --json-logs --results-dir --claude --concurrency ... --lock --wait-lock


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex import history, internal_errors, journal, lock
    from orchestrator_pex.errors import RunDirError, UsageError

    request = ResumeRequest.from_args(args)
    options = request.options
    run_dir = request.run_dir
    if not os.path.isdir(run_dir):
        run_dir = history.find_run(options.results_dir or history.default_results_dir(), run_dir)
    run_dir = os.path.abspath(run_dir)
    verify_run_dir(run_dir)
    state, problems = journal.load_run(run_dir)
    for problem in problems:
        print(f"orchestrator-pex: warning: {problem}", file=sys.stderr)
    batch_path = state.run_meta.get("batch")
    if not isinstance(batch_path, str) or not batch_path:
        raise UsageError(run_dir, "", "the journal does not name the run's batch file")

    from orchestrator_pex import shard

    try:
        where = shard.recorded(state.run_meta.get("shard"))
    except ValueError as exc:
        raise RunDirError(journal.journal_path(run_dir), "shard", str(exc)) from None
    lock_path = lock.lock_for(options.lock, batch_path, variant=shard.lock_variant(where))
    with lock.acquire(lock_path, options.wait_lock) as held:
        # decide under the lock: a resume that finished meanwhile must not make us rerun its successes
        verify_run_dir(run_dir)
        state, _ = journal.load_run(run_dir)
        verify_logs(run_dir, state)
        from orchestrator_pex.plan import make_plan
        from orchestrator_pex.policy import enforce
        from orchestrator_pex.session import launch

        try:
            batch, batch_error = load_batch_copy(run_dir, state.run_meta), None
        except RunDirError as exc:  # e.g. masked copy and a changed original: fatal only if something must run
            batch, batch_error = None, exc
        meta = {"resumed": True, "first_started_at": state.run_meta.get("first_started_at")
                or state.run_meta.get("started_at")}
        plan = None
        if batch is not None:
            plan = make_plan(batch, options.claude, codex=options.codex, gemini=options.gemini,
                             env_file=options.env_file)
            if where is not None:
                # the run was one shard of the batch: resume that shard only (budgets as given in the batch)
                plan, shard_meta = shard.restrict(plan, where, False)
                meta.update(shard_meta)
            if isinstance(state.run_meta.get("selection"), dict):
                # the run covered a selection (--only/--tags/--exclude): resume that selection only
                from orchestrator_pex.selection import recorded_names

                selected = set(recorded_names(state.run_meta, [one.name for one in plan.launches]))
                plan = attrs.evolve(plan, launches=tuple(one for one in plan.launches if one.name in selected))
                meta["selection"] = state.run_meta["selection"]
            names = [launch.name for launch in plan.launches]
        else:
            assert batch_error is not None  # the copy could not be loaded
            names = _names_from_masked_copy(run_dir, state, batch_error)
        rerun = state.to_rerun(names, rerun_failed=request.rerun_failed)
        # ended by the orchestrator's own bug (error "internal error: ..."), not on their own: rerun by default too
        chosen = set(rerun)
        rerun = [n for n in names if n in chosen or internal_errors.is_internal(state.records.get(n))]
        if plan is not None:
            rerun = _with_dependents(plan, state, names, rerun)
        if request.dry_run:
            for name in rerun:
                print(name)
            return 0
        if not rerun:
            return _nothing_to_do(run_dir, state, print_json=options.json)
        if batch_error is not None:
            raise batch_error
        # the run's own results directory (policy: where its worktrees are)
        plan = enforce(plan, options.policy, options.concurrency, results_dir=os.path.dirname(run_dir))
        print(f"orchestrator-pex: resuming {os.path.basename(run_dir)}: rerunning {len(rerun)} of {len(names)} "
              "instance(s)", file=sys.stderr)
        records = history.all_records(run_dir, state)
        prior = {r["name"]: r for r in records if r["name"] not in set(rerun)}
        # what the run already spent (reruns' earlier attempts included) counts against the batch budget
        spent = (sum(r["tokens"]["total"] for r in records), sum(r["cost_usd"] or 0.0 for r in records))
        carried = {r["name"]: r for r in records if r["name"] in set(rerun) and r.get("attempts")}
        options = attrs.evolve(options, results_dir=os.path.dirname(run_dir))
        return launch(plan, options, run_id=os.path.basename(run_dir), only=set(rerun), prior=prior, held_lock=held,
                      spent=spent, carried=carried,
                      meta=meta)


def _with_dependents(plan: Any, state: Any, names: List[str], rerun: List[str]) -> List[str]:
    """``rerun`` adjusted for dependencies: a ``skipped`` instance is rerun only when something it needs (directly or
    not) is rerun, and every instance that did not succeed and needs a rerun instance is rerun too. An instance
    recorded as succeeded is never rerun."""
    from orchestrator_pex import graph

    needs = {launch.name: tuple(launch.instance.needs or ()) for launch in plan.launches}
    if not any(needs.values()):
        return rerun

    def status(name: str) -> Any:
        return (state.records.get(name) or {}).get("status")

    base = [n for n in rerun if status(n) != InstanceStatus.SKIPPED or n in state.in_flight]
    chosen = set(base) | {n for n in graph.dependents(needs, base) if status(n) != InstanceStatus.SUCCEEDED}
    return [n for n in names if n in chosen]
def _refuse_untrusted(path: str, what: str, directory: bool = False) -> None:
    """Exit 2 with one line unless ``path`` passes :func:`orchestrator_pex.lock.untrusted` (missing is fine)."""
    from orchestrator_pex.errors import UsageError
    from orchestrator_pex.lock import untrusted

    try:
        problem = untrusted(path, directory=directory)
    except FileNotFoundError:
        return
    except OSError as exc:
        problem = f"cannot be examined: {exc.strerror or exc}"
    if problem:
        raise UsageError(path, "", f"refusing to resume: the {what} may have been written by another user: {problem}")


def verify_run_dir(run_dir: str) -> None:
    """Refuse (exit 2) a run directory, journal or results.json another local user could have written."""
    from orchestrator_pex import journal

    _refuse_untrusted(run_dir, "run directory", directory=True)
    _refuse_untrusted(journal.journal_path(run_dir), "run journal")
    _refuse_untrusted(os.path.join(run_dir, "results.json"), "results document")


def verify_logs(run_dir: str, state: journal.RunState) -> None:
    """Refuse (exit 2) the raw stdout logs resume re-reads for interrupted attempts' spend, if untrusted."""
    from orchestrator_pex.results import log_stem

    if state.unfinished:
        _refuse_untrusted(os.path.join(run_dir, "logs"), "logs directory", directory=True)
    for name in state.unfinished:
        _refuse_untrusted(os.path.join(run_dir, "logs", f"{log_stem(name)}.stdout"), "raw stdout log")


def _names_from_masked_copy(run_dir: str, state, error: Exception):
    """Instance names (in batch order, the run's shard only) from a secret-masked batch copy; else raise ``error``."""
    from orchestrator_pex import config, history

    copy = state.run_meta.get("batch_copy")
    if (state.run_meta.get("batch_copy_masked") and isinstance(copy, str)
            and os.path.isfile(os.path.join(run_dir, copy))):
        try:
            batch = config.load_batch(os.path.join(run_dir, copy))
        except Exception:  # noqa: BLE001 - the masked copy does not parse: report the original problem
            raise error from None
        from orchestrator_pex.selection import recorded_names

        names = history.shard_names(state.run_meta, [inst.name for inst in batch.instances],
                                    {inst.name: inst.needs or () for inst in batch.instances})
        return recorded_names(state.run_meta, names)
    raise error


def load_batch_copy(run_dir: str, run_meta: dict):
    """The run's batch from its verbatim copy, with relative paths resolved against the original batch's folder.

    A copy whose secret values were masked (``batch_copy_masked``) cannot be run: then the original batch file is
    read, and only if it is byte for byte what the run started with (``batch_sha256``).
    """
    import hashlib

    from orchestrator_pex import config
    from orchestrator_pex.errors import RunDirError, UsageError

    original = str(run_meta.get("batch") or "")
    if run_meta.get("batch_copy_masked"):
        try:
            with open(original, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise RunDirError(original, "", f"cannot read the batch file (the run's copy has its secret values "
                              f"masked, so resume needs the original): {exc.strerror or exc}") from None
        if hashlib.sha256(data).hexdigest() != run_meta.get("batch_sha256"):
            raise RunDirError(original, "", "changed since the run started; resume needs the same definitions "
                              "(the run's copy has its secret values masked). Restore the file or start a new run")
        return config.parse_batch(data, original)
    copy = run_meta.get("batch_copy")
    candidates = [os.path.join(run_dir, copy)] if isinstance(copy, str) and copy else []
    candidates += [os.path.join(run_dir, n) for n in ("batch.toml", "batch.json")]
    for path in candidates:
        if os.path.lexists(path):
            _refuse_untrusted(path, "batch copy")
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise RunDirError(path, "", f"cannot read the run's batch copy: {exc.strerror or exc}") from None
            recorded = run_meta.get("batch_sha256")
            if isinstance(recorded, str) and hashlib.sha256(data).hexdigest() != recorded:
                raise UsageError(path, "", "refusing to resume: the batch copy is not the batch the run started with "
                                 "(its sha256 differs from the batch_sha256 the journal recorded)")
            # parse as if it were the original file: same relative paths, same label in messages
            suffix = os.path.splitext(path)[1]
            as_path = original if original.endswith(suffix) else os.path.splitext(original)[0] + suffix
            return config.parse_batch(data, as_path or path)
    raise RunDirError(run_dir, "", "the run's batch copy (batch.toml or batch.json) is missing; cannot resume")


def _nothing_to_do(run_dir: str, state, *, print_json: bool) -> int:
    from orchestrator_pex.errors import plural
    """Nothing to rerun: make sure results.json reflects the journal, report, exit 0."""
    from orchestrator_pex import history, results

    current = history.read_results(run_dir)
    if current is not None and state.finished and not state.in_flight and history.agrees_with_journal(current, state):
        doc = current  # a true no-op: results.json already says what the journal says
    else:  # e.g. interrupted with only failures left: bring results.json in line with the journal
        status = vocabulary.run_status(history.all_records(run_dir, state))
        doc = history.rebuild_document(run_dir, state, status=status,
                                       finished_at=None if state.finished else results.iso(time.time()))
        results.write_atomic(os.path.join(run_dir, "results.json"), doc)
        if not state.finished or state.in_flight:  # close the journal's last session, so the run reads as done
            from orchestrator_pex.journal import Journal
            from orchestrator_pex.records import RunFinished, event_to_json

            with Journal.open(run_dir) as jr:
                jr.append_sync(event_to_json(RunFinished(doc["status"], finished_at=doc["finished_at"],
                                                         totals=doc["totals"],
                                                         note="closed by resume: nothing to rerun")))
    left = [r["name"] for r in doc["instances"] if r["status"] != InstanceStatus.SUCCEEDED]
    hint = f"; {plural(len(left), 'instance')} did not succeed (rerun them with --rerun-failed)" if left else ""
    print(f"orchestrator-pex: nothing to resume in {run_dir}{hint}", file=sys.stderr)
    if print_json:
        _print_doc(doc)
    return 0


def _print_doc(doc: dict) -> None:

    sys.stdout.write(strictjson.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
