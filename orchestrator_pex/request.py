"""Requests: what a command asks the library to do, read from its arguments once into frozen values.

Commands (``commands/*.py``) build a request from their argparse ``Namespace`` with ``from_args`` and hand only
the request to library code: no ``Namespace`` reaches a library module, and no library code changes what a command
was asked (``attrs.evolve`` makes a changed copy, e.g. ``resume`` and ``demo`` fixing the results directory).
"""

from __future__ import annotations

from typing import Any, Optional

import attrs

from orchestrator_pex.selection import Selection


@attrs.frozen
class RunOptions:
    """How one session of a run goes: the options ``run``, ``resume`` and ``demo`` share (``add_run_options``)."""

    results_dir: Optional[str] = None  #: where run directories go (None: the batch's, else the default)
    progress: str = "auto"  #: auto, table, lines, json or none (``--json-logs`` is json)
    json: bool = False  #: print the results document on stdout
    claude: Optional[str] = None  #: Claude Code executable
    codex: Optional[str] = None  #: Codex CLI executable
    gemini: Optional[str] = None  #: Gemini CLI executable
    concurrency: Optional[int] = None
    stagger: Optional[float] = None
    deadline: Optional[float] = None
    policy: Optional[str] = None  #: ``--policy FILE`` (None: the environment's or the system's, if any)
    report_html: bool = True  #: write report.html into the run directory
    metrics_file: Optional[str] = None  #: Prometheus textfile metrics (None: the batch's ``metrics_file``)
    lock: Optional[str] = None  #: lock file instead of the one derived from the batch path
    wait_lock: Optional[float] = None  #: seconds to wait for a held lock
    env_file: Optional[str] = None  #: ``--env-file`` (None: the batch's ``env_file``, if any)
    #: ``--only``/``--tags``/``--exclude`` (``run``, ``validate``; empty: every instance)
    selection: Selection = attrs.field(factory=Selection)

    @classmethod
    def from_args(cls, args: Any) -> RunOptions:
        """The options from parsed ``run``/``resume``/``demo`` arguments (absent ones take their defaults)."""
        def get(name: str, default: Any = None) -> Any:
            return getattr(args, name, default)

        return cls(
            results_dir=get("results_dir"),
            progress="json" if get("json_logs", False) else (get("progress") or "auto"),
            json=bool(get("json", False)),
            claude=get("claude"),
            codex=get("codex"),
            gemini=get("gemini"),
            concurrency=get("concurrency"),
            stagger=get("stagger"),
            deadline=get("deadline"),
            policy=get("policy"),
            report_html=not get("no_report", False),
            metrics_file=get("metrics_file"),
            lock=get("lock"),
            wait_lock=get("wait_lock"),
            env_file=get("env_file"),
            selection=Selection.of(get("only"), get("tags"), get("exclude")),
        )
