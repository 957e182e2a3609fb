"""orchestrator-pex: run batches of headless Claude Code instances on a trio nursery.

The public surface is the command line (:mod:`orchestrator_pex.cli`); modules follow the path
config -> plan -> scheduler -> runtime -> accounting -> report.
"""
