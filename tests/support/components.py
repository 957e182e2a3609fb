"""What a test does when a real component it drives is genuinely absent (a tool, root, a kernel feature).

Locally it skips, saying what is missing. Under ``CI=true`` it fails instead: CI installs everything the suite needs
itself (``.ci/run``), so an absent component there is a broken CI machine, never a reason to test less.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """Skip with ``reason`` (fail under ``CI=true``)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: CI must provide it, so this fails instead of skipping)")
    pytest.skip(reason)


def require(condition: object, reason: str) -> None:
    """:func:`missing` unless ``condition`` holds."""
    if not condition:
        missing(reason)
