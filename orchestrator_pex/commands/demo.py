"""``orchestrator-pex demo``: run the built-in demo batch with the simulated agent — no Claude account needed.

The batch file is written into the results directory first, so the run is an ordinary run of an ordinary file.
"""

from __future__ import annotations

import argparse
import os

from orchestrator_pex.commands.run import add_run_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_options(p)


def main(args: argparse.Namespace) -> int:
    import attrs

    from orchestrator_pex import examples
    from orchestrator_pex.config import parse_batch
    from orchestrator_pex.plan import make_plan
    from orchestrator_pex.request import RunOptions
    from orchestrator_pex.results import default_results_dir
    from orchestrator_pex.session import launch

    options = RunOptions.from_args(args)
    results_dir = os.path.abspath(options.results_dir or default_results_dir())
    demo_dir = os.path.join(results_dir, "demo-batch")
    os.makedirs(demo_dir, exist_ok=True)
    path = os.path.join(demo_dir, "demo.toml")
    text = examples.demo_batch()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    for name in os.listdir(demo_dir):  # the flaky instance counts its attempts here
        if name.endswith(".state"):
            os.unlink(os.path.join(demo_dir, name))
    plan = make_plan(parse_batch(text.encode(), path), options.claude, codex=options.codex, gemini=options.gemini,
                     env_file=options.env_file)
    return launch(plan, attrs.evolve(options, results_dir=results_dir))
