"""P6: a huge batch of no-op instances (20,000 and 100,000 by default): the orchestrator's own peak RSS (VmHWM of the
orchestrator process, not its children) and its CPU time per instance, plus ``validate`` of the same batch file.

The agent is ``/bin/echo`` printing one Claude Code ``result`` line (no Python start-up per instance, so the figure
is the orchestrator's cost, not the agent's). Goals (issue 14): <= 80 MB at 20,000; 100,000 complete with
<= 150 MB and <= 2 ms orchestrator CPU per instance.

    python bench/p6_huge_batch.py [--sizes 20000,100000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile

from _common import ORCH, REPO, env_with_repo, measure, table

# the shortest result line that makes a succeeded record: 100,000 instances stay under the batch file size limit
RESULT = '{"type":"result","subtype":"success","is_error":false,"result":"noop","total_cost_usd":0}'
GOAL_RSS = {20000: 80.0, 100000: 150.0}


def write_batch(path: str, n: int, concurrency: int) -> None:
    echo = shutil.which("echo") or "/bin/echo"
    with open(path, "w") as f:
        f.write(f"concurrency = {concurrency}\n")
        for i in range(n):
            f.write(f"[[instances]]\nname = \"noop-{i:06d}\"\nargv = [\"{echo}\", '{RESULT}']\n")


def uptime() -> str:
    try:
        with open("/proc/loadavg") as f:
            return "load " + " ".join(f.read().split()[:3])
    except OSError:
        return "load ?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", "--instances", dest="sizes", default="20000,100000",
                    help="comma-separated batch sizes (default 20000,100000)")
    ap.add_argument("--concurrency", type=int, default=64)
    a = ap.parse_args()
    rows = [["instances", "validate s", "validate MB", "run wall s", "peak RSS MB", "CPU ms/instance", "goal",
             "load before"]]
    env = env_with_repo({"CI": ""})
    for n in [int(x) for x in a.sizes.replace(" ", ",").split(",") if x]:
        with tempfile.TemporaryDirectory() as tmp:
            batch = os.path.join(tmp, "p6.toml")
            write_batch(batch, n, a.concurrency)
            load = uptime()
            v = measure([*ORCH, "validate", batch], env=env, cwd=REPO)
            assert v.returncode == 0, f"validate exited {v.returncode}"
            results = os.path.join(tmp, "runs")
            m = measure([*ORCH, "run", batch, "--results-dir", results, "--progress", "none"], env=env, cwd=REPO,
                        stderr=subprocess.DEVNULL)
            assert m.returncode == 0, f"run exited {m.returncode}"
            run_dir = os.path.join(results, os.listdir(results)[0])
            with open(os.path.join(run_dir, "results.json")) as f:
                doc = json.load(f)
            assert doc["totals"]["by_status"].get("succeeded") == n, doc["totals"]["by_status"]
        goal = GOAL_RSS.get(n)
        rows.append([str(n), f"{v.wall:.2f}", f"{v.peak_rss_mb:.1f}", f"{m.wall:.1f}", f"{m.peak_rss_mb:.1f}",
                     f"{1000 * m.cpu_s / n:.2f}", f"<= {goal:g} MB, <= 2 ms" if goal else "<= 2 ms", load])
    print(f"P6: huge batches of no-op instances (/bin/echo), concurrency cap {a.concurrency}")
    print(table(rows))


if __name__ == "__main__":
    main()
