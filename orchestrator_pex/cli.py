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
import os
import sys
from typing import Sequence

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
    "resume": ("orchestrator_pex.commands.resume", "finish an interrupted run: rerun only what did not succeed"),
    "runs": ("orchestrator_pex.commands.runs", "list, show and prune past runs"),
    "agent-sim": ("orchestrator_pex.agent_sim", None),
}

EXIT_STATUSES = """exit statuses:
  0    every instance succeeded
  1    at least one instance did not succeed
  2    bad batch file, bad arguments, policy violation or failed preflight
  3    a blocking budget stopped the batch
  70   internal error (a bug): results so far written; one line names the saved traceback
  75   another run of the same batch holds its lock
  130  interrupted by SIGINT; 143 by SIGTERM"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own arguments are built (importing one command module, not all)."""
    parser = argparse.ArgumentParser(
        prog="orchestrator-pex",
        description="Run batches of headless Claude Code instances in parallel with exact accounting and budgets.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"orchestrator-pex {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        kwargs = {"help": help_text} if help_text else {}
        if name == "agent-sim":
            # The demo agent takes Claude Code's own argv; it parses it itself.
            p = sub.add_parser(name, add_help=False, **kwargs)
            p.add_argument("agent_argv", nargs=argparse.REMAINDER)
        else:
            p = sub.add_parser(name, description=help_text, **kwargs)
            if name == command:
                importlib.import_module(module_name).add_arguments(p)
        p.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
        print(f"orchestrator-pex: {found}", file=sys.stderr)
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
