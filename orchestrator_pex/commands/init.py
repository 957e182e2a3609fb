"""``orchestrator-pex init [PATH] [--demo | --example fanout]``: write a commented example batch file (never over
an existing one)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from orchestrator_pex.errors import UsageError

if TYPE_CHECKING:  # annotations only: command modules import the standard library only at module level
    from orchestrator_pex.request import InitRequest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default="batch.toml", help="where to write it (default: batch.toml)")
    p.add_argument("--demo", action="store_true",
                   help="a batch for the built-in demo agent (runs without a Claude account)")
    p.add_argument("--example", choices=("fanout",),
                   help="fanout: parallel fixers on git worktrees, then a review that reads their branches")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex.request import InitRequest

    return write_example(InitRequest.from_args(args))


def write_example(request: InitRequest) -> int:
    """Write the example batch ``request`` asks for; 0, or :class:`UsageError` naming the file."""
    from orchestrator_pex import examples

    if request.example:
        text = examples.EXAMPLES[request.example]()
    else:
        text = examples.demo_batch() if request.demo else examples.example_batch()
    if request.path == "-":
        sys.stdout.write(text)
        return 0
    if os.path.exists(request.path) and not request.force:
        raise UsageError(request.path, "", "already exists (use --force to overwrite)")
    try:
        with open(request.path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(request.path, "", f"cannot write: {exc.strerror}") from None
    print(f"wrote {request.path}; check it with: orchestrator-pex validate {request.path}", file=sys.stderr)
    return 0
