"""``orchestrator-pex schedule cron|systemd ... BATCH``: print what runs BATCH unattended on a schedule.

``schedule cron --at "0 2 * * *" BATCH`` prints one crontab line (with ``--user USER``: the ``/etc/cron.d`` form,
which has a user field). ``schedule systemd --on-calendar "*-*-* 02:00" BATCH`` prints a service unit and a timer
unit (``--output-dir DIR`` writes them there instead and prints their paths).

Every scheduled command is::

    PYTHON PEX run --results-dir RESULTS_DIR [--shard I/N] [--metrics-file PATH] [RUN_ARG...] [--env-file PATH] BATCH

with absolute paths, ``PEX_ROOT`` set to a writable cache directory (default ``/var/cache/orchestrator-pex``;
the PEX unpacks itself there, the invoking user's home may not be writable), ``NO_COLOR=1`` and standard input
from ``/dev/null``, so nothing waits for a terminal and logs are plain lines (mailed by cron, or in the journal).
``run`` takes the batch lock by default: an overlapping run exits 75 instead of running twice.

With ``--env-file PATH`` the run gets ``--env-file PATH`` (see :mod:`orchestrator_pex.envfile`: secrets such as
``ANTHROPIC_API_KEY`` for unattended runs, a file owned by the user the run runs as, mode 0600); the systemd
service also names it in ``EnvironmentFile=``.

Checks before anything is printed (each problem one line, exit 2): the batch file must load (the same checks as
``validate``); the cron expression is checked field by field (minute 0-59, hour 0-23, day of month 1-31, month 1-12
or jan-dec, day of week 0-7 or sun-sat; ``*``, ranges ``a-b`` with a <= b, steps ``/n`` with n >= 1, lists) or is a
nickname. A warning (stderr; the line is still printed) names each executable the run would start -- the agent of a
Claude Code instance, ``argv[0]`` of another -- that is an absolute path to nothing executable, or a bare name not
found on the scheduler's ``PATH`` (cron: ``/usr/bin:/bin``; systemd: ``/usr/local/sbin:/usr/local/bin:/usr/sbin:
/usr/bin``), and an env file the run would refuse (missing, not a regular file, accessible to group or others, not
owned by the user the run runs as).

The systemd service always has ``User=`` (``--user``, default: the user running ``schedule``) and asks systemd for
the directories it writes, owned by that user: ``CacheDirectory=`` for a PEX_ROOT under ``/var/cache/`` and
``StateDirectory=`` for a results directory under ``/var/lib/`` (other locations: create them yourself, owned by
that user).

Quoting: cron hands the command to ``/bin/sh``, so every argument is shell-quoted and every ``%`` (a newline to cron)
escaped as ``\\%``. systemd splits ``ExecStart=`` itself: arguments are double-quoted when needed, ``%`` doubled
(specifiers) and ``$`` doubled (variable expansion). An ``OnCalendar=`` value is checked minimally (the characters
systemd accepts); run ``systemd-analyze calendar EXPR`` on the target for a full check.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from typing import TYPE_CHECKING, List, Optional, Tuple

from orchestrator_pex.errors import EXIT_OK, UsageError, located

if TYPE_CHECKING:  # annotations only: command modules import the standard library only at module level
    from orchestrator_pex.request import ScheduleRequest

DEFAULT_PYTHON = "/usr/bin/python3"
DEFAULT_PEX_ROOT = "/var/cache/orchestrator-pex"
DEFAULT_RESULTS_DIR = "/var/lib/orchestrator-pex/results"
CRON_PATH = "/usr/bin:/bin"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
#: (field name, lowest, highest, names allowed) for the five cron fields
_CRON_RANGES = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
                ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
                ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))

_CRON_NICKNAMES = {"@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_ITEM = r"(?:\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/[0-9]+)?"
_CRON_FIELD = re.compile(f"{_CRON_ITEM}(?:,{_CRON_ITEM})*")  # always fullmatch
_CALENDAR_SHORTHANDS = {"minutely", "hourly", "daily", "monthly", "weekly", "yearly", "annually", "quarterly",
                        "semiannually"}
_CALENDAR_CHARS = re.compile(r"[A-Za-z0-9*,./:~ +_-]+")  # always fullmatch
_UNIT_NAME_BAD = re.compile(r"[^A-Za-z0-9:_.\\-]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="scheduler", metavar="SCHEDULER")
    sub.required = True
    cron = sub.add_parser("cron", help="print a crontab line", description="Print a crontab line running BATCH.")
    cron.add_argument("--at", required=True, metavar="EXPR", help='five cron fields, e.g. "0 2 * * *", or @daily')
    cron.add_argument("--user", help="emit the /etc/cron.d form with this user field")
    cron.add_argument("--log", metavar="FILE", help="append the run's output to FILE (default: cron mails it)")
    systemd = sub.add_parser(
        "systemd", help="print a service and a timer unit", description="Print systemd units running BATCH."
    )
    systemd.add_argument("--on-calendar", required=True, metavar="EXPR", help='OnCalendar= value, e.g. "*-*-* 02:00"')
    systemd.add_argument("--user", help="User= of the service (default: the user running this command)")
    systemd.add_argument("--unit-name", help="unit name without suffix (default: orchestrator-pex-BATCHSTEM)")
    systemd.add_argument("--output-dir", metavar="DIR", help="write NAME.service and NAME.timer here")
    for p in (cron, systemd):
        p.add_argument("batch", metavar="BATCH", help="batch file (made absolute)")
        p.add_argument("--pex", help="the orchestrator-pex PEX file (default: the running PEX, as PREFIX/current/"
                       "orchestrator-pex when installed by install.sh)")
        p.add_argument("--python", default=DEFAULT_PYTHON, help=f"interpreter that runs the PEX ({DEFAULT_PYTHON})")
        p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=f"(default {DEFAULT_RESULTS_DIR})")
        p.add_argument("--pex-root", default=DEFAULT_PEX_ROOT, help=f"writable PEX cache ({DEFAULT_PEX_ROOT})")
        p.add_argument("--shard", metavar="I/N", help="run only shard I of N of the batch")
        p.add_argument("--metrics-file", metavar="PATH", help="Prometheus textfile metrics of each run (`run "
                       "--metrics-file`), e.g. in node_exporter's --collector.textfile.directory")
        p.add_argument("--env-file", metavar="PATH",
                       help="env file (KEY=VALUE, mode 0600, owned by the user the run runs as) the run reads its "
                            "secrets from: passed as run --env-file (and EnvironmentFile= for systemd)")
        p.add_argument(
            "--run-arg", action="append", default=[], metavar="ARG",
            help="extra argument for `run` (repeat; use --run-arg=--flag for flags)",
        )


def _check_control_characters(request: ScheduleRequest) -> None:
    """No argument that ends up in a crontab line or a unit file may hold a control character (a newline would start
    a new crontab line or unit directive) or a lone surrogate."""
    import attrs

    from orchestrator_pex.errors import one_line

    for key, value in attrs.asdict(request).items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and one_line(item) != item:
                flag = request.flag(key)
                raise UsageError(flag, "", "must be one line without control characters, "
                                 f"got \"{one_line(item)[:80]}\"")


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex.request import ScheduleRequest

    request = ScheduleRequest.from_args(args)
    _check_control_characters(request)
    command, environment = run_command(request)
    if request.scheduler == "cron":
        assert request.at is not None  # --at is required for cron
        line = cron_line(request.at, command, environment, user=request.user, log=request.log)
        _warn_unreachable(command[-1], CRON_PATH, "cron")  # loads the batch: ConfigError (exit 2) if it cannot
        _warn_env_file(_env_file(request), request.user or _current_user())
        sys.stdout.write(line + "\n")
        return EXIT_OK
    name = request.unit_name or default_unit_name(command[-1])
    _check_unit_name(name)
    assert request.on_calendar is not None  # --on-calendar is required for systemd
    service, timer = systemd_units(name, request.on_calendar, command, environment,
                                   user=request.user or _current_user(), env_file=_env_file(request))
    _warn_unreachable(command[-1], SYSTEMD_PATH, "systemd")  # loads the batch: ConfigError (exit 2) if it cannot
    _warn_env_file(_env_file(request), request.user or _current_user())
    if request.output_dir:
        out = os.path.abspath(request.output_dir)
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as exc:
            raise UsageError(out, "", f"cannot create: {exc.strerror or exc}") from None
        for suffix, text in ((".service", service), (".timer", timer)):
            path = os.path.join(out, name + suffix)
            try:
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError as exc:
                raise UsageError(path, "", f"cannot write: {exc.strerror or exc}") from None
            print(path)
    else:
        sys.stdout.write(f"# {name}.service\n{service}\n# {name}.timer\n{timer}")
    return EXIT_OK


def _absolute(value: str, what: str) -> str:
    if not value or "\n" in value or "\0" in value:
        raise UsageError(what, "", f"expected a path, got {value!r}")
    return os.path.abspath(value)


def default_pex(environ) -> Optional[str]:
    """The running PEX (pex exports its resolved path as ``$PEX``), named through ``PREFIX/current/orchestrator-pex``
    when install.sh's layout (``PREFIX/<version>/...``) has that link pointing at it, so an upgrade or a rollback
    needs no new schedule."""
    pex = environ.get("PEX")
    if not pex:
        return None
    current = os.path.join(os.path.dirname(os.path.dirname(pex)), "current", "orchestrator-pex")
    try:
        if os.path.realpath(current) == os.path.realpath(pex):
            return current
    except OSError:
        pass
    return pex


def run_command(request: ScheduleRequest) -> Tuple[List[str], List[Tuple[str, str]]]:
    """The argv and the environment (name, value) pairs of the scheduled run, all paths absolute."""
    pex = request.pex or default_pex(os.environ)
    if not pex:
        raise UsageError("--pex", "", "a PEX file (--pex PATH) is required when not running from the PEX file")
    if not os.path.isabs(request.python):
        raise UsageError("--python", "", "expected an absolute path (cron and systemd have a minimal PATH), "
                         f"got {request.python!r}")
    argv = [_absolute(request.python, "--python"), _absolute(pex, "--pex"), "run",
            "--results-dir", _absolute(request.results_dir, "--results-dir")]
    if request.shard:
        from orchestrator_pex.shard import parse_shard

        index, count = parse_shard(request.shard)
        argv += ["--shard", f"{index}/{count}"]
    if request.metrics_file:
        argv += ["--metrics-file", _absolute(request.metrics_file, "--metrics-file")]
    for extra in request.run_arg:
        if "\n" in extra or "\0" in extra:
            raise UsageError("--run-arg", "", f"a scheduled argument cannot contain a newline, got {extra!r}")
    argv += list(request.run_arg)
    env_file = _env_file(request)
    if env_file:
        argv += ["--env-file", env_file]
    argv.append(_absolute(request.batch, "BATCH"))
    env = [("PEX_ROOT", _absolute(request.pex_root, "--pex-root")), ("NO_COLOR", "1")]
    return argv, env


def _env_file(request: ScheduleRequest) -> Optional[str]:
    value = request.env_file
    return _absolute(value, "--env-file") if value else None


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def unreachable_executables(batch_path: str, path: str) -> List[str]:
    """One message per executable of the batch's instances that is neither absolute nor found on ``path``."""
    import shutil

    from orchestrator_pex.config import AGENT_SIM, apply_defaults, load_batch

    batch = load_batch(batch_path)
    label = os.path.basename(batch_path)
    found = []
    for i, inst in enumerate(apply_defaults(batch)):
        if inst.argv is not None:
            program, key = inst.argv[0], f"instances[{i}].argv"
        elif batch.claude != AGENT_SIM:
            program, key = batch.claude, "claude"
        else:
            continue
        if os.sep in program:  # a path: absolute, or relative to the batch's folder (the agent)
            if key == "claude" and not os.path.isabs(program):
                program = os.path.join(os.path.dirname(batch_path), program)
            if not os.path.isabs(program) or (os.path.isfile(program) and os.access(program, os.X_OK)):
                continue  # a relative argv[0] resolves against the instance's cwd when it runs
            message = located(label, key, f"{program!r} does not exist or is not executable")
        else:
            search = (inst.env or {}).get("PATH", path)
            if shutil.which(program, path=search) is not None:
                continue
            message = located(label, key, f"{program!r} is not on the scheduler's PATH ({search}); give its "
                              "absolute path")
        if message not in found:
            found.append(message)
    return found


def env_file_problem(path: Optional[str], user: str) -> Optional[str]:
    """Why the scheduled run would refuse the env file at ``path`` (run as ``user``), as far as can be seen now."""
    import pwd
    import stat

    if not path:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return f"{path}: the env file does not exist (yet); the run refuses to start without it"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        return f"{path}: the env file is not a regular file; the run will refuse it"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return f"{path}: the env file is accessible to group or others; the run will refuse it (chmod 600)"
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
    if st.st_uid != uid:
        return f"{path}: the env file is not owned by {user}, who runs it; the run will refuse it (chown {user})"
    return None


def _warn_env_file(path: Optional[str], user: str) -> None:
    problem = env_file_problem(path, user)
    if problem:
        print(f"orchestrator-pex: warning: {problem}", file=sys.stderr)


def _warn_unreachable(batch_path: str, path: str, scheduler: str) -> None:
    for message in unreachable_executables(batch_path, path):
        print(f"orchestrator-pex: warning: {message} (a {scheduler} run would fail to start it)", file=sys.stderr)


# -- cron ---------------------------------------------------------------------------------------------------------


def check_cron_expression(expr: str) -> str:
    """The expression normalised to single spaces; UsageError unless five cron fields or a nickname."""
    text = " ".join(str(expr).split())
    if "\n" in str(expr):
        raise UsageError("--at", "", f"a cron expression is one line, got {expr!r}")
    if text.startswith("@"):
        if text.lower() not in _CRON_NICKNAMES:
            raise UsageError("--at", "", f"unknown cron nickname {text!r} "
                             f"(use one of {', '.join(sorted(_CRON_NICKNAMES))})")
        return text.lower()
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        raise UsageError(
            "--at", "", f"a cron schedule has 5 fields (minute hour day-of-month month day-of-week), got {len(fields)} "
            f"in {expr!r}"
        )
    for field, (what, low, high, names) in zip(fields, _CRON_RANGES):
        if not _CRON_FIELD.fullmatch(field):
            raise UsageError("--at", "", f"{field!r} is not a cron field (numbers, *, ranges a-b, steps /n, lists a,b)")
        for item in field.split(","):
            _check_cron_item(item, what, low, high, names)
    return text


def _check_cron_item(item: str, what: str, low: int, high: int, names: Tuple[str, ...]) -> None:
    """One element of a cron list: ``*``, ``a`` or ``a-b``, optionally ``/step``; values within ``low..high``."""
    spec, _, step = item.partition("/")
    if step and int(step) < 1:
        raise UsageError("--at", "", f"{what} {item!r}: a step must be 1 or more")
    if spec == "*":
        return
    values = []
    for word in spec.split("-"):
        if word.isdigit():
            value = int(word)
        elif word.lower() in names:
            value = names.index(word.lower()) + low
        else:
            allowed = f" or {names[0]}-{names[-1]}" if names else ""
            raise UsageError("--at", "", f"{what} {item!r}: {word!r} is not a {what} ({low}-{high}{allowed})")
        if not low <= value <= high:
            raise UsageError("--at", "", f"{what} {item!r}: {value} is out of range ({low}-{high})")
        values.append(value)
    if len(values) == 2 and values[0] > values[1]:
        raise UsageError("--at", "", f"{what} {item!r}: a range must go from low to high")


def cron_quote(arg: str) -> str:
    """Quote one argument for the /bin/sh that cron runs, with cron's own ``%`` escaped."""
    return shlex.quote(arg).replace("%", "\\%")


def cron_line(at: str, argv: List[str], env: List[Tuple[str, str]], user: Optional[str] = None,
              log: Optional[str] = None) -> str:
    """One crontab line (``/etc/cron.d`` form when *user* is given) that runs *argv* with *env*."""
    schedule = check_cron_expression(at)
    parts = [schedule]
    if user is not None:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", user):
            raise UsageError("--user", "", f"not a user name: {user!r}")
        parts.append(user)
    words = ["/usr/bin/env"] + [f"{k}={v}" for k, v in env] + list(argv)
    parts.append(" ".join(cron_quote(w) for w in words))
    parts.append("</dev/null")
    if log:
        parts.append(">>" + cron_quote(_absolute(log, "--log")) + " 2>&1")
    return " ".join(parts)


# -- systemd ------------------------------------------------------------------------------------------------------


def _state_directories(argv: List[str], env: dict) -> str:
    """``CacheDirectory=`` for a PEX_ROOT under /var/cache, ``StateDirectory=`` for a results dir under /var/lib."""
    lines = ""
    results = argv[argv.index("--results-dir") + 1] if "--results-dir" in argv else ""
    for key, value, base in (("CacheDirectory", env.get("PEX_ROOT", ""), "/var/cache/"),
                             ("StateDirectory", results, "/var/lib/")):
        rel = os.path.normpath(value)[len(base):] if os.path.normpath(value).startswith(base) else ""
        if rel and re.match(r"^[A-Za-z0-9_.@/-]+$", rel) and ".." not in rel.split("/"):
            lines += f"{key}={rel}\n"
    return lines


def check_calendar(expr: str) -> str:
    """A minimal OnCalendar= check: one line of the characters systemd's calendar syntax uses."""
    text = " ".join(str(expr).split())
    if not text or "\n" in str(expr) or not _CALENDAR_CHARS.fullmatch(text):
        raise UsageError(
            "--on-calendar", "", f"not a systemd calendar expression: {expr!r} (e.g. \"*-*-* 02:00\", \"daily\", "
            "\"Mon..Fri 06:30\"; check with systemd-analyze calendar)"
        )
    if text.isalpha() and text.lower() not in _CALENDAR_SHORTHANDS:
        raise UsageError("--on-calendar", "", f"unknown shorthand {text!r} "
                         f"(use one of {', '.join(sorted(_CALENDAR_SHORTHANDS))})")
    return text


def default_unit_name(batch: str) -> str:
    stem = os.path.basename(batch).rsplit(".", 1)[0] or "batch"
    return "orchestrator-pex-" + _UNIT_NAME_BAD.sub("-", stem)


def _check_unit_name(name: str) -> None:
    if not name or _UNIT_NAME_BAD.search(name) or len(name) > 240:
        raise UsageError("--unit-name", "", f"letters, digits and :_.-\\ only, got {name!r}")


def systemd_quote(arg: str, executable: bool = False) -> str:
    """One ExecStart= word: specifiers (%) and variables ($) escaped, quoted when it has space or quotes.

    systemd expands ``$VAR`` in arguments only, so ``$`` is doubled everywhere but in the *executable* (first word).
    """
    text = arg.replace("%", "%%")
    if not executable:
        text = text.replace("$", "$$")
    if text and re.fullmatch(r"[A-Za-z0-9_@+=:,./%$-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_units(name: str, on_calendar: str, argv: List[str], env: List[Tuple[str, str]],
                  user: Optional[str] = None, env_file: Optional[str] = None) -> Tuple[str, str]:
    """The service and timer unit texts."""
    calendar = check_calendar(on_calendar)
    if any(c in argv[0] for c in "'\"\\"):
        raise UsageError("--python", "", "systemd refuses executables whose path has quotes or backslashes: "
                         f"{argv[0]!r}")
    batch = argv[-1]
    environment = "".join(
        f"Environment={systemd_quote(k + '=' + v)}\n" for k, v in env
    )
    user_line = ""
    if user:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", user):
            raise UsageError("--user", "", f"not a user name: {user!r}")
        user_line = f"User={user}\n"
    if env_file:
        user_line += f"EnvironmentFile={systemd_quote(env_file)}\n"
    user_line += _state_directories(argv, dict(env))
    description = f"orchestrator-pex batch {os.path.basename(batch)}".replace("%", "%%")
    service = (
        "[Unit]\n"
        f"Description={description}\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"{user_line}"
        f"{environment}"
        "StandardInput=null\n"
        "# SIGTERM lets the run stop its instances and write results (exit 143) before the deadline.\n"
        "KillMode=mixed\n"
        "TimeoutStopSec=120\n"
        "# Exit 1: an instance failed; 3: a budget stopped the batch; 75: another run holds the batch lock.\n"
        f"ExecStart={' '.join(systemd_quote(a, executable=i == 0) for i, a in enumerate(argv))}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=Schedule of {description}\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar={calendar}\n"
        "Persistent=true\n"
        f"Unit={name}.service\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return service, timer
