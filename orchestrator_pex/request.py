"""Requests: what a command asks the library to do, read from its arguments once into frozen values.

Every command (``commands/*.py``) builds its request from the argparse ``Namespace`` with ``from_args`` once, at
the top of its ``main``, and hands only the request (or values from it) on: no ``Namespace`` reaches a library
module or another function of the command (tests/test_request.py checks both), and no code changes what a command
was asked (``attrs.evolve`` makes a changed copy, e.g. ``resume`` and ``demo`` fixing the results directory).

``RunOptions`` is how one session of a run goes (``run``, ``resume``, ``demo``); ``RunRequest``,
``ResumeRequest`` and ``ValidateRequest`` add what only that command asks; ``MergeRequest``, ``RunsRequest``,
``ReportRequest``, ``ScheduleRequest``, ``SelfRequest``, ``InitRequest`` and ``VersionRequest`` are the other
commands'. ``from_args`` tolerates an absent option (it takes the field's default), so a request can be built from
a command's own parser or from a partial stand-in. Nothing here checks values: the parsers' types and the library
do, at the edges they own. The classes compare by value but generate no ``__repr__`` (nothing prints a request;
every class attrs builds costs start-up time, issue 14 P3).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import attrs

from orchestrator_pex.selection import Selection


@attrs.frozen(repr=False)
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


def _get(args: Any, name: str, default: Any = None) -> Any:
    """An argument that may be absent (a command built without the option, a test's stand-in namespace)."""
    value = getattr(args, name, default)
    return default if value is None else value


@attrs.frozen(repr=False)
class RunRequest:
    """``run BATCH``: the batch, the session's options, and what only ``run`` asks (start time, shard, dry run)."""

    batch: str
    options: RunOptions = attrs.field(factory=RunOptions)
    start_at: Optional[str] = None  #: ``--start-at WHEN`` as given (None: the batch's ``start_at``, if any)
    shard: Optional[str] = None  #: ``--shard I/N`` as given (None: from the environment, if any)
    budget_share: bool = False  #: ``--budget-share auto``: divide the batch budgets by the shard count
    dry_run: bool = False

    @classmethod
    def from_args(cls, args: Any) -> RunRequest:
        return cls(batch=args.batch, options=RunOptions.from_args(args), start_at=_get(args, "start_at"),
                   shard=_get(args, "shard"), budget_share=_get(args, "budget_share") == "auto",
                   dry_run=bool(_get(args, "dry_run", False)))


@attrs.frozen(repr=False)
class ResumeRequest:
    """``resume RUN_DIR``: the run (a directory, or a run id under ``options.results_dir``) and what to rerun."""

    run_dir: str
    options: RunOptions = attrs.field(factory=RunOptions)
    rerun_failed: bool = False
    dry_run: bool = False

    @classmethod
    def from_args(cls, args: Any) -> ResumeRequest:
        return cls(run_dir=args.run_dir, options=RunOptions.from_args(args),
                   rerun_failed=bool(_get(args, "rerun_failed", False)), dry_run=bool(_get(args, "dry_run", False)))


@attrs.frozen(repr=False)
class ValidateRequest:
    """``validate BATCH``: the batch, the options ``run`` would check it with, and whether to check this machine."""

    batch: str
    options: RunOptions = attrs.field(factory=RunOptions)
    preflight: bool = True  #: False with ``--no-preflight``

    @classmethod
    def from_args(cls, args: Any) -> ValidateRequest:
        return cls(batch=args.batch, options=RunOptions.from_args(args),
                   preflight=not _get(args, "no_preflight", False))


@attrs.frozen(repr=False)
class MergeRequest:
    """``merge RESULTS...``: the documents to combine and where the combination goes."""

    results: Tuple[str, ...]
    output: Optional[str] = None  #: ``-o FILE`` (None: stdout)
    partial: bool = False
    report_html: bool = True  #: write the HTML report beside ``output``
    exit_status: bool = False  #: exit with the merged run's status

    @classmethod
    def from_args(cls, args: Any) -> MergeRequest:
        return cls(results=tuple(_get(args, "results", ())), output=_get(args, "output"),
                   partial=bool(_get(args, "partial", False)), report_html=not _get(args, "no_report", False),
                   exit_status=bool(_get(args, "exit_status", False)))


@attrs.frozen(repr=False)
class RunsRequest:
    """``runs list|show|watch|prune``: the action and its options (absent ones keep their defaults)."""

    action: str  #: list, show, watch or prune
    results_dir: Optional[str] = None  #: None: the default results directory
    json: bool = False
    batch: Optional[str] = None  #: list: only runs of this batch
    status: Optional[str] = None  #: list: only runs with this status
    run_id: Optional[str] = None  #: show, watch
    progress: str = "auto"  #: watch
    interval: float = 1.0  #: watch
    keep: Optional[int] = None  #: prune
    older_than: Optional[float] = None  #: prune: days
    dry_run: bool = False  #: prune

    @classmethod
    def from_args(cls, args: Any) -> RunsRequest:
        return cls(action=args.runs_command, results_dir=_get(args, "results_dir"), json=bool(_get(args, "json")),
                   batch=_get(args, "batch"), status=_get(args, "status"), run_id=_get(args, "run_id"),
                   progress=_get(args, "progress", "auto"), interval=_get(args, "interval", 1.0),
                   keep=_get(args, "keep"), older_than=_get(args, "older_than"),
                   dry_run=bool(_get(args, "dry_run", False)))


@attrs.frozen(repr=False)
class ScheduleRequest:
    """``schedule cron|systemd BATCH``: the scheduler, its timing and the run it schedules (paths as given)."""

    scheduler: str  #: cron or systemd
    batch: str
    python: str  #: the interpreter that runs the PEX (``--python``; its default is schedule.DEFAULT_PYTHON)
    results_dir: str  #: ``--results-dir`` (default schedule.DEFAULT_RESULTS_DIR)
    pex_root: str  #: ``--pex-root`` (default schedule.DEFAULT_PEX_ROOT)
    at: Optional[str] = None  #: cron: ``--at``
    on_calendar: Optional[str] = None  #: systemd: ``--on-calendar``
    user: Optional[str] = None
    log: Optional[str] = None  #: cron
    unit_name: Optional[str] = None  #: systemd
    output_dir: Optional[str] = None  #: systemd
    pex: Optional[str] = None  #: None: the running PEX
    shard: Optional[str] = None
    metrics_file: Optional[str] = None
    env_file: Optional[str] = None
    run_arg: Tuple[str, ...] = ()  #: ``--run-arg``, in order

    @staticmethod
    def flag(field: str) -> str:
        """The option a field comes from, for messages (``batch`` is the positional BATCH)."""
        return "BATCH" if field == "batch" else "--" + field.replace("_", "-")

    @classmethod
    def from_args(cls, args: Any) -> ScheduleRequest:
        given = {f.name: _get(args, f.name) for f in attrs.fields(cls) if _get(args, f.name) is not None}
        given["run_arg"] = tuple(_get(args, "run_arg", ()))
        return cls(**given)


@attrs.frozen(repr=False)
class SelfRequest:
    """``self verify``: the action and where the PEX, its release bundle and the trusted signers are."""

    action: Optional[str]  #: verify (None: no action given)
    pex: Optional[str] = None  #: None: the running PEX ($PEX)
    bundle: Optional[str] = None  #: None: the PEX's directory
    trust: Optional[str] = None  #: None: $ORCHESTRATOR_PEX_TRUST, else BUNDLE/allowed_signers

    @classmethod
    def from_args(cls, args: Any) -> SelfRequest:
        return cls(action=_get(args, "self_command"), pex=_get(args, "pex"), bundle=_get(args, "bundle"),
                   trust=_get(args, "trust"))


@attrs.frozen(repr=False)
class InitRequest:
    """``init [PATH]``: which example batch to write, and where (``-``: stdout)."""

    path: str = "batch.toml"
    demo: bool = False
    example: Optional[str] = None  #: fanout
    force: bool = False  #: overwrite an existing file

    @classmethod
    def from_args(cls, args: Any) -> InitRequest:
        return cls(path=_get(args, "path", "batch.toml"), demo=bool(_get(args, "demo", False)),
                   example=_get(args, "example"), force=bool(_get(args, "force", False)))


@attrs.frozen(repr=False)
class ReportRequest:
    """``report RUN|RESULTS.json``: the source, where the report goes, and where run ids are looked up."""

    source: str
    output: Optional[str] = None  #: None: beside the source
    results_dir: Optional[str] = None  #: None: the default results directory

    @classmethod
    def from_args(cls, args: Any) -> ReportRequest:
        return cls(source=args.source, output=_get(args, "output"), results_dir=_get(args, "results_dir"))


@attrs.frozen(repr=False)
class VersionRequest:
    """``version``: one line, or the JSON document with ``--json``."""

    json: bool = False

    @classmethod
    def from_args(cls, args: Any) -> VersionRequest:
        return cls(json=bool(_get(args, "json", False)))
