#!/usr/bin/env python3
"""A plain producer for P1, written without the project's code: prints the events of real Claude Code 2.1.330's
``tests/data/reference/claude-code-2.1.330/tool-use-allowed.stream.jsonl`` with its middle (two assistant messages,
one tool use, its tool result) repeated, message and tool ids renumbered so every repetition is a new message.

    python bench/reference_producer.py compact|reordered REPEATS

``compact``: the CLI's own bytes. ``reordered``: the same events re-serialized with every object's keys sorted and
a space after ``:`` and ``,`` (another key order and spacing).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "tests", "data", "reference", "claude-code-2.1.330",
                         "tool-use-allowed.stream.jsonl")


def main() -> None:
    layout, repeats = sys.argv[1], int(sys.argv[2])
    with open(REFERENCE, "rb") as f:
        lines = f.read().splitlines()
    if layout == "reordered":
        lines = [json.dumps(json.loads(line), sort_keys=True, separators=(", ", ": ")).encode() for line in lines]
    elif layout != "compact":
        raise SystemExit(f"unknown layout {layout!r} (compact or reordered)")
    head, middle, tail = lines[0], b"\n".join(lines[1:-1]) + b"\n", lines[-1]
    template = middle.replace(b"msg_1", b"msg_%(a)d").replace(b"msg_2", b"msg_%(b)d")
    template = template.replace(b"toolu_1", b"toolu_%(a)d")
    out = sys.stdout.buffer
    out.write(head + b"\n")
    for i in range(repeats):
        out.write(template % {b"a": 2 * i + 1, b"b": 2 * i + 2})
    out.write(tail + b"\n")
    out.flush()


if __name__ == "__main__":
    main()
