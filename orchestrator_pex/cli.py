"""Command line: parse arguments, dispatch to one command module, turn errors into exit statuses.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``. Command modules
import only the standard library at module level, so building the parser stays cheap; a command imports trio, attrs
and cattrs when it runs. Every :class:`~orchestrator_pex.errors.OrchestratorError` becomes one line on stderr and its
documented exit status, never a traceback. Any other exception (a bug) becomes one line starting
``internal error:`` that names a saved traceback file, and exit 70 (:data:`~orchestrator_pex.errors.EXIT_SOFTWARE`).
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

from orchestrator_pex import errors
from orchestrator_pex.version import version

#: subcommand -> (module, one-line help). Hidden commands have help None.
COMMANDS = {
    "run": ("orchestrator_pex.commands.run", "run a batch file"),
    "validate": ("orchestrator_pex.commands.validate", "check a batch file without running it"),
    "init": ("orchestrator_pex.commands.init", "write a commented example batch file"),
    "demo": ("orchestrator_pex.commands.demo", "run the built-in demo batch (no Claude account needed)"),
    "merge": ("orchestrator_pex.commands.merge", "combine the results of a sharded batch into one document"),
    "schedule": ("orchestrator_pex.commands.schedule", "print a crontab line or systemd units running a batch"),
    "self": ("orchestrator_pex.commands.self_cmd", "verify this PEX against its signed release (self verify)"),
    "version": ("orchestrator_pex.commands.version_cmd", "print version and build metadata (--json)"),
    "resume": ("orchestrator_pex.commands.resume",
               "finish an interrupted run: rerun what did not finish on its own (--rerun-failed: failures too)"),
    "runs": ("orchestrator_pex.commands.runs", "list, show and prune past runs"),
    "report": ("orchestrator_pex.commands.report", "write the self-contained HTML report of a run"),
    "agent-sim": ("orchestrator_pex.agent_sim", None),
}

#: commands that run a batch: their --help lists the exit statuses
_RUNS_BATCHES = ("run", "resume", "demo")


class Parser(argparse.ArgumentParser):
    """argparse with no abbreviated options (``--dry`` is not ``--dry-run``) and one-line errors with a "did you
    mean" for unknown commands and options."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.known_options: List[str] = []  # filled by build_parser: the chosen command's options
        self.help_prog = self.prog  # filled by build_parser: whose --help to point at

    def error(self, message: str):
        self.exit(errors.EXIT_USAGE, f"{self.prog}: {errors.one_line(_with_suggestion(message, self.known_options))} "
                                     f"(see {self.help_prog} --help)\n")


def _with_suggestion(message: str, options: Sequence[str]) -> str:
    """argparse's message, with the hidden commands left out and a close match offered."""
    choice = re.match(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if choice is not None:
        what, word, listed = choice.groups()
        hidden = [name for name, (_, help_text) in COMMANDS.items() if not help_text]
        visible = [c for c in re.findall(r"'([^']*)'", listed) if c not in hidden]
        hint = errors.suggestion(word, visible)
        kind = "command" if what in ("COMMAND", "ACTION") else f"value for {what}"
        return f"unknown {kind} {word!r}{hint} (expected one of: {', '.join(visible)})"
    if message.startswith("unrecognized arguments:"):
        words = message.split(":", 1)[1].split()
        flag = next((w for w in words if w.startswith("-")), None)
        if flag is not None:
            hint = errors.suggestion(flag.split("=", 1)[0], options)
            return f"unknown option {flag!r}{hint}"
    return message


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own arguments are built (importing one command module, not all)."""
    parser = Parser(
        prog="orchestrator-pex",
        description="Run batches of headless coding agents in parallel with exact accounting and budgets.",
        epilog=errors.exit_status_help(),
    )
    parser.add_argument("--version", action="version", version=f"orchestrator-pex {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        kwargs: Dict[str, Any] = {"help": help_text} if help_text else {}
        if name == "agent-sim":
            # The demo agent takes Claude Code's own argv; it parses it itself.
            p = sub.add_parser(name, add_help=False, **kwargs)
            p.add_argument("agent_argv", nargs=argparse.REMAINDER)
        else:
            epilog = errors.exit_status_help() if name in _RUNS_BATCHES else None
            p = sub.add_parser(name, description=help_text, epilog=epilog, **kwargs)
            if name == command:
                importlib.import_module(module_name).add_arguments(p)
                options = [o for a in p._actions for o in a.option_strings]
                for action in p._actions:  # nested commands (runs list|show|...): their options too
                    if isinstance(action, argparse._SubParsersAction):
                        for child in action.choices.values():
                            options += [o for a in child._actions for o in a.option_strings]
                parser.known_options = options
                parser.help_prog = p.prog
        p.set_defaults(_module=module_name)
    return parser


def whole_writes() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` write every byte they are given.

    Under ``python -u`` or ``PYTHONUNBUFFERED`` (common in systemd units, CI and containers) each is a text layer
    straight over the raw file, and CPython's text layer ignores a short write: when the kernel writes only part of
    the text (a terminal takes 2,048 bytes at a time and returns early when a signal is pending; a pipe whose reader
    is slow, likewise), the rest is lost without an error — a live view cut in half, or a ``--json`` document
    truncated. A buffered writer in between writes the rest. Line buffering keeps every line as prompt as before;
    Python flushes both streams at exit. Streams that are not a text layer over a raw file (tests' captures) are
    left as they are."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        raw = getattr(stream, "buffer", None)
        if not isinstance(stream, io.TextIOWrapper) or not isinstance(raw, io.RawIOBase):
            continue
        try:
            fd = raw.fileno()
        except (OSError, ValueError):
            continue
        setattr(sys, name, io.TextIOWrapper(io.BufferedWriter(io.FileIO(fd, "wb", closefd=False)),
                                            encoding=stream.encoding, errors=stream.errors, line_buffering=True,
                                            write_through=True))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    whole_writes()
    if argv[:1] == ["agent-sim"]:  # fast path: the demo agent is started once per instance
        from orchestrator_pex import agent_sim

        return agent_sim.main(argv[1:])
    if argv == ["--version"]:  # answered before anything else is imported
        print(f"orchestrator-pex {version()}")
        return errors.EXIT_OK
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help(sys.stderr)
        return errors.EXIT_USAGE
    try:
        return importlib.import_module(args._module).main(args)
    except BrokenPipeError:  # e.g. `orchestrator-pex runs show X | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return errors.EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - user errors may arrive wrapped in a nursery's exception group
        found = errors.find(exc)
        if found is None:
            return _internal_error(exc)
        text = str(found)
        if found.each_line:  # every problem found before starting: one prefixed line each
            text = "\norchestrator-pex: ".join(map(errors.one_line, text.split("\n")))
        else:
            text = errors.one_line(text)
        print(f"orchestrator-pex: {text}", file=sys.stderr)
        return found.exit_status
    except KeyboardInterrupt:
        return errors.EXIT_SIGINT


def _internal_error(exc: BaseException) -> int:
    """The process's error boundary: a bug outside any run's own boundary is one line and exit 70, never a
    traceback on stderr; the traceback is saved to a private file in the temporary directory, named in the line."""
    from orchestrator_pex import internal_errors

    path = internal_errors.save_anywhere(exc)
    where = f"traceback saved to {path}" if path else "the traceback could not be saved"
    print(f"orchestrator-pex: {internal_errors.PREFIX} {internal_errors.summary(exc)} ({where})", file=sys.stderr)
    return errors.EXIT_SOFTWARE
