"""P2: 20 real Claude Code instances against the mock API -- orchestrator-pex (default settings) vs xargs -P N.

    python bench/p2_real_claude.py [--instances 20] [--delay 3] [--full] [--rounds 2]

(with a Python that has the runtime dependencies -- trio, attrs, cattrs, tomli-w -- e.g. the venv scripts/test
creates; the orchestrator is run from this checkout as ``python -m orchestrator_pex``).

Needs npm (scripts/install-claude installs the pinned CLI 2.1.330 into ~/.cache on first use). Two workloads in one
run, each against its own mock (tests/support/mock_anthropic.py, started as a script on 127.0.0.1):

  (a) fast: the mock answers at once;
  (b) slow: the mock waits --delay seconds (default 3) before each answer.

Every instance is the same tool run as the reference transcripts (two API answers: text + Bash tool_use, then
text; so workload (b) waits 2 x delay per instance):

    claude -p "run echo (task I)" --output-format stream-json --verbose --allowedTools Bash
           --permission-mode acceptEdits --model claude-sonnet-4-5

For each workload: ``python -m orchestrator_pex run BATCH`` with default settings (no --concurrency), and beside it
``xargs -P N -I{} -a LIST claude -p "run echo (task {})" ...`` (argv via xargs only, stdout appended to one file)
for N in 1, 2, 4, 8, 20. Both get the same environment: ANTHROPIC_BASE_URL (the mock), a dummy ANTHROPIC_API_KEY,
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 and a fresh temporary HOME per run, shared by its 20 instances. Every
run is checked: all 20 instances must report a successful ``result``.

To keep the whole bench under ~5 minutes, an xargs level whose *lower bound* -- ceil(instances / N) waves x
2 answers x delay -- is already >= the best xargs time measured so far in that workload is not run (it cannot be
the best); it is printed as "skipped (>= X s)". --full runs every level anyway.

With ``--rounds 2`` (or more) each workload is measured again with the order reversed -- the orchestrator after
the xargs levels instead of before them -- so a load that drifts during the bench (other jobs starting or ending on
a shared machine) does not favour either side; the median ratio over the rounds is printed too.

Prints one table per workload (wall s; for the orchestrator its measured peak concurrency -- from the records'
start/finish times -- and its own CPU and peak RSS, children excluded), the ratio orchestrator / best xargs (lower
is better), and the peak RSS (VmHWM) of one claude instance. Timings are only as quiet as the machine: the load
average before and after is printed.

Example (2 CPUs, other jobs running, load 4 -> 10; 132 s):
  (a) orchestrator 8.73 s (peak 2 running) vs xargs -P1 12.52, -P2 9.77, -P4 11.57, -P8 11.57, -P20 13.96 -> 0.89
  (b) orchestrator 17.11 s (peak 14 running) vs xargs -P8 24.71, -P20 20.02 (-P1/2/4 cannot win) -> 0.85
  one claude instance: peak RSS 220 MB, 0.55 s CPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Dict, List, Optional, Tuple

from _common import ORCH, PY, REPO, env_with_repo, measure, median, table

MOCK = os.path.join(REPO, "tests", "support", "mock_anthropic.py")
INSTALL = os.path.join(REPO, "scripts", "install-claude")
LEVELS = (1, 2, 4, 8, 20)
ANSWERS_PER_INSTANCE = 2
CLAUDE_ARGS = ["--output-format", "stream-json", "--verbose", "--allowedTools", "Bash",
               "--permission-mode", "acceptEdits", "--model", "claude-sonnet-4-5"]


class Mock:
    """The mock API as a child process (script mode), on a free loopback port."""

    def __init__(self, tmp: str, delay: float) -> None:
        port_file = tempfile.mktemp(prefix=f"mock-{delay:g}-", suffix=".port", dir=tmp)  # never a stale file
        self.proc = subprocess.Popen([PY, MOCK, "--port-file", port_file, "--delay", str(delay)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("p2: the mock API did not start")
            time.sleep(0.05)
        with open(port_file) as f:
            self.url = f"http://127.0.0.1:{int(f.read())}"
        with urllib.request.urlopen(self.url + "/v1/models", timeout=10) as answer:  # it really answers
            answer.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def progress(msg: str) -> None:
    print(f"p2: {msg}", file=sys.stderr, flush=True)


def claude_env(mock_url: str, home: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update({"ANTHROPIC_BASE_URL": mock_url, "ANTHROPIC_API_KEY": "sk-ant-bench-dummy",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1", "HOME": home})
    return env


def successes(stream_file: str) -> int:
    """Successful ``result`` events in a file of stream-json lines (several instances appended together)."""
    n = 0
    with open(stream_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            if '"type":"result"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("type") == "result" and event.get("is_error") is False:
                n += 1
    return n


def run_xargs(claude: str, n: int, parallel: int, mock_url: str, tmp: str) -> Tuple[float, int]:
    work = tempfile.mkdtemp(prefix=f"xargs-P{parallel}-", dir=tmp)
    home = os.path.join(work, "home")
    os.mkdir(home)
    listing = os.path.join(work, "tasks.txt")
    with open(listing, "w") as f:
        f.write("".join(f"{i}\n" for i in range(n)))
    out_path = os.path.join(work, "stdout.jsonl")
    argv = ["xargs", "-P", str(parallel), "-I{}", "-a", listing, claude, "-p", "run echo (task {})", *CLAUDE_ARGS]
    with open(out_path, "ab") as out, open(os.path.join(work, "stderr"), "ab") as err:
        t0 = time.perf_counter()
        subprocess.run(argv, env=claude_env(mock_url, home), cwd=work, stdin=subprocess.DEVNULL, stdout=out,
                       stderr=err, check=False)
        wall = time.perf_counter() - t0
    good = successes(out_path)
    progress(f"xargs -P {parallel}: {wall:.2f} s, {good}/{n} ok")
    return wall, good


def run_orchestrator(claude: str, n: int, mock_url: str, tmp: str):
    work = tempfile.mkdtemp(prefix="orch-", dir=tmp)
    home = os.path.join(work, "home")
    os.mkdir(home)
    batch = os.path.join(work, "p2.toml")
    with open(batch, "w") as f:
        f.write(f"claude = {json.dumps(claude)}\n[defaults]\nmodel = \"claude-sonnet-4-5\"\n"
                "permission_mode = \"acceptEdits\"\nallowed_tools = [\"Bash\"]\n")
        for i in range(n):
            f.write(f"[[instances]]\nname = \"task-{i}\"\nprompt = \"run echo (task {i})\"\n")
    results = os.path.join(work, "runs")
    env = env_with_repo(claude_env(mock_url, home))
    env.pop("ORCHESTRATOR_PEX_RESULTS_DIR", None)
    out_path = os.path.join(work, "results.out")
    with open(out_path, "wb") as out:
        # in its own folder, as each xargs level runs in its own: the instances inherit the working directory
        m = measure([*ORCH, "run", batch, "--json", "--results-dir", results], env=env, cwd=work, stdout=out)
    try:
        with open(out_path, encoding="utf-8") as f:
            doc = json.load(f)
    except ValueError:
        doc = {"instances": []}
    ok = sum(1 for r in doc["instances"] if r["status"] == "succeeded" and r["cost_source"] == "result")
    progress(f"orchestrator: {m.wall:.2f} s, {ok}/{n} ok, exit {m.returncode}")
    return m, ok, peak_overlap(doc["instances"])


def peak_overlap(records: List[dict]) -> int:
    """Largest number of instances running at once, from the records' started_at/finished_at."""
    import datetime

    def ts(s: str) -> float:
        return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    edges = []
    for r in records:
        if r.get("started_at") and r.get("finished_at"):
            edges += [(ts(r["started_at"]), 1), (ts(r["finished_at"]), -1)]
    level = peak = 0
    for _, d in sorted(edges, key=lambda e: (e[0], e[1])):
        level += d
        peak = max(peak, level)
    return peak


def one_instance_rss(claude: str, mock_url: str, tmp: str) -> Tuple[float, float, float]:
    home = tempfile.mkdtemp(prefix="rss-home-", dir=tmp)
    m = measure([claude, "-p", "run echo", *CLAUDE_ARGS], env=claude_env(mock_url, home), cwd=home)
    if m.returncode != 0:
        raise SystemExit(f"p2: a single claude run failed (exit {m.returncode})")
    return m.peak_rss_mb, m.wall, m.cpu_s


def workload(claude: str, n: int, delay: float, tmp: str, full: bool,
             rounds: int = 1) -> Tuple[List[Tuple[List[List[str]], str]], List[float]]:
    """``rounds`` rounds against one mock; the orchestrator runs first in odd rounds (1st, 3rd, ...) and after the
    xargs levels in even ones, so a machine whose load drifts during the bench does not favour one side."""
    mock = Mock(tmp, delay)
    try:
        out: List[Tuple[List[List[str]], str]] = []
        ratios: List[float] = []
        for number in range(1, rounds + 1):
            orchestrator_last = number % 2 == 0
            if not orchestrator_last:
                m, ok, peak = run_orchestrator(claude, n, mock.url, tmp)
            best: Optional[float] = None
            best_level = None
            measured: Dict[int, Tuple[float, int]] = {}
            for level in sorted(LEVELS, reverse=True):
                bound = math.ceil(n / level) * ANSWERS_PER_INSTANCE * delay
                if not full and best is not None and bound >= best:
                    measured[level] = (-bound, 0)
                    continue
                wall, good = run_xargs(claude, n, level, mock.url, tmp)
                measured[level] = (wall, good)
                if good == n and (best is None or wall < best):
                    best, best_level = wall, level
            if orchestrator_last:
                m, ok, peak = run_orchestrator(claude, n, mock.url, tmp)
            if ok == 0:
                raise SystemExit(f"p2: no instance succeeded under the orchestrator (exit {m.returncode})")
            rows = [["", "wall s", "ok", "parallel", "own CPU s", "own peak RSS MB"],
                    [f"orchestrator-pex run (default; ran {'last' if orchestrator_last else 'first'})",
                     f"{m.wall:.2f}", f"{ok}/{n}", f"peak {peak}", f"{m.cpu_s:.2f}", f"{m.peak_rss_mb:.0f}"]]
            for level in LEVELS:
                wall, good = measured[level]
                if wall < 0:
                    rows.append([f"xargs -P {level}", f"skipped (>= {-wall:.0f} s)", "-", f"cap {level}", "-", "-"])
                else:
                    rows.append([f"xargs -P {level}", f"{wall:.2f}", f"{good}/{n}", f"cap {level}", "-", "-"])
            if best is None:
                verdict = "no xargs level completed every instance"
            else:
                ratios.append(m.wall / best)
                verdict = (f"round {number}: ratio orchestrator default / best xargs (-P {best_level}, {best:.2f} s) = "
                           f"{m.wall / best:.2f} (goal <= 1.05)")
            if ok != n:
                verdict += f"  [orchestrator: only {ok}/{n} succeeded, exit {m.returncode}]"
            out.append((rows, verdict))
        return out, ratios
    finally:
        mock.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description="P2: real Claude Code, orchestrator-pex vs xargs -P N")
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--delay", type=float, default=3.0, help="seconds the mock waits per answer in workload (b)")
    ap.add_argument("--full", action="store_true", help="run every xargs level, even those that cannot win")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds per workload; the orchestrator runs first in odd rounds, last in even ones")
    a = ap.parse_args()
    try:
        import attrs  # noqa: F401  (the orchestrator runs on this interpreter)
        import cattrs  # noqa: F401  (likewise)
        import tomli_w  # noqa: F401  (likewise)
        import trio  # noqa: F401  (likewise)
    except ImportError as exc:
        sys.exit(f"p2: {exc}; run this with a Python that has the runtime dependencies (e.g. the scripts/test venv)")
    try:
        claude = subprocess.run([INSTALL], check=True, capture_output=True, text=True).stdout.strip()
    except subprocess.CalledProcessError as exc:
        sys.exit(f"p2: scripts/install-claude failed: {exc.stderr.strip()}")
    version = subprocess.run([claude, "--version"], capture_output=True, text=True).stdout.strip()
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="p2-") as tmp:
        mock = Mock(tmp, 0.0)
        try:
            rss, wall1, cpu1 = one_instance_rss(claude, mock.url, tmp)
        finally:
            mock.stop()
        out = []
        for label, delay in (("(a) mock answers at once", 0.0), (f"(b) mock waits {a.delay:g} s per answer", a.delay)):
            rounds, ratios = workload(claude, a.instances, delay, tmp, a.full, max(1, a.rounds))
            out.append((label, rounds, ratios))
    print(f"P2: {a.instances} real Claude Code instances ({version}), {os.cpu_count()} CPUs, "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}, bench took {time.perf_counter() - t_start:.0f} s")
    print(f"one claude instance (tool run, fast mock): peak RSS {rss:.0f} MB, wall {wall1:.2f} s, CPU {cpu1:.2f} s")
    for label, rounds, ratios in out:
        print(f"\n{label}")
        for rows, verdict in rounds:
            print(table(rows))
            print(verdict)
        if len(ratios) > 1:
            print(f"median ratio over {len(ratios)} rounds = {median(ratios):.2f} "
                  f"(all: {', '.join(f'{r:.2f}' for r in ratios)}; goal <= 1.05)")


if __name__ == "__main__":
    main()
