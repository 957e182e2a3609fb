"""Batch-file builders shared by the tests: TOML text for instances of the built-in agent simulator."""

from __future__ import annotations

import json
from typing import Sequence


def sim(name: str, scenario: str, extra: str = "", **env: str) -> str:
    """One ``[[instances]]`` table running the agent simulator's ``scenario`` (``AGENT_SIM_SCENARIO``).

    ``extra`` is appended as further TOML lines of the table (``"retries = 2"``); ``env`` adds variables."""
    pairs = ", ".join(f"{k} = {json.dumps(v)}" for k, v in {"AGENT_SIM_SCENARIO": scenario, **env}.items())
    return f'[[instances]]\nname = "{name}"\nprompt = "task {name}"\nenv = {{ {pairs} }}\n{extra}\n'


def argv_instance(name: str, argv: Sequence[str], extra: str = "") -> str:
    """One ``[[instances]]`` table running ``argv`` (a generic program, not an agent)."""
    return f"[[instances]]\nname = {json.dumps(name)}\nargv = {json.dumps(list(argv))}\n{extra}\n"
