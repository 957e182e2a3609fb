"""stdout and stderr lose nothing under ``PYTHONUNBUFFERED``/``python -u`` (cli.whole_writes).

CPython's text layer over a raw file ignores a short write, so a write the kernel cuts short (a signal pending while
a terminal or a slow pipe's reader holds the writer) used to drop the rest: the live view was cut after 2,048 bytes
in tmux and a copy stayed in the scrollback. Here a child process gets a signal every half millisecond while it
writes 8 MB to a pipe read slowly; every byte must arrive, through the CLI's own entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import signal, sys
from orchestrator_pex import cli

name = sys.argv[1]
sys.argv = ["orchestrator-pex", "--version"]
assert cli.main() == 0  # the real entry point: it makes both streams write whole
signal.signal(signal.SIGALRM, lambda *a: None)  # a handler: a pending SIGALRM cuts a blocked write short
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
stream = getattr(sys, name)
for _ in range(40):
    stream.write(("x" * 99 + "\n") * 2000)
stream.flush()
signal.setitimer(signal.ITIMER_REAL, 0)
"""


@pytest.mark.parametrize("name", ["stdout", "stderr"])
def test_a_cut_short_write_loses_nothing_under_pythonunbuffered(name: str) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    out = subprocess.PIPE
    proc = subprocess.Popen([sys.executable, "-c", CHILD, name], stdout=out, stderr=out, env=env, cwd=ROOT)
    watched = proc.stdout if name == "stdout" else proc.stderr
    other = proc.stderr if name == "stdout" else proc.stdout
    assert watched is not None and other is not None
    try:
        received = 0
        first = True
        while True:
            chunk = watched.read1(65536)
            if not chunk:
                break
            if first and name == "stdout":  # the --version line comes first on stdout
                first = False
                head, _, chunk = chunk.partition(b"\n")
                assert head.startswith(b"orchestrator-pex ")
            received += len(chunk)
            time.sleep(0.0002)  # a slow reader: the writer blocks on a full pipe, then a signal arrives
        rest = other.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest.decode(errors="replace")
    assert received == 40 * 2000 * 100
