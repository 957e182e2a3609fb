"""Records: CPU to build and serialise one finished instance's record, and the memory a finished record keeps.

Builds the record of a no-op instance (one attempt fed the reference ``tool-use.result.json`` line) N times, as the
scheduler does: :meth:`records.InstanceRecord.of_attempts`, :func:`records.to_json`, compact strict JSON bytes.
With ``--against REF`` the same is timed, interleaved round by round in one process, for ``results.instance_record``
of git revision REF (the dict-built record before records.py: ``--against 2d6bd1f``), and the two outputs are
checked byte for byte. Memory: tracemalloc's live bytes per record kept as compact JSON bytes (what the scheduler
keeps), as an ``InstanceRecord``, and as a dict.

    python bench/records_cost.py [--records 20000] [--rounds 7] [--against REF]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from orchestrator_pex import records  # noqa: E402  (after the path)
from orchestrator_pex.runtime import Attempt  # noqa: E402

TRANSCRIPT = os.path.join(REPO, "tests", "data", "reference", "claude-code-2.1.330", "tool-use.result.json")
FACTS = {"stdout_log": "/srv/runs/r/logs/noop-000001.stdout", "stderr_log": "/srv/runs/r/logs/noop-000001.stderr",
         "agent": "claude"}


def attempt() -> Attempt:
    one = Attempt(1)
    with open(TRANSCRIPT, "rb") as f:
        for line in f.read().splitlines():
            one.acct.feed(line)
    one.started_at, one.finished_at, one.exit_code = 1.7e9, 1.7e9 + 3.25, 0
    return one


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--against", metavar="REF", help="also time results.instance_record of this git revision")
    a = ap.parse_args()
    attempts = [attempt()]

    def typed(i: int) -> bytes:
        rec = records.to_json(records.InstanceRecord.of_attempts(f"noop-{i:06d}", "succeeded", attempts, **FACTS))
        return json.dumps(rec, separators=(",", ":"), allow_nan=False).encode()

    paths = {"typed (records.py)": typed}
    if a.against:
        source = subprocess.run(["git", "show", f"{a.against}:orchestrator_pex/results.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        old = types.ModuleType("results_at_ref")
        exec(compile(source, f"results.py@{a.against}", "exec"), old.__dict__)

        def dict_built(i: int) -> bytes:
            rec = old.instance_record(f"noop-{i:06d}", "succeeded", attempts, **FACTS)
            return json.dumps(rec, separators=(",", ":"), allow_nan=False).encode()

        assert dict_built(7) == typed(7), "the two records differ"
        paths = {f"dict ({a.against})": dict_built, **paths}
    cpu = {label: [] for label in paths}
    for _ in range(a.rounds):  # interleaved: both see the same machine load
        for label, build in paths.items():
            t0 = time.process_time()
            for i in range(a.records):
                build(i)
            cpu[label].append(1e6 * (time.process_time() - t0) / a.records)
    print(f"records: build + serialise one record, CPU µs (median / min of {a.rounds} rounds of {a.records})")
    for label, values in cpu.items():
        print(f"  {label:24s} {statistics.median(values):6.1f} / {min(values):6.1f}")
    kept = {
        "compact JSON bytes": typed,
        "InstanceRecord": lambda i: records.InstanceRecord.of_attempts(f"noop-{i:06d}", "succeeded", attempts,
                                                                       **FACTS),
        "dict": lambda i: records.to_json(records.InstanceRecord.of_attempts(f"noop-{i:06d}", "succeeded", attempts,
                                                                             **FACTS)),
    }
    print(f"memory of a finished record, tracemalloc bytes each (over {a.records})")
    for label, make in kept.items():
        tracemalloc.start()
        keep = [make(i) for i in range(a.records)]
        live, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"  {label:24s} {live / len(keep):6.0f}")
        del keep


if __name__ == "__main__":
    main()
