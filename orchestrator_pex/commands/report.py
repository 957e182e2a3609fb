"""``orchestrator-pex report RUN|RESULTS.json [-o FILE]``: write the self-contained HTML report of a run.

RUN is a run directory (or a run id / unique prefix under ``--results-dir``): the document is the run's
``results.json`` (rebuilt from the journal when the run was interrupted, like ``runs show``), attempt times come
from its journal, the budget from its batch copy, and the report goes to ``RUN/report.html`` unless ``-o``.
RESULTS.json is any results document (``run --json`` output, ``merge`` output): times come from the records only,
and the report goes next to it (``NAME.html``) unless ``-o``. Log links are relative to the report's directory.

Exit statuses: 0 the report was written (its path is printed on stdout); 2 the input cannot be read or is not a
results document, or the output cannot be written (one line naming the file).
"""

from __future__ import annotations

import argparse
import json
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="RUN|RESULTS.json", help="a run directory, run id, or results document")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write the report (default: RUN/report.html, or "
                                                          "RESULTS.html beside a results document)")
    p.add_argument("--results-dir", metavar="DIR", help="where to look up a run id (default: "
                                                        "$ORCHESTRATOR_PEX_RESULTS_DIR or ./orchestrator-runs)")


def load_document(path: str) -> dict:
    """A results document from ``path``; :class:`UsageError` (exit 2) naming the file when it is not one."""
    from orchestrator_pex.errors import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise UsageError(path, "", f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(path, "", f"not a JSON results document: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
        raise UsageError(path, "instances", 'not a results document (expected an object with an "instances" list)')
    return doc


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex import history, html_report
    from orchestrator_pex.errors import EXIT_OK, OrchestratorError, UsageError
    from orchestrator_pex.request import ReportRequest

    request = ReportRequest.from_args(args)
    source = request.source
    if os.path.isfile(source):
        doc = load_document(source)
        out = request.output or os.path.splitext(source)[0] + ".html"
        try:
            html_report.write(out, html_report.render(doc, base_dir=os.path.dirname(os.path.abspath(out))))
        except OSError as exc:
            raise UsageError(out, "", f"cannot write the report: {exc.strerror or exc}") from None
    else:
        run_dir = source
        if not os.path.isdir(run_dir):
            try:
                run_dir = history.find_run(request.results_dir or history.default_results_dir(), source)
            except OrchestratorError as exc:
                raise UsageError(source, "", f"neither a results document nor a run directory ({exc})") from None
        try:
            doc = history.document(run_dir)
        except OrchestratorError as exc:
            raise UsageError(exc.file, exc.key, exc.message) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
            raise UsageError(run_dir, "results.json", "not a results document and no journal to rebuild it from")
        try:
            out = html_report.write_for_run(run_dir, doc, request.output)
        except OSError as exc:
            raise UsageError(request.output or run_dir, "", f"cannot write the report: {exc.strerror or exc}") \
                from None
    print(out)
    return EXIT_OK
