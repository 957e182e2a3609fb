"""Watch: the live view of a run started elsewhere (cron, systemd, another terminal), read only, from its journal.

:func:`watch` re-reads ``<run_dir>/journal.jsonl`` every ``interval`` seconds, folds it into a
:class:`~orchestrator_pex.progress.Progress` snapshot (:func:`orchestrator_pex.progress.from_journal`) and draws it
with the same console as ``run`` (``table``, ``lines`` or ``json``). It never writes into the run directory and
never signals the run. It returns when the journal's last session has ended (``run_finished``) or when the
orchestrator that writes it is gone (then the run is ``interrupted``: ``resume`` finishes it).

Exit status: the ``exit_status`` the run recorded in ``run_finished``; 1 (:data:`errors.EXIT_FAILED`) if the run was
interrupted; an unreadable run directory is an error line and status 1, as for ``runs show``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import List, Optional, Tuple

from orchestrator_pex import errors, history, journal, progress, records, report
from orchestrator_pex.results import iso


def snapshot(run_dir: str) -> Tuple[progress.Progress, Optional[int], bool]:
    """``(progress, recorded exit status or None, writer alive)`` of the run in ``run_dir`` now."""
    events, _ = journal.read_events(journal.journal_path(run_dir))
    state = journal.replay_state(events)
    names = history.batch_instance_names(run_dir, state, None)
    last_start = max(i for i, e in enumerate(events) if isinstance(e, records.RunStarted))
    view = progress.from_journal(events, names)
    exit_status = None
    for event in events[last_start:]:
        if isinstance(event, records.RunFinished) and event.exit_status is not None:
            exit_status = event.exit_status
    return view, exit_status, history.writer_alive(state.run_meta)


def watch(run_dir: str, mode: str = "auto", interval: float = 1.0, stream=None) -> int:
    """Follow the run in ``run_dir`` until it ends; return its exit status (see the module docstring)."""
    stream = stream or sys.stderr
    console = report.Console(report.choose_mode(mode, stream), stream, summary_every=interval)
    current: List[progress.Progress] = []
    console.view = lambda: current[-1]
    seen = -1
    while True:
        view, exit_status, alive = snapshot(run_dir)
        current[:] = [view]
        if console.mode == "table":
            console.tick()
        elif console.mode == "json":
            print(json.dumps({"ts": iso(time.time()), **report.progress_event(view, time.time())}), file=stream,
                  flush=True)
        elif view.done != seen:  # lines: one line whenever another instance finished
            print(f"{iso(time.time())} {os.path.basename(run_dir)}: {console.summary_line()}", file=stream,
                  flush=True)
            seen = view.done
        if view.finished or not alive:
            break
        time.sleep(interval)
    console.close()
    doc = history.document(run_dir)
    if console.mode != "json":
        print(report.summary_table(doc), file=stream)
        print(f"run {doc.get('run_id')}: {doc.get('status')}", file=stream)
    if exit_status is not None:
        return exit_status
    return errors.EXIT_FAILED
