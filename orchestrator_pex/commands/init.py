"""``orchestrator-pex init [PATH] [--demo | --example fanout]``: write a commented example batch file (never over
an existing one)."""

from __future__ import annotations

import argparse
import os
import sys

from orchestrator_pex.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default="batch.toml", help="where to write it (default: batch.toml)")
    p.add_argument("--demo", action="store_true",
                   help="a batch for the built-in demo agent (runs without a Claude account)")
    p.add_argument("--example", choices=("fanout",),
                   help="fanout: parallel fixers on git worktrees, then a review that reads their branches")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")


def main(args: argparse.Namespace) -> int:
    from orchestrator_pex import examples

    if args.example:
        text = examples.EXAMPLES[args.example]()
    else:
        text = examples.demo_batch() if args.demo else examples.example_batch()
    if args.path == "-":
        sys.stdout.write(text)
        return 0
    if os.path.exists(args.path) and not args.force:
        raise UsageError(f"{args.path}: already exists (use --force to overwrite)")
    try:
        with open(args.path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"{args.path}: cannot write: {exc.strerror}") from None
    print(f"wrote {args.path}; check it with: orchestrator-pex validate {args.path}", file=sys.stderr)
    return 0
