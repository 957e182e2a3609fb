"""The version, read from the one place it is written: ``pyproject.toml``.

In a checkout the file sits beside the package; in a PEX it is bundled as a resource at the same relative place.
Build metadata (commit, build time) is added by the release build, not here.
"""

from __future__ import annotations

import functools
import os
import re

_VERSION_RE = re.compile(r'^version\s*=\s*"([^"]+)"', re.MULTILINE)


@functools.cache
def version() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        with open(os.path.join(os.path.dirname(here), "pyproject.toml"), encoding="utf-8") as f:
            match = _VERSION_RE.search(f.read())
    except OSError:
        match = None
    return match.group(1) if match else "0+unknown"
