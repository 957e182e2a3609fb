"""``orchestrator-pex runs list|show|watch|prune``: the history of runs under a results directory.

``runs list [--results-dir DIR] [--batch B] [--status S] [--json]``
                                             one line per run, newest first (JSON: a list of summaries).
``runs show RUN_ID [--json]``                a run's instances; RUN_ID may be a unique prefix, ``latest`` or a run
                                             directory path. ``--json`` prints the results document (rebuilt from the
                                             journal if the run is still going or was interrupted; a live run's
                                             instances are ``running``/``retrying``/``pending``).
``runs watch RUN_ID [--progress …]``         the live view of a run started elsewhere (cron, systemd), read only,
                                             from its journal, until it ends; exits with the run's exit status.
``runs prune --keep N | --older-than DAYS [--dry-run] [--json]``
                                             delete old run directories; never a running one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from orchestrator_pex import limits, strictjson
from orchestrator_pex.vocabulary import InstanceStatus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="runs_command", metavar="ACTION")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results-dir", metavar="DIR",
                        help="where runs are kept (default: $ORCHESTRATOR_PEX_RESULTS_DIR or ./orchestrator-runs)")
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    listing = sub.add_parser("list", parents=[common], help="list runs, newest first",
                             description="List runs, newest first.")
    listing.add_argument("--batch", metavar="NAME",
                         help="only runs of this batch (its file name, stem or path)")
    listing.add_argument("--status", metavar="STATUS",
                         help="only runs with this status (running, succeeded, failed, interrupted, ...)")
    show = sub.add_parser("show", parents=[common], help="show one run's instances",
                          description="Show one run's instances.")
    show.add_argument("run_id", metavar="RUN_ID", help="run id, unique prefix of one, latest, or a run directory path")
    watch = sub.add_parser("watch", parents=[common], help="follow a running batch (read only)",
                           description="Show the live view of a run started elsewhere, from its journal, until it "
                                       "ends. Exits with the run's exit status (1 if it was interrupted).")
    watch.add_argument("run_id", metavar="RUN_ID", help="run id, unique prefix of one, latest, or a run directory path")
    watch.add_argument("--progress", choices=("auto", "table", "lines", "json"), default="auto",
                       help="table (redrawn in place), lines, or json (a progress event per interval); "
                            "auto: table on a terminal")
    watch.add_argument("--interval", type=_interval, default=1.0, metavar="SECONDS",
                       help="seconds between two looks at the journal (default 1)")
    prune = sub.add_parser("prune", parents=[common], help="delete old runs", description="Delete old runs.")
    which = prune.add_mutually_exclusive_group(required=True)
    which.add_argument("--keep", type=_keep, metavar="N", help="keep the N newest runs")
    which.add_argument("--older-than", type=_days, metavar="DAYS", help="delete runs started more than DAYS ago")
    prune.add_argument("--dry-run", action="store_true", help="only print what would be deleted")


_keep = limits.int_argument(0, limits.MAX_KEEP, f"an integer from 0 to {limits.MAX_KEEP}")
_days = limits.float_argument(0.0, limits.MAX_DAYS, f"a number of days from 0 to {limits.MAX_DAYS:g}")


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex import history
    from orchestrator_pex.errors import plural
    from orchestrator_pex.request import RunsRequest

    request = RunsRequest.from_args(args)
    results_dir = request.results_dir or history.default_results_dir()
    if request.action == "list":
        runs = [r for r in reversed(history.list_runs(results_dir)) if _matches(r, request.batch, request.status)]
        if request.json:
            _print_json(runs)
        else:
            _print_list(runs, results_dir)
        return 0
    if request.action == "show":
        assert request.run_id is not None  # a required argument of show
        run_dir = history.find_run(results_dir, request.run_id)
        doc = history.document(run_dir)
        if request.json:
            _print_json(doc)
        else:
            _print_show(doc, run_dir)
        return 0
    if request.action == "watch":
        from orchestrator_pex import watch

        assert request.run_id is not None  # a required argument of watch
        return watch.watch(history.find_run(results_dir, request.run_id), request.progress, request.interval)
    removed, running = history.prune(results_dir, keep=request.keep, older_than_days=request.older_than,
                                     dry_run=request.dry_run)
    if request.json:
        _print_json({"removed": [r["run_id"] for r in removed], "skipped_running": [r["run_id"] for r in running],
                     "dry_run": request.dry_run})
    else:
        verb = "would remove" if request.dry_run else "removed"
        for run in removed:
            print(f"{verb} {run['run_id']}  ({run.get('status')}, started {run.get('started_at') or '?'})")
        for run in running:
            print(f"kept {run['run_id']}: still running", file=sys.stderr)
        print(f"{plural(len(removed), 'run')} {verb}", file=sys.stderr)
    return 0


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.05 and 3600, got {text!r}")
    return value


def _matches(run: dict, batch: Optional[str], status: Optional[str]) -> bool:
    if status is not None and run.get("status") != status:
        return False
    if batch is None:
        return True
    import os

    path = str(run.get("batch") or "")
    base = os.path.basename(path)
    return batch in (path, base, os.path.splitext(base)[0])


def _print_json(value: object) -> None:
    sys.stdout.write(strictjson.dumps(value, indent=2, sort_keys=False) + "\n")


def _s(value: object, default: str = "-") -> str:
    """A field of a (possibly hostile) run document as one printable line."""
    from orchestrator_pex.errors import one_line

    return one_line(str(value))[:200] if value is not None and value != "" else default


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and \
        abs(value) < 1e15 else None


def _print_list(runs: list, results_dir: str) -> None:
    if not runs:
        print(f"no runs under {results_dir}", file=sys.stderr)
        return
    print(f"{'RUN ID':<32} {'STATUS':<12} {'STARTED':<21} {'INST':>5} {'OK':>5} {'COST $':>9}  BATCH")
    for run in runs:
        counts = run.get("counts") if isinstance(run.get("counts"), dict) else {}
        ok = _num(counts.get(InstanceStatus.SUCCEEDED)) or 0
        cost = _num(run.get("cost_usd"))
        print(f"{_s(run.get('run_id')):<32} {_s(run.get('status')):<12} {_s(run.get('started_at')):<21} "
              f"{int(_num(run.get('instances')) or 0):>5} {int(ok):>5} "
              f"{f'{cost:.4f}' if cost is not None else '-':>9}  "
              f"{_s(run.get('batch'))}")
        for problem in run.get("problems") or []:
            print(f"    ! {_s(problem)}", file=sys.stderr)


def _print_show(doc: dict, run_dir: str) -> None:
    print(f"run {_s(doc.get('run_id'))}  status {_s(doc.get('status'))}  ({run_dir})")
    print(f"batch {_s(doc.get('batch'))}  started {_s(doc.get('started_at'))}  finished {_s(doc.get('finished_at'))}")
    instances = [i for i in doc.get("instances") or [] if isinstance(i, dict)] \
        if isinstance(doc.get("instances"), list) else []
    width = min(max([len(_s(i.get("name"))) for i in instances] + [4]), 60)
    print(f"{'NAME':<{width}}  {'STATUS':<14} {'SECONDS':>8} {'COST $':>9}  ERROR")
    for inst in instances:
        duration = _num(inst.get("duration_s"))
        cost = _num(inst.get("cost_usd"))
        error = _s(inst.get("error"), "")[:80]
        print(f"{_s(inst.get('name')):<{width}}  {_s(inst.get('status')):<14} "
              f"{(f'{duration:.1f}' if duration is not None else '-'):>8} "
              f"{(f'{cost:.4f}' if cost is not None else '-'):>9}  {error}")
